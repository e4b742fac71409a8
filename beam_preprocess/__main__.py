"""`python -m beam_preprocess` (the Dataflow convention) and `nextword preprocess`."""

import sys

from nextword import cli


def main(argv: list[str] | None = None) -> int:
    return cli.run_stage("beam_preprocess.pipeline:run", argv)


if __name__ == "__main__":
    sys.exit(main())
