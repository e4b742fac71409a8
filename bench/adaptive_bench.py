"""Training step time of the tied adaptive softmax against the full softmax, side by side, at the PTB shape.

    .venv/bin/python bench/adaptive_bench.py                  # 10k vocabulary, batch 32 x 35, Adam
    .venv/bin/python bench/adaptive_bench.py --units 400

Each variant is the trainer's own loss (`trainer.steps.train_losses`) on
`trainer.model.build_model`, with Adam, in one tf.function; rounds alternate
between the variants after a warm-up, and the median and best ms/step are
reported with the ratio to the full softmax. Results: bench/results/adaptive_bench.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from nextword.config import ModelConfig  # noqa: E402
from trainer import steps  # noqa: E402
from trainer.model import build_model  # noqa: E402

# name -> (head, cutoffs); the adaptive head's own default cutoffs (trainer/heads.py) are the vocabulary's
# tenth and two fifths.
VARIANTS = {
    "full": ("full", ()),
    "adaptive (default cutoffs)": ("adaptive", ()),
    "adaptive (1000, 4000)": ("adaptive", (1000, 4000)),
    "adaptive (2000,)": ("adaptive", (2000,)),
}


def make_step(vocab: int, units: int, head: str, cutoffs: tuple, ids: tf.Tensor, targets: tf.Tensor):
    cfg = ModelConfig(num_layers=1, embedding_dim=units, units=units, dropout=0.5, head=head, adaptive_cutoffs=cutoffs)
    model = build_model(vocab, cfg, with_state=True)
    optimizer = keras.optimizers.Adam(0.005)
    states = steps.zero_states(model, ids.shape[0])

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            losses, _ = steps.train_losses(model, ids, states, targets)
            loss = tf.reduce_mean(losses)
        variables = model.trainable_variables
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    return step


def summary(ms: list[float]) -> dict:
    return {"median": round(statistics.median(ms), 1), "best": round(min(ms), 1), "rounds": [round(x, 1) for x in ms]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--units", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--window", type=int, default=35)
    p.add_argument("--steps", type=int, default=20, help="steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "adaptive_bench.json"))
    args = p.parse_args()
    rng = np.random.default_rng(0)
    # Zipf-like targets, as words are: the adaptive head sees most of them, as on real text.
    ranks = np.minimum(rng.zipf(1.2, (2, args.batch, args.window)) - 1, args.vocab - 1).astype("int32")
    ids, targets = tf.constant(ranks[0]), tf.constant(ranks[1])
    variants = {name: make_step(args.vocab, args.units, *variant, ids, targets) for name, variant in VARIANTS.items()}
    for step in variants.values():
        for _ in range(3):
            step()  # trace and warm up
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, step in variants.items():
            started = time.perf_counter()
            for _ in range(args.steps):
                step().numpy()
            times[name].append((time.perf_counter() - started) / args.steps * 1000)
    full = statistics.median(times["full"])
    result = {
        "shape": {"vocab": args.vocab, "units": args.units, "batch": args.batch, "window": args.window},
        "ms_per_step": {name: summary(t) for name, t in times.items()},
        "speedup_vs_full_median": {name: round(full / statistics.median(t), 2) for name, t in times.items()},
    }
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
