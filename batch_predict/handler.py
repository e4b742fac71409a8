"""The model handler of batch prediction: loads the bundle and calls its string signatures.

The bundle is loaded with tf.saved_model.load (Beam's stock TensorFlow handler
needs tensorflow_hub and tf.keras.models.load_model, which rejects Keras 3
exports). The job's DoFn (batch_predict/transforms.py) hands over blocks of a
range's lines, not one Beam element per line: per-line elements cost more Beam
and Python time than the model itself on a small LSTM.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future

import numpy as np

from batch_predict import core
from nextword.artifacts import bundle as bundle_lib
from nextword.text import contract

_LOG = logging.getLogger(__name__)


def share_cores(calls_in_flight: int) -> None:
    """Gives each model call in flight an equal share of the cores as TensorFlow's intra-op threads.

    A small model's ops are too small to split well: on 2 cores, 2 calls at once with one thread each
    ran 1.6x the lines/s of one call after another with TF's default (2 x 200 LSTM, mode next), where
    2 calls on the default threads ran 1.26x. TensorFlow takes the setting once per process, before it
    starts; where it has started already, its own setting stays.
    """
    import tensorflow as tf

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // calls_in_flight)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already runs in this process (e.g. a job run inside a test)
        _LOG.info("TensorFlow already started in this process: its intra-op threads stay as they are")
        return
    _LOG.info("%d model calls in flight, %d intra-op threads each", calls_in_flight, threads)


class LoadedBundle:
    """The bundle's signatures called with Python lists, answering NumPy (picklable across processes)."""

    def __init__(self, path: str):
        import tensorflow as tf

        bundle_lib.load_bundle(path)  # checked again where it is loaded: workers may see another file
        self._tf = tf
        self._saved_model = tf.saved_model.load(path)
        self._next = self._saved_model.signatures[contract.SIGNATURE_NEXT_WORDS]
        self._signatures = self._saved_model.signatures  # the stream ones: batch prediction checks them

    def next_words(self, texts: Sequence[str], k: int) -> dict[str, np.ndarray]:
        out = self._next(text=self._tf.constant(list(texts), dtype=self._tf.string), k=self._tf.constant(k))
        return {name: value.numpy() for name, value in out.items()}

    def score(self, texts: Sequence[str], per_token: bool) -> dict[str, np.ndarray]:
        """Per line: log_prob, known_log_prob, tokens, unknown_tokens, word_count, unknown_count; with
        `per_token`, also flat over the lines' scored tokens, in order: token_log_prob, token_text,
        token_unknown (score_tokens, ~10% slower than score: it tokenizes the text again for the strings)."""
        signature = bundle_lib.SIGNATURE_SCORE_TOKENS if per_token else contract.SIGNATURE_SCORE
        out = self._signatures[signature](text=self._tf.constant(list(texts), dtype=self._tf.string))
        return {name: value.numpy() for name, value in out.items()}

    def score_stream(self, texts: Sequence[str], state: np.ndarray, last_id: int) -> dict[str, np.ndarray]:
        """score's outputs for lines that continue a document, from the state after the text before them;
        also the state and last id after them (for the next call)."""
        tf = self._tf
        out = self._signatures[bundle_lib.SIGNATURE_SCORE_STREAM](
            text=tf.constant(list(texts), dtype=tf.string), state=tf.constant(state), last_id=tf.constant(last_id)
        )
        return {name: value.numpy() for name, value in out.items()}

    def advance_stream(self, texts: Sequence[str], state: np.ndarray, last_id: int) -> tuple[np.ndarray, int]:
        """The state and last id after `texts`, scoring nothing (the warm-up)."""
        tf = self._tf
        out = self._signatures[bundle_lib.SIGNATURE_ADVANCE_STREAM](
            text=tf.constant(list(texts), dtype=tf.string), state=tf.constant(state), last_id=tf.constant(last_id)
        )
        return out["state"].numpy(), int(out["last_id"].numpy())

    def generate(
        self, text: str, words: int, temperature: float, top_k: int, seed: int, allow_unknown: bool
    ) -> list[str]:
        tf = self._tf
        out = self._saved_model.signatures[contract.SIGNATURE_GENERATE](
            text=tf.constant(text), words=tf.constant(words), temperature=tf.constant(temperature, tf.float32),
            top_k=tf.constant(top_k), seed=tf.constant(seed), allow_unknown=tf.constant(allow_unknown),
        )  # fmt: skip
        return [w.decode("utf-8") for w in out["words"].numpy()]


