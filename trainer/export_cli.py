"""`nextword export`: the best validation epoch's weights exported again into train.model_dir/bundle.

    nextword export --config configs/demo.yaml

For a bundle written before a signature or bundle.json field that batch prediction needs: the same
weights, the same scores and model fingerprint, the new signatures.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from nextword import cli, console

    argv = sys.argv[1:] if argv is None else argv
    console.start(argv)  # before TensorFlow is imported
    from trainer import main as trainer_main

    return cli.guarded(trainer_main.run_export, argv)


if __name__ == "__main__":
    sys.exit(main())
