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
import time
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


def split_streams(model: keras.Model, inputs: Inputs, split: str) -> list[tuple[cache.Stream, np.ndarray]]:
    """The split under the evaluation protocol as streams: one per batch row with carried state (where the state
    resets, at each row's start, so does the continuous cache, and the n-gram's history starts at `<s>`), one
    per window without. Each holds the row's predicted tokens once, in order, as the cache's cache.Stream (the
    output head's input, the target, the model's log-probability of it) beside the input word at each position.
    Read on this process alone (every local replica's rows)."""
    view = lm.of(model)
    carried = view.takes_states

    @tf.function
    def forward(ids, states):
        ids_in, targets, mask = split_window(ids)
        hidden, after = view.hidden(ids_in, states, training=False)  # [rows, L, units]
        return ids_in, hidden, targets, mask, view.head.target_log_probs(hidden, targets), list(after)

    local = inputs.strategy.experimental_local_results
    dataset, _ = inputs.evaluation(split)
    rows: dict[int, list] = {}
    states: list = []
    for step, (ids, weights) in enumerate(dataset):
        ids, weights = (tf.concat(local(t), axis=0) for t in (ids, weights))
        if carried and not states:
            states = list(view.zero_states(ids.shape[0]))
        *outputs, states = forward(ids, states)
        words, hidden, targets, mask, log_probs = (output.numpy() for output in outputs)
        real = (mask * weights.numpy()[:, None]) > 0  # [rows, L]: predicted tokens of real windows
        for row in range(ids.shape[0]):
            key = row if carried else step * ids.shape[0] + row
            picked = real[row]
            rows.setdefault(key, []).append(
                (hidden[row][picked], targets[row][picked], log_probs[row][picked], words[row][picked])
            )
    streams = []
    for parts in rows.values():
        hidden, targets, log_probs, words = (np.concatenate(part) for part in zip(*parts, strict=True))
        streams.append((cache.Stream(hidden, targets, log_probs), words))
    return streams


# The hidden states of one split that split_streams holds at once (float32): past it no mixture is chosen.
CACHE_MEMORY_BYTES = 2 << 30
# The n-gram tables (nextword/ngram.py, 16 bytes an n-gram) evaluation loads: past it the n-gram is not mixed.
NGRAM_MEMORY_BYTES = 2 << 30
# The n-gram's share of the mixture tried on valid (0: the LSTM, or the LSTM with the cache, alone).
NGRAM_WEIGHTS = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)


def _figures(log_prob_sum: float, tokens: int) -> dict:
    return {"perplexity": cache.perplexity(log_prob_sum, tokens), "tokens": tokens}


def _total(log_probs: list[np.ndarray]) -> float:
    return sum(float(np.sum(x, dtype=np.float64)) for x in log_probs)


def _mixed(model: np.ndarray, ngram: np.ndarray, weight) -> float:
    """The log-probability sum of (1 - w) p_model + w p_ngram (w: one weight, or one per position)."""
    return float(cache.mix(model, ngram, weight).sum())


def _choose_by_order(model: np.ndarray, ngram: np.ndarray, orders: np.ndarray, order: int) -> tuple[list, float, dict]:
    """The n-gram's weight for each context order (index 0 unused), each the best of NGRAM_WEIGHTS on the
    positions of that order (the log-likelihood is a sum over positions, so each order's choice stands alone);
    the log-probability sum with those weights; and the single weights' grid {weight: log-probability sum}."""
    sums = np.array([np.bincount(orders, cache.mix(model, ngram, w), minlength=order + 1) for w in NGRAM_WEIGHTS])
    best = np.argmax(sums, axis=0)
    by_order = [0.0] + [NGRAM_WEIGHTS[int(best[k])] for k in range(1, order + 1)]
    singles = {w: float(total) for w, total in zip(NGRAM_WEIGHTS, sums.sum(axis=1), strict=True)}
    return by_order, float(sums.max(axis=0).sum()), singles


def _choose_caches(streams: list[cache.Stream], queried: list, ngram) -> tuple:
    """The cache for the LSTM alone with its grid, and the cache for the mixture with the n-gram on top
    (`queried`: its log-probabilities and context orders per stream; each grid point with the n-gram's best
    weights by order), or None without an n-gram: one pass over the grid for both."""
    objectives = {"lstm_cache": cache.log_likelihood}
    if ngram is not None:
        ngram_log_probs, orders = (np.concatenate(parts) for parts in zip(*queried, strict=True))
        objectives["lstm_cache_ngram"] = lambda mixed: _choose_by_order(mixed, ngram_log_probs, orders, ngram.order)[1]
    chosen = cache.choose(streams, objectives)
    params, grid = chosen["lstm_cache"]
    return params, grid, chosen["lstm_cache_ngram"][0] if ngram is not None else None


