"""The training and evaluation loss, tf.nn.sparse_softmax_cross_entropy_with_logits against log-sum-exp
minus the target's logit (trainer.steps.eval_token_losses), side by side in one process.

    .venv/bin/python bench/cross_entropy_bench.py        # ~1 min; bench/results/cross_entropy_bench.json

Logits [700, 10000] float32 (batch 20 x BPTT 35 over the Penn Treebank vocabulary), forward only
(evaluation) and forward + gradient (training), beside the output layer's matmul [700, 200] x [200, 10000]
for scale. Rounds alternate the variants; the JSON has each one's median milliseconds of 7 rounds.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import tensorflow as tf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trainer.steps import eval_token_losses  # noqa: E402

ROWS, VOCAB, UNITS, ROUNDS, CALLS = 700, 10000, 200, 7, 10


def sparse_ce(logits, targets):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)


def ours(logits, targets):
    return eval_token_losses(logits[None], targets[None])[0]


def forward(loss):
    return tf.function(lambda logits, targets: tf.reduce_sum(loss(logits, targets)))


def with_gradient(loss):
    @tf.function
    def step(logits, targets):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            total = tf.reduce_sum(loss(logits, targets))
        return total + tf.reduce_sum(tape.gradient(total, logits))

    return step


def main() -> None:
    logits = tf.random.normal([ROWS, VOCAB], seed=1)
    targets = tf.random.uniform([ROWS], 0, VOCAB, tf.int32, seed=2)
    hidden, output = tf.random.normal([ROWS, UNITS]), tf.random.normal([UNITS, VOCAB])
    variants = {
        "sparse_ce_forward": (forward(sparse_ce), (logits, targets)),
        "logsumexp_forward": (forward(ours), (logits, targets)),
        "sparse_ce_with_gradient": (with_gradient(sparse_ce), (logits, targets)),
        "logsumexp_with_gradient": (with_gradient(ours), (logits, targets)),
        "output_matmul_forward": (tf.function(lambda h, w: tf.reduce_sum(tf.matmul(h, w))), (hidden, output)),
    }
    gap = abs(float(forward(sparse_ce)(logits, targets)) - float(forward(ours)(logits, targets)))
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn, args in variants.values():
        fn(*args).numpy()
    for _ in range(ROUNDS):
        for name, (fn, args) in variants.items():
            started = time.perf_counter()
            for _ in range(CALLS):
                result = fn(*args)
            result.numpy()
            times[name].append((time.perf_counter() - started) / CALLS * 1e3)
    report = {
        "shape": [ROWS, VOCAB],
        "median_ms": {name: round(statistics.median(values), 2) for name, values in times.items()},
        "summed_loss_abs_difference": gap,
        "summed_loss": float(forward(ours)(logits, targets)),
    }
    median = report["median_ms"]
    report["speedup_forward"] = round(median["sparse_ce_forward"] / median["logsumexp_forward"], 2)
    report["speedup_with_gradient"] = round(median["sparse_ce_with_gradient"] / median["logsumexp_with_gradient"], 2)
    out = REPO / "bench" / "results" / "cross_entropy_bench.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
