"""Validation perplexity and learning rate by epoch, for several runs side by side (one PNG).

    .venv/bin/python bench/compare_runs.py --out bench/results/ptb_cooldown_curves.png \
        "constant rate=runs/ptb/model-constant-lr" "budget cooldown 0.5=runs/ptb/model"

Each run is LABEL=MODEL_DIR; its history.json (one record per epoch, written by training) is read. By epoch,
not seconds: runs from different sessions ran on machines of different speeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trainer.evaluate import perplexity_axis, write_png  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="LABEL=MODEL_DIR")
    p.add_argument("--out", required=True, help="the PNG to write")
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=[3, 1])
    for run in args.runs:
        label, _, model_dir = run.partition("=")
        history = json.loads((Path(model_dir) / "history.json").read_text())
        epochs = [h["epoch"] for h in history]
        top.plot(epochs, [h["valid_perplexity"] for h in history], marker="o", label=label)
        bottom.plot(epochs, [h["learning_rate"] for h in history], marker=".", label=label)
    top.set_ylabel("valid perplexity")
    perplexity_axis(top)
    top.legend()
    bottom.set_ylabel("learning rate")
    bottom.set_xlabel("epoch")
    bottom.grid(True, alpha=0.3)
    write_png(fig, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
