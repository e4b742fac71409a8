"""`nextword generate "some of them" --words 20 [--temperature T] [--top-k K] [--top-p P] [--seed S]`.

Continues a text through the bundle's `generate` signature (trainer/export.py), so it works from the
SavedModel alone: greedy at temperature 0, sampled otherwise, reproducible by seed; never the unknown
symbol unless --allow-unknown; stops at `<eos>` where the model has one.
"""

from __future__ import annotations

import sys

from nextword import cli
from nextword import config as config_lib
from nextword.cli import cli_parsers


def _run(argv: list[str]) -> None:
    args = cli_parsers.stage("generate").parse_args(argv)
    if args.words < 1 or args.temperature < 0 or args.top_k < 0 or not 0 < args.top_p <= 1:
        raise ValueError("--words must be >= 1, --temperature >= 0, --top-k >= 0 and --top-p in (0, 1]")
    config = config_lib.load(args.config, args.overrides)
    from batch_predict.predictor import Predictor

    predictor = Predictor.load(config.predict.bundle_dir)
    added = predictor.generate(
        args.text, args.words, args.temperature, args.top_k, args.top_p, args.seed, args.allow_unknown
    )
    if not added:
        raise ValueError(f"{args.text!r}: no word left after normalization to continue from")
    print(f"{args.text} {' '.join(added)}")


def main(argv: list[str] | None = None) -> int:
    return cli.run_stage(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
