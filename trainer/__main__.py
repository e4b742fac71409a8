"""`python -m trainer` (the Vertex AI convention) and `nextword train`."""

import sys

from nextword import cli, cli_common
from trainer.loop import TrainingPreempted
from trainer.main import run

# The shell's code for "terminated by SIGTERM": the job did not finish and may be rerun.
EXIT_PREEMPTED = 143


def main(argv: list[str] | None = None) -> int:
    cli_common.setup_logging()
    try:
        return cli.guarded(run, sys.argv[1:] if argv is None else argv)
    except TrainingPreempted as stop:
        print(f"preempted: {stop}", file=sys.stderr)
        return EXIT_PREEMPTED


if __name__ == "__main__":
    sys.exit(main())