def ngram_tables(config, vocab: list[str]):
    """The baseline stage's model.arpa as lookup tables, or None (with a log line) where there is none for this
    data, or it would take more than NGRAM_MEMORY_BYTES."""
    from baseline import lookup
    from nextword.artifacts import baseline_report, data_dir

    folder = config.baseline.output_dir
    report = baseline_report.read(folder)
    if report is None or report.manifest_sha256 != data_dir.manifest_sha256(config.train.data_dir):
        _LOG.info("no n-gram mixed in: no baseline of this data in %s (run `nextword baseline`)", folder)
        return None
    if sum(report.ngrams) * 16 > NGRAM_MEMORY_BYTES:
        _LOG.info(
            "no n-gram mixed in: %d n-grams exceed %d GiB of tables", sum(report.ngrams), NGRAM_MEMORY_BYTES >> 30
        )
        return None
    return lookup.load(storage.join(folder, baseline_report.ARPA_FILE), vocab)


def _hidden_states_fit(spec, hidden_units: int) -> bool:
    """Whether a split's hidden states fit in CACHE_MEMORY_BYTES (a log line where not)."""
    largest = max(spec.targets(split) for split in ("valid", "test"))
    if largest * hidden_units * 4 <= CACHE_MEMORY_BYTES:
        return True
    _LOG.info(
        "no continuous cache, n-gram mixture or dynamic evaluation: %d tokens x %d hidden floats exceed %d GiB; "
        "document scoring runs without the cache", largest, hidden_units, CACHE_MEMORY_BYTES >> 30,
    )  # fmt: skip
    return False


def mixture_sections(streams_of: Callable[[str], list], hidden_units: int, spec, ngram) -> dict:
    """metrics.json's "cache" and "ngram" sections, on the same tokens of valid and test.

    `streams_of(split)`: the split scored as split_streams gives it. "cache": the continuous cache's size,
    flatness and weight chosen on valid by a small grid (cache.choose), and the LSTM alone and with the cache.
    "ngram" (where `ngram`, nextword.ngram.ArpaTables, is given): the n-gram model alone, and its linear
    mixture with the LSTM and with the LSTM and cache, with one weight per context order (ngram.scores: how
    much of the context the n-gram model holds; the bundle's), and with one weight for all ("_one_weight"),
    each chosen on valid from NGRAM_WEIGHTS; the cache under the n-gram ("cache_parameters", the bundle's
    where it carries both) is chosen on valid for the whole mixture.
    {} (with a log line) where a split's hidden states would take more than CACHE_MEMORY_BYTES."""
    if not _hidden_states_fit(spec, hidden_units):
        return {}
    # The cache mixed under the n-gram is chosen with it: the n-gram's best weights by order at each grid point.
    mixtures = {"lstm_ngram": "lstm", "lstm_cache_ngram": "lstm_cache_under_ngram"}  # name: what the n-gram mixes
    scored: dict[str, dict[str, list[np.ndarray]]] = {}
    params = grid = under_ngram = None
    for split in ("valid", "test"):
        streams = streams_of(split)
        queried = [] if ngram is None else [ngram.stream_log_probs(words, s.targets) for s, words in streams]
        if params is None:
            params, grid, under_ngram = _choose_caches([stream for stream, _ in streams], queried, ngram)
        scored[split] = {
            "lstm": [stream.model_log_probs for stream, _ in streams],
            "lstm_cache": [cache.log_probs(stream, params) for stream, _ in streams],
        }
        if ngram is not None:
            scored[split]["lstm_cache_under_ngram"] = [cache.log_probs(stream, under_ngram) for stream, _ in streams]
            scored[split]["ngram"] = [log_probs for log_probs, _ in queried]
            scored[split]["ngram_order"] = [orders for _, orders in queried]
    tokens = {split: sum(len(x) for x in parts["lstm"]) for split, parts in scored.items()}
    sections = {"cache": {"parameters": dataclasses.asdict(params), "chosen_on": "valid", "grid": grid}}
    for split, parts in scored.items():
        sections["cache"][split] = {
            name: _figures(_total(parts[name]), tokens[split]) for name in ("lstm", "lstm_cache")
        }
    if ngram is not None:
        joined = {split: {name: np.concatenate(arrays) for name, arrays in parts.items()}
                  for split, parts in scored.items()}  # fmt: skip
        valid = joined["valid"]
        weights, single, ngram_grid = {}, {}, {}
        for mixture, base in mixtures.items():
            by_order, _, sums = _choose_by_order(valid[base], valid["ngram"], valid["ngram_order"], ngram.order)
            weights[mixture] = by_order
            single[mixture] = max(sums, key=sums.__getitem__)
            ngram_grid[mixture] = {f"{w:g}": cache.perplexity(v, tokens["valid"]) for w, v in sums.items()}
        valid_by_order = np.bincount(valid["ngram_order"], minlength=ngram.order + 1)[1:]
        sections["ngram"] = {"order": ngram.order, "table_bytes": ngram.nbytes, "weights": weights,
                             "single_weights": single, "chosen_on": "valid", "grid": ngram_grid,
                             "cache_parameters": dataclasses.asdict(under_ngram),
                             "valid_tokens_by_order": [int(n) for n in valid_by_order]}  # fmt: skip
        for split, parts in joined.items():
            figures = {"ngram": _figures(_total([parts["ngram"]]), tokens[split])}
            for mixture, base in mixtures.items():
                orders = parts["ngram_order"]
                by_order = _mixed(parts[base], parts["ngram"], np.asarray(weights[mixture])[orders])
                figures[mixture] = _figures(by_order, tokens[split])
                one = _mixed(parts[base], parts["ngram"], single[mixture])
                figures[f"{mixture}_one_weight"] = _figures(one, tokens[split])
            sections["ngram"][split] = figures
    test = sections["cache"]["test"] | sections.get("ngram", {}).get("test", {})
    _LOG.info(
        "test perplexity: %s (cache %s; under the n-gram %s; n-gram weights %s; chosen on valid)",
        ", ".join(f"{name} {figures['perplexity']:.2f}" for name, figures in test.items()),
        sections["cache"]["parameters"], sections.get("ngram", {}).get("cache_parameters"),
        sections.get("ngram", {}).get("weights"),
    )  # fmt: skip
    return sections