# Model calls' worth of lines gathered per block: more lines to sort by length, fuller calls.
GATHER_BUDGETS = 16


class _Now(Executor):
    """Runs what is submitted at once, in the caller's thread."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


_NOW = _Now()


def _as_lists(outputs: dict[str, np.ndarray]) -> dict[str, list]:
    return {name: value.tolist() for name, value in outputs.items()}


def line_scores(score: dict[str, list], per_token: bool) -> list[core.LineScore]:
    """score's (or score_stream's) outputs, as plain lists -> one LineScore per line."""
    offsets = np.cumsum([0, *score["tokens"]]).tolist()
    lines = []
    for i, (lo, hi) in enumerate(itertools.pairwise(offsets)):
        tokens = None
        if per_token:
            texts, unknown, values = (score[name][lo:hi] for name in ("token_text", "token_unknown", "token_log_prob"))
            tokens = [(t.decode("utf-8"), u, v) for t, u, v in zip(texts, unknown, values, strict=True)]
        lines.append(core.LineScore(
            score["log_prob"][i], score["tokens"][i], score["unknown_tokens"][i], score["known_log_prob"][i], tokens
        ))  # fmt: skip
    return lines


class BundleModelHandler:
    """PreparedLines -> record fields (see core.prediction_record).

    Each block is sorted by length and called in groups of at most
    max_batch_tokens padded positions (core.length_groups), so one long line
    neither pads a whole block nor makes a call too big.
    """

    def __init__(
        self, bundle: bundle_lib.Bundle, mode: str, top_k: int, max_batch_tokens: int, per_token: bool = False
    ):
        self._path = bundle.path
        self._window = bundle.window_length  # for the "shorter_than_window" flag
        self._eos = bundle.settings.eos
        self._want_next, self._want_score = core.MODES[mode]
        self._top_k = top_k
        self._per_token = per_token
        self._budget = max_batch_tokens

    def load_model(self) -> LoadedBundle:
        return LoadedBundle(self._path)

    def run_inference(self, batch: Sequence[core.PreparedLine], model: LoadedBundle) -> list[dict]:
        return self.start_inference(batch, model, _NOW)()

    def start_inference(
        self, batch: Sequence[core.PreparedLine], model: LoadedBundle, calls: Executor
    ) -> Callable[[], list[dict]]:
        """Submits the batch's model calls to `calls`; returns what waits for them and answers
        run_inference's records, in batch order."""
        records = [core.rejected_fields(line) if line.error else None for line in batch]
        todo = [i for i, line in enumerate(batch) if not line.error]
        started = []
        for group in core.length_groups([batch[i].cost for i in todo], self._budget):
            indices = [todo[j] for j in group]
            started.append((indices, calls.submit(self._predict, [batch[i] for i in indices], model)))

        def finish() -> list[dict]:
            for indices, future in started:
                for i, record in zip(indices, future.result(), strict=True):
                    records[i] = record
            return records

        return finish

    def _predict(self, lines: list[core.PreparedLine], model: LoadedBundle) -> list[dict]:
        texts = [line.text for line in lines]
        # Plain Python lists once per call: per-element NumPy scalars are slow.
        nxt = model.next_words(texts, self._top_k) if self._want_next else None
        if nxt is not None:
            nxt = _as_lists({**nxt, "probs": core.round_significant(nxt["probs"])})
        score = _as_lists(model.score(texts, self._per_token)) if self._want_score else None
        scores = line_scores(score, self._per_token) if score is not None else None
        counts = nxt if nxt is not None else score
        records = []
        for i, line in enumerate(lines):
            next_words = None
            if nxt is not None:
                next_words = [(w.decode("utf-8"), p) for w, p in zip(nxt["words"][i], nxt["probs"][i], strict=True)]
            records.append(
                core.prediction_record(
                    line.flags,
                    counts["word_count"][i],
                    counts["unknown_count"][i],
                    self._window,
                    self._eos,
                    next_words,
                    scores[i] if scores is not None else None,
                )  # fmt: skip
            )
        return records
