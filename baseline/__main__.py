"""`python -m baseline` and `nextword baseline`: the Kneser-Ney n-gram baseline of train.data_dir."""

import sys

from nextword import cli
from nextword.cli import console


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    console.start(argv)
    # After console.start: Beam's import-time logging obeys the console's settings.
    from baseline.pipeline import run

    return cli.guarded(run, argv)


if __name__ == "__main__":
    sys.exit(main())
