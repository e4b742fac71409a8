"""`python -m trainer` (the Vertex AI convention) and `nextword train`."""

import sys

from nextword import cli
from nextword.cli import console


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    console.start(argv)
    # After console.start: TensorFlow reads its log settings when it is first imported.
    from trainer.main import run

    return cli.guarded(run, argv)  # SIGTERM or Ctrl-C: one line naming the checkpoint, exit 143 or 130


if __name__ == "__main__":
    sys.exit(main())
