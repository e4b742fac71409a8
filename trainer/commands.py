"""`nextword evaluate` and `nextword export`: the best validation epoch's weights, evaluated or exported again.

    nextword evaluate --config configs/demo.yaml   # valid and test splits, merged into metrics.json
    nextword export --config configs/demo.yaml     # the bundle again: same weights, scores, fingerprint

Export again for a bundle written before a signature or bundle.json field that batch prediction needs.
"""

from __future__ import annotations

from nextword import cli


def evaluate(argv: list[str] | None = None) -> int:
    return cli.run_stage("trainer.main:run_evaluate", argv)


def export(argv: list[str] | None = None) -> int:
    return cli.run_stage("trainer.main:run_export", argv)
