"""`python -m trainer` (the Vertex AI convention) and `nextword train`."""

import sys

from nextword import cli, console

# The shell's code for "terminated by SIGTERM": the job did not finish and may be rerun.
EXIT_PREEMPTED = 143


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
        return EXIT_PREEMPTED


if __name__ == "__main__":
    sys.exit(main())
