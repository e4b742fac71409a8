"""The model handler of batch prediction: lines -> record fields, through the Predictor.

The bundle is loaded with tf.saved_model.load (batch_predict/predictor.py; Beam's stock TensorFlow
handler needs tensorflow_hub and tf.keras.models.load_model, which rejects Keras 3 exports). The file
job's DoFn (batch_predict/transforms.py) hands over blocks of a range's lines, not one Beam element per
line: per-line elements cost more Beam and Python time than the model itself on a small LSTM.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future

from apache_beam.ml.inference.base import ModelHandler

from batch_predict import core
from batch_predict import predictor as predictor_lib
from batch_predict.predictor import Predictor
from nextword.artifacts import bundle as bundle_lib

_LOG = logging.getLogger(__name__)


def share_cores(calls_in_flight: int) -> None:
    """Gives each model call in flight an equal share of the cores as TensorFlow's intra-op threads.

    A small model's ops are too small to split well: on 2 cores, 2 calls at once with one thread each
    ran more lines/s than one call after another with TF's default, and than 2 calls on the default
    threads (bench/README.md, "Batch prediction"). TensorFlow takes the setting once per process, before it
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


# Model calls' worth of lines gathered per block: more lines to sort by length, fuller calls.
GATHER_BUDGETS = 16


class _Now(Executor):
    """Runs what is submitted at once, in the caller's thread."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


_NOW = _Now()


class BundleModelHandler(ModelHandler):
    """A RunInference model handler for a bundle: lines in (str, or the job's PreparedLine), record fields
    out (core.prediction_record: next words, scores, flags), each line on its own (line context).

    For users' own pipelines: `RunInference(BundleModelHandler("gs://.../bundle"))`, wrapped in
    `KeyedModelHandler` for keyed lines, with `.with_exception_handling()` for a dead-letter output of the
    batches that fail. Beam batches lines by their padded token positions (element_size_fn); the handler
    sorts each batch by length into model calls of at most `max_batch_tokens` (core.length_groups), so one
    long line neither pads a whole batch nor makes a call too big. The file job uses the same handler, one
    block of a range's lines at a time (batch_predict/transforms.py).
    """

    def __init__(
        self,
        bundle: bundle_lib.Bundle | str,
        mode: str = "both",
        top_k: int = 5,
        max_batch_tokens: int = 8192,
        per_token: bool = False,
        max_line_tokens: int = 100_000,
        **batching,
    ):
        """`batching`: more of ModelHandler's batching arguments. Beam weighs each line by its padded token
        positions (element_size_fn), so min_batch_size and max_batch_size count token positions; by default a
        batch holds about GATHER_BUDGETS model calls' worth of lines. (Beam 2.77's ModelHandler takes
        max_batch_weight, but its BatchElements does not yet.)"""
        bundle = bundle_lib.load_bundle(bundle) if isinstance(bundle, str) else bundle
        if mode not in core.MODES:
            raise ValueError(f"mode: {mode!r} is not one of {', '.join(core.MODES)}")
        batching.setdefault("max_batch_size", GATHER_BUDGETS * max_batch_tokens)
        super().__init__(element_size_fn=self.cost, **batching)
        self._bundle = bundle
        self._mode = mode
        self._want_next, self._want_score = core.MODES[mode]
        self._top_k = top_k
        self._per_token = per_token
        self._budget = max_batch_tokens
        self._max_line_tokens = max_line_tokens

    def load_model(self) -> Predictor:
        return Predictor.load(self._bundle.path, self._budget)

    def prepared(self, line: str | core.PreparedLine) -> core.PreparedLine:
        """A line as the model takes it: a str is prepared here (the file job prepares its own)."""
        if isinstance(line, core.PreparedLine):
            return line
        if not isinstance(line, str):
            raise TypeError(f"a line must be a str, not {type(line).__name__}")
        raw = line.encode("utf-8")
        return core.prepare_line(
            raw, False, self._bundle.context_tokens, self._mode, self._bundle.settings, self._max_line_tokens
        )

    def cost(self, line: str | core.PreparedLine) -> int:
        """The line's weight for Beam's batching: padded token positions (1 for a line that is not a str)."""
        return self.prepared(line).cost if isinstance(line, str | core.PreparedLine) else 1

    def run_inference(
        self, batch: Sequence[str | core.PreparedLine], model: Predictor, inference_args: dict | None = None
    ) -> list[dict]:
        return self.start_inference(batch, model, _NOW)()

    def start_inference(
        self, batch: Sequence[str | core.PreparedLine], model: Predictor, calls: Executor
    ) -> Callable[[], list[dict]]:
        """Submits the batch's model calls to `calls`; returns what waits for them and answers
        run_inference's records, in batch order."""
        lines = [self.prepared(line) for line in batch]
        records = [core.rejected_fields(line) if line.error else None for line in lines]
        todo = [i for i, line in enumerate(lines) if not line.error]
        started = []
        for group in core.length_groups([lines[i].cost for i in todo], self._budget):
            indices = [todo[j] for j in group]
            started.append((indices, calls.submit(self._predict, [lines[i] for i in indices], model)))

        def finish() -> list[dict]:
            for indices, future in started:
                for i, record in zip(indices, future.result(), strict=True):
                    records[i] = record
            return records

        return finish

    def get_metrics_namespace(self) -> str:
        return "nextword.predict"

    def _predict(self, lines: list[core.PreparedLine], model: Predictor) -> list[dict]:
        texts = [line.text for line in lines]
        nxt = model.next_words_call(texts, self._top_k) if self._want_next else None
        scores, score = model.score_call(texts, self._per_token) if self._want_score else (None, None)
        next_words = predictor_lib.next_words_of(nxt) if nxt is not None else None
        counts = nxt if nxt is not None else score
        return [
            core.prediction_record(
                line.flags,
                counts["word_count"][i],
                counts["unknown_count"][i],
                self._bundle.window_length,  # for the "shorter_than_window" flag
                self._bundle.settings.eos,
                next_words[i] if next_words is not None else None,
                scores[i] if scores is not None else None,
            )
            for i, line in enumerate(lines)
        ]
