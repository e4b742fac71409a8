"""`python -m baseline` and `nextword baseline`: the Kneser-Ney n-gram baseline of train.data_dir."""

import sys

from baseline.pipeline import run
from nextword import cli, cli_common


def main(argv: list[str] | None = None) -> int:
    cli_common.setup_logging()
    return cli.guarded(run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