# Validation tokens the dynamic evaluation's learning rate and decay are chosen on (each grid point reads them).
DYNAMIC_CHOICE_TOKENS = 20_000


def dynamic_section(model: keras.Model, spec, ngram, segment: int) -> dict:
    """metrics.json's "dynamic" (trainer/dynamic_eval.py): the learning rate and decay chosen on the start of
    valid, then valid and test read as one row with adapting weights, with the cache and n-gram mixed on top
    (their sections as mixture_sections makes them), and the seconds it took beside the static model's; {}
    where mixture_sections would refuse."""
    from trainer import dynamic_eval

    if not _hidden_states_fit(spec, lm.of(model).hidden_units):
        return {}
    evaluator = dynamic_eval.DynamicEvaluator(model)
    sequences = {split: dynamic_eval.split_sequences(spec, split) for split in ("valid", "test")}
    started = time.monotonic()
    params, grid = evaluator.choose(sequences["valid"], segment, DYNAMIC_CHOICE_TOKENS)
    chosen = time.monotonic()
    seconds: dict[str, dict] = {}
    statics: dict[str, dict] = {}

    def streams_of(split: str) -> list:
        begun = time.monotonic()
        static = evaluator.streams(sequences[split], dataclasses.replace(params, learning_rate=0.0, decay=0.0))
        middle = time.monotonic()
        adapted = evaluator.streams(sequences[split], params)
        seconds[split] = {"static": round(middle - begun, 1), "dynamic": round(time.monotonic() - middle, 1)}
        total = sum(float(stream.model_log_probs.sum()) for stream, _ in static)
        statics[split] = _figures(total, sum(len(stream.targets) for stream, _ in static))
        return adapted

    sections = mixture_sections(streams_of, lm.of(model).hidden_units, spec, ngram)
    section = {"parameters": dataclasses.asdict(params), "chosen_on": f"the first {DYNAMIC_CHOICE_TOKENS} valid tokens",
               "grid": grid, "choice_seconds": round(chosen - started, 1), "seconds": seconds,
               "static_one_row": statics} | sections  # fmt: skip
    _LOG.info("dynamic evaluation %s: test perplexity %.2f (one row, static %.2f) in %.0f s (static %.0f s)",
              section["parameters"], sections["cache"]["test"]["lstm"]["perplexity"],
              statics["test"]["perplexity"], seconds["test"]["dynamic"], seconds["test"]["static"])  # fmt: skip
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

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_perplexity"] for h in history], marker="o", label="train (mean over the epoch's steps)")
    ax.plot(epochs, [h["valid_perplexity"] for h in history], marker="o", label="valid")
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    perplexity_axis(ax)
    ax.legend()
    write_png(fig, path)


def perplexity_axis(ax) -> None:
    """A log-scale perplexity axis with numbers on it, and a grid."""
    import matplotlib.ticker

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    # A narrow range has no decade inside it: label the minor ticks too, or the axis shows no numbers.
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
    ax.grid(True, which="both", alpha=0.3)


def write_png(fig, path: str) -> None:
    """The figure as a PNG at `path`, then closed."""
    from matplotlib import pyplot as plt

    fig.tight_layout()
    # Rendered in memory, then a new file renamed over the old one (storage.atomic_write): matplotlib's own
    # writing would open the path in place, through a link or into a hard-linked copy of the run.
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    with storage.atomic_write(path) as f:
        f.write(buffer.getvalue())
