"""Evaluation: perplexity over every predicted token of a split, top-1/top-5 accuracy, metrics.json, curves.

nextword evaluate --config configs/demo.yaml   # the latest checkpoint of train.model_dir on valid and test
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import math
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from nextword import cache, storage
from nextword.artifacts import versioned
from nextword.artifacts.model_dir import METRICS_FILE
from trainer import lm
from trainer.inputs import Inputs
from trainer.steps import EVAL_FIGURES, replica_eval_step, split_window

_LOG = logging.getLogger(__name__)


def summarize(sums: np.ndarray) -> dict:
    """EVAL_FIGURES sums -> loss (nats/token), perplexity, accuracies and the token count."""
    figures = dict(zip(EVAL_FIGURES, (float(v) for v in sums), strict=True))
    tokens = figures["tokens"]
    loss = figures["loss_sum"] / tokens
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "top1_accuracy": figures["top1"] / tokens,
        "top5_accuracy": figures["top5"] / tokens,
        "tokens": int(round(tokens)),
    }


class Evaluator:
    """Runs the model over a whole split under the strategy, in full (padded) global batches."""

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy, inputs: Inputs):
        self.model = model
        self.strategy = strategy
        self.inputs = inputs
        self._step = tf.function(self._distributed_step)

    def _distributed_step(self, iterator, states, stop_vote):
        ids, weights = next(iterator)
        step = functools.partial(replica_eval_step, self.model)
        sums, states = self.strategy.run(step, args=(ids, weights, states, stop_vote))
        return self.strategy.experimental_local_results(sums)[0], states

    def __call__(self, split: str, stop_requested: Callable[[], bool] = lambda: False) -> dict | None:
        """The split's metrics; None if a worker asked to stop (`stop_requested`, polled at every step)."""
        dataset, steps = self.inputs.evaluation(split)
        iterator = iter(dataset)
        states = self.inputs.initial_states(self.model)
        total = np.zeros(len(EVAL_FIGURES))
        for _ in range(steps):
            sums, states = self._step(iterator, states, tf.constant([float(stop_requested())], tf.float64))
            sums = sums.numpy()
            if sums[len(EVAL_FIGURES)]:  # all-reduced: every worker stops after the same step
                return None
            total += sums[: len(EVAL_FIGURES)]
        metrics = summarize(total)
        spec = self.inputs.spec
        expected = spec.targets(split)
        if metrics["tokens"] != expected:
            raise ValueError(
                f"{spec.data_dir}: evaluated {metrics['tokens']} {split} tokens where the manifest counts "
                f"{expected}; the shards changed after preprocessing: rerun it"
            )
        return metrics


def cache_streams(model: keras.Model, inputs: Inputs, split: str) -> list[cache.Stream]:
    """The split under the evaluation protocol as the continuous cache's streams (nextword/cache.py): one per
    batch row with carried state (where the state resets, at each row's start, so does the cache), one per
    window without. Each holds the row's predicted tokens once, in order: the output head's input, the target,
    and the model's log-probability of it. Read on this process alone (every local replica's rows)."""
    view = lm.of(model)
    carried = view.takes_states

    @tf.function
    def forward(ids, states):
        ids_in, targets, mask = split_window(ids)
        hidden, after = view.hidden(ids_in, states, training=False)  # [rows, L, units]
        return hidden, targets, mask, view.head.target_log_probs(hidden, targets), list(after)

    local = inputs.strategy.experimental_local_results
    dataset, _ = inputs.evaluation(split)
    rows: dict[int, list] = {}
    states: list = []
    for step, (ids, weights) in enumerate(dataset):
        ids, weights = (tf.concat(local(t), axis=0) for t in (ids, weights))
        if carried and not states:
            states = list(view.zero_states(ids.shape[0]))
        *outputs, states = forward(ids, states)
        hidden, targets, mask, log_probs = (output.numpy() for output in outputs)
        real = (mask * weights.numpy()[:, None]) > 0  # [rows, L]: predicted tokens of real windows
        for row in range(ids.shape[0]):
            key = row if carried else step * ids.shape[0] + row
            rows.setdefault(key, []).append(
                (hidden[row][real[row]], targets[row][real[row]], log_probs[row][real[row]])
            )
    return [cache.Stream(*(np.concatenate(part) for part in zip(*parts, strict=True))) for parts in rows.values()]


# The hidden states of one split that cache_streams holds at once (float32): past it the cache is not chosen.
CACHE_MEMORY_BYTES = 2 << 30


def cache_section(model: keras.Model, inputs: Inputs) -> dict | None:
    """metrics.json's "cache": the continuous cache's size, flatness and weight chosen on valid by a small grid
    (cache.choose), and valid and test perplexity of the LSTM alone and with the cache, on the same tokens.

    None (with a log line) where a split's hidden states would take more than CACHE_MEMORY_BYTES."""
    width = lm.of(model).hidden_units
    largest = max(inputs.spec.targets(split) for split in ("valid", "test"))
    if largest * width * 4 > CACHE_MEMORY_BYTES:
        _LOG.info(
            "continuous cache not chosen: %d tokens x %d hidden floats exceed %d GiB; document scoring runs "
            "without it", largest, width, CACHE_MEMORY_BYTES >> 30,
        )  # fmt: skip
        return None
    params, grid = cache.choose(cache_streams(model, inputs, "valid"))
    section = {"parameters": dataclasses.asdict(params), "chosen_on": "valid", "grid": grid}
    for split in ("valid", "test"):
        streams = cache_streams(model, inputs, split)
        tokens = sum(len(stream.targets) for stream in streams)
        alone = sum(float(np.sum(stream.model_log_probs, dtype=np.float64)) for stream in streams)
        mixed = sum(float(cache.log_probs(stream, params).sum()) for stream in streams)
        section[split] = {
            "lstm": {"perplexity": cache.perplexity(alone, tokens), "tokens": tokens},
            "lstm_cache": {"perplexity": cache.perplexity(mixed, tokens), "tokens": tokens},
        }
    _LOG.info(
        "continuous cache %s (chosen on valid): test perplexity %.2f alone, %.2f with the cache",
        section["parameters"],
        section["test"]["lstm"]["perplexity"],
        section["test"]["lstm_cache"]["perplexity"],
    )
    return section


def read_metrics(model_dir: str) -> dict:
    """metrics.json of an earlier run ({} when there is none, or a damaged one, which the caller rewrites)."""
    path = storage.join(model_dir, METRICS_FILE)
    if not storage.exists(path):
        return {}
    try:
        return versioned.read_json(path, "rewritten from the checkpoint")
    except ValueError as err:
        _LOG.warning("%s", err)
        return {}


def write_metrics(model_dir: str, metrics: dict) -> str:
    path = storage.join(model_dir, METRICS_FILE)
    storage.write_text(path, json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path


def plot_curves(history: list[dict], path: str) -> None:
    """PNG of training and validation perplexity per epoch (log scale)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_perplexity"] for h in history], marker="o", label="train (mean over the epoch's steps)")
    ax.plot(epochs, [h["valid_perplexity"] for h in history], marker="o", label="valid")
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    # A narrow range has no decade inside it: label the minor ticks too, or the axis shows no numbers.
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    # Rendered in memory, then a new file renamed over the old one (storage.atomic_write): matplotlib's own
    # writing would open the path in place, through a link or into a hard-linked copy of the run.
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    with storage.atomic_write(path) as f:
        f.write(buffer.getvalue())
