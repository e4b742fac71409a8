"""`python -m trainer` (the Vertex AI convention) and `nextword train`."""

import sys

from nextword import cli
from nextword.cli import console

# The shell's codes for "terminated by a signal" (128 + its number): 143 for SIGTERM, 130 for Ctrl-C.
# The job did not finish and may be rerun.
SIGNAL_EXIT_BASE = 128


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    console.start(argv)
    # After console.start: TensorFlow reads its log settings when it is first imported.
    from trainer.loop import TrainingPreempted
    from trainer.main import run

    try:
        return cli.guarded(run, argv)
    except TrainingPreempted as stop:
        print(f"preempted: {stop}", file=sys.stderr)
        return SIGNAL_EXIT_BASE + stop.signum


if __name__ == "__main__":
    sys.exit(main())
