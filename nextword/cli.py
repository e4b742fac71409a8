"""The `nextword` console script: one subcommand per stage.

    nextword preprocess --config configs/local.yaml
    nextword train --config configs/local.yaml
    nextword predict "some of them looks like"
"""

from __future__ import annotations

import importlib
import sys

from nextword import cli_common

# subcommand -> module whose `main(argv)` runs it
SUBCOMMANDS = {
    "preprocess": "beam_preprocess.__main__",
    "train": "trainer.__main__",
    "evaluate": "trainer.evaluate",
    "predict": "batch_predict.__main__",
    "cloud": "nextword.cloud_cli",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in SUBCOMMANDS:
        names = ", ".join(SUBCOMMANDS)
        print(f"usage: nextword {{{names}}} [options]  (nextword <subcommand> --help for options)", file=sys.stderr)
        return 2
    cli_common.setup_logging()
    module = importlib.import_module(SUBCOMMANDS[argv[0]])
    return module.main(argv[1:])


def guarded(run, argv: list[str]) -> int:
    """Runs a stage; expected failures print one line naming what to fix, exit code 1."""
    try:
        run(argv)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {cli_common.one_line(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
