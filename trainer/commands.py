"""`nextword evaluate` and `nextword export`: the best validation epoch's weights, evaluated or exported again.

    nextword evaluate --config configs/demo.yaml   # valid and test splits, merged into metrics.json
    nextword export --config configs/demo.yaml     # the bundle again: same weights, scores, fingerprint

Export again for a bundle written before a signature or bundle.json field that batch prediction needs.
"""

from __future__ import annotations

import sys

from nextword import cli
from nextword.cli import console


def _guarded(command: str, argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    console.start(argv)  # before TensorFlow is imported
    from trainer import main as trainer_main

    return cli.guarded(getattr(trainer_main, f"run_{command}"), argv)


def evaluate(argv: list[str] | None = None) -> int:
    return _guarded("evaluate", argv)


def export(argv: list[str] | None = None) -> int:
    return _guarded("export", argv)
