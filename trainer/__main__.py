"""`python -m trainer` (the Vertex AI convention) and `nextword train`."""

import sys

from nextword import cli


def main(argv: list[str] | None = None) -> int:
    # SIGTERM or Ctrl-C: one line naming the checkpoint, exit 143 or 130 (cli.guarded).
    return cli.run_stage("trainer.main:run", argv)


if __name__ == "__main__":
    sys.exit(main())
