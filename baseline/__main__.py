"""`python -m baseline` and `nextword baseline`: the Kneser-Ney n-gram baseline of train.data_dir."""

import sys

from nextword import cli


def main(argv: list[str] | None = None) -> int:
    return cli.run_stage("baseline.pipeline:run", argv)


if __name__ == "__main__":
    sys.exit(main())
