"""Dynamic evaluation (Krause et al. 2018, "Dynamic evaluation of neural sequence models"): the weights adapt to
the part of a stream already scored.

A stream is read in segments of `segment` tokens, one row. Each segment is scored with the current weights,
then its loss moves them (SGD with a pull back to the trained weights, their "SGD + global prior" variant):

    theta <- theta - learning_rate * clip(grad L(segment)) + decay * (theta_0 - theta)

so every token is still predicted once, from the stream before it and weights that saw only that. The
weights and the recurrent state go back to the trained ones and zero at every stream's start. The result is
the continuous cache's cache.Stream per stream, so the cache and the n-gram can be mixed on top of it.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from baseline import ngrams
from nextword import cache
from nextword.text import contract
from trainer import lm, streams
from trainer.data import DataSpec

_LOG = logging.getLogger(__name__)
PROGRESS_SECONDS = 30.0
# A segment's gradient is clipped to this global norm: one odd segment cannot throw the weights far.
CLIP_NORM = 1.0
# The validation grid.
LEARNING_RATES = (0.1, 0.3, 1.0, 3.0)
DECAYS = (0.0, 0.01)
# Mean nats per token past which a grid point has diverged (NaN too): far beyond a uniform guess over any
# vocabulary (ln of a million words is 13.8).
DIVERGED_NATS = 50.0


@dataclass(frozen=True)
class DynamicParams:
    learning_rate: float  # 0: the trained weights throughout (static evaluation)
    decay: float  # the pull back to the trained weights per segment, 0..1
    segment: int  # tokens scored between updates


def split_sequences(spec: DataSpec, split: str) -> list[np.ndarray]:
    """The split's running text as token streams ([tokens] int64 each), as the carried state reads it: windows
    that continue each other chained, padding ending a stream."""
    windows = streams.read_windows(spec, split, limit=spec.windows(split)).tolist()
    overlap = ngrams.overlap_of(spec.record_length, spec.manifest.stride)
    sequences: list[list[int]] = []
    for fresh, ids in ngrams.chained(windows, overlap, carry=True):
        if fresh or not sequences:
            sequences.append([])
        sequences[-1] += ids[: ids.index(contract.PAD_ID)] if contract.PAD_ID in ids else ids
    return [np.asarray(s, np.int64) for s in sequences if len(s) > 1]


class DynamicEvaluator:
    """Scores streams with adapting weights; the model's weights are the trained ones again after each call."""

    def __init__(self, model: keras.Model):
        self.view = lm.of(model)
        self.variables = model.trainable_variables
        self.trained = [tf.Variable(v.value, trainable=False) for v in self.variables]
        self._started = self._reported = time.monotonic()
        self._scored = 0  # tokens, for the progress lines
        self._adapt_step = tf.function(self._segment_step)
        self._static_step = tf.function(self._forward)

    def _forward(self, ids, states):
        """ids [1, segment + 1] -> hidden [1, segment, units], log-probs [segment], the states after."""
        hidden, after = self.view.hidden(ids[:, :-1], states, training=False)  # [1, segment, units]
        return hidden, self.view.head.target_log_probs(hidden, ids[:, 1:])[0], after

    def _segment_step(self, ids, weights, states, learning_rate, decay):
        """ids [1, segment + 1], weights [segment] (0: padding) -> hidden [segment, units], log-probs
        [segment] (before the update), the states after; then the update."""
        with tf.GradientTape() as tape:
            hidden, log_probs, after = self._forward(ids, states)
            loss = -tf.reduce_sum(log_probs * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
        grads, _ = tf.clip_by_global_norm([tf.convert_to_tensor(g) for g in tape.gradient(loss, self.variables)],
                                          CLIP_NORM)  # fmt: skip
        for variable, grad, trained in zip(self.variables, grads, self.trained, strict=True):
            value = tf.convert_to_tensor(variable.value)
            variable.assign(value - learning_rate * tf.cast(grad, value.dtype) + decay * (trained - value))
        return hidden[0], log_probs, after

    def _restore(self) -> None:
        for variable, trained in zip(self.variables, self.trained, strict=True):
            variable.assign(trained)

    def stream(self, tokens: np.ndarray, params: DynamicParams) -> tuple[cache.Stream, np.ndarray]:
        """One stream scored: (cache.Stream of its targets tokens[1:], the input word at each position); a
        progress line every PROGRESS_SECONDS across calls."""
        states = [tf.zeros([1, units]) for units in self.view.state_units]  # carried by a model built without too
        rate, decay = tf.constant(params.learning_rate, tf.float32), tf.constant(params.decay, tf.float32)
        parts = []
        try:
            for start in range(0, len(tokens) - 1, params.segment):
                chunk = tokens[start : start + params.segment + 1]
                real = len(chunk) - 1
                ids = np.zeros([1, params.segment + 1], np.int32)  # one shape: one trace
                ids[0, : len(chunk)] = chunk
                weights = (np.arange(params.segment) < real).astype(np.float32)
                if params.learning_rate:
                    hidden, log_probs, after = self._adapt_step(
                        tf.constant(ids), tf.constant(weights), states, rate, decay
                    )
                else:  # the trained weights throughout: no gradient to take
                    hidden, log_probs, after = self._static_step(tf.constant(ids), states)
                    hidden = hidden[0]
                states = list(after)
                parts.append((hidden.numpy()[:real], chunk[1:], log_probs.numpy()[:real]))
                self._scored += real
                if time.monotonic() - self._reported > PROGRESS_SECONDS:
                    self._reported = time.monotonic()
                    speed = self._scored / (self._reported - self._started)
                    _LOG.info("dynamic evaluation %s: token %d of %d of this stream; %d tokens/s so far", params,
                              start + real, len(tokens) - 1, speed)  # fmt: skip
        finally:
            self._restore()
        hidden, targets, log_probs = (np.concatenate(part) for part in zip(*parts, strict=True))
        return cache.Stream(hidden, targets, log_probs.astype(np.float64)), tokens[:-1]

    def streams(self, sequences: list[np.ndarray], params: DynamicParams) -> list[tuple[cache.Stream, np.ndarray]]:
        return [self.stream(tokens, params) for tokens in sequences]

    def choose(self, sequences: list[np.ndarray], segment: int, tokens: int) -> tuple[DynamicParams, dict[str, float]]:
        """The (learning rate, decay) of the grid with the lowest perplexity over the first `tokens` tokens of
        `sequences` (validation), and every grid point's perplexity by "learning_rate/decay"."""
        prefix, left = [], tokens
        for sequence in sequences:
            if left > 1:
                prefix.append(sequence[:left])
                left -= len(prefix[-1])
        grid = {}
        for rate, decay in itertools.product(LEARNING_RATES, DECAYS):
            scored = self.streams(prefix, DynamicParams(rate, decay, segment))
            nats = -sum(float(stream.model_log_probs.sum()) for stream, _ in scored) / sum(
                len(stream.targets) for stream, _ in scored
            )
            grid[rate, decay] = math.exp(nats) if nats < DIVERGED_NATS else None  # None: diverged, never chosen
        finite = {point: value for point, value in grid.items() if value is not None}
        best = min(finite, key=finite.__getitem__) if finite else (0.0, 0.0)
        return DynamicParams(*best, segment), {f"{rate:g}/{decay:g}": value for (rate, decay), value in grid.items()}
