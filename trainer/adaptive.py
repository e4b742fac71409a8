"""Adaptive input and softmax (Baevski & Auli 2019; Grave et al. 2017), tied, for large vocabularies.

The vocabulary (ids sorted by frequency, as preprocessing writes it) is cut into
a head of the `cutoffs[0]` most frequent words and tail clusters
[cutoffs[i], cutoffs[i + 1]). Head words have full-size vectors; cluster i's
words have vectors `factor**(i + 1)` times smaller, projected to full size.
One set of weights serves as both the input embedding and the output layer
(tied, as Press & Wolf 2017): a word's vector is the same in both directions.

The output is a two-level softmax: P(w) = P_head(w) for a head word, and
P_head(cluster i) * P_i(w) for a word of cluster i. Its cost per token is
(head + clusters) * dim + sum_i (dim + size_i) * dim_i multiply-adds instead of
vocab * dim: 0.56M instead of 2.56M for a 10k vocabulary, dim 256 and cutoffs
(1000, 4000). It returns log-probabilities for the whole vocabulary, which
every consumer treats as logits: log_softmax of log-probabilities is the
identity, so the loss, top-k, sampling and the bundle's scores stay exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from trainer import lm
from trainer.matmul import FLOAT32, dot_rows


def clusters(vocab_size: int, cutoffs: Sequence[int]) -> list[tuple[int, int]]:
    """[(first id, end id)] of the head and each tail cluster; cutoffs at or past the vocabulary are dropped."""
    bounds = [0, *(c for c in cutoffs if 0 < c < vocab_size), vocab_size]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


@keras.saving.register_keras_serializable(package="nextword")
class AdaptiveEmbedding(keras.layers.Layer):
    """ids [batch, time] int32 -> vectors [batch, time, dim]; also holds the tied output's word vectors."""

    def __init__(self, vocab_size: int, dim: int, cutoffs: Sequence[int], factor: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.dim = dim
        self.ranges = clusters(vocab_size, cutoffs)
        self.tail_dims = [max(1, dim // factor ** (i + 1)) for i in range(len(self.ranges) - 1)]

    def build(self, input_shape):
        scale = keras.initializers.RandomNormal(stddev=self.dim**-0.5)  # as a tied full-size embedding
        head_end = self.ranges[0][1]
        self.head = self.add_weight(name="head", shape=(head_end, self.dim), initializer=scale)
        self.tails, self.projections = [], []
        for i, ((lo, hi), tail_dim) in enumerate(zip(self.ranges[1:], self.tail_dims, strict=True)):
            self.tails.append(self.add_weight(name=f"tail_{i}", shape=(hi - lo, tail_dim), initializer=scale))
            # stddev 1/sqrt(tail_dim): a projected tail vector has the head vectors' scale.
            project = keras.initializers.RandomNormal(stddev=tail_dim**-0.5)
            self.projections.append(
                self.add_weight(name=f"projection_{i}", shape=(tail_dim, self.dim), initializer=project)
            )

    def call(self, ids):
        head_end = self.ranges[0][1]
        in_head = keras.ops.expand_dims(keras.ops.cast(ids < head_end, self.compute_dtype), -1)
        vectors = keras.ops.take(self.head, keras.ops.minimum(ids, head_end - 1), axis=0) * in_head
        for (lo, hi), tail, projection in zip(self.ranges[1:], self.tails, self.projections, strict=True):
            inside = keras.ops.expand_dims(keras.ops.cast((ids >= lo) & (ids < hi), self.compute_dtype), -1)
            local = keras.ops.clip(ids - lo, 0, hi - lo - 1)
            # [batch, time, tail_dim] @ [tail_dim, dim] -> [batch, time, dim]
            vectors = vectors + keras.ops.matmul(keras.ops.take(tail, local, axis=0), projection) * inside
        return vectors


@keras.saving.register_keras_serializable(package="nextword")
class AdaptiveTiedOutput(lm.OutputHead):
    """hidden [batch, time, dim] -> log-probabilities [batch, time, vocab] float32, from the embedding's vectors."""

    def __init__(self, embedding: AdaptiveEmbedding, matmul_dtype: str = FLOAT32, **kwargs):
        super().__init__(**kwargs)
        self.embedding = embedding
        self.matmul_dtype = matmul_dtype  # of the output matmuls (trainer/matmul.py)

    def build(self, input_shape):
        emb = self.embedding
        n_tails = len(emb.ranges) - 1
        scale = keras.initializers.RandomNormal(stddev=emb.dim**-0.5)
        self.cluster_vectors = self.add_weight(name="cluster_vectors", shape=(n_tails, emb.dim), initializer=scale)
        self.head_bias = self.add_weight(name="head_bias", shape=(emb.ranges[0][1] + n_tails,), initializer="zeros")
        self.tail_biases = [
            self.add_weight(name=f"tail_bias_{i}", shape=(hi - lo,), initializer="zeros")
            for i, (lo, hi) in enumerate(emb.ranges[1:])
        ]

    def _head_logits(self, hidden):
        """hidden [..., dim] -> logits [..., head + clusters] float32: head words, then one per cluster."""
        kernel = keras.ops.concatenate([self.embedding.head, self.cluster_vectors], axis=0)
        return self._dot(hidden, kernel, self.head_bias)

    def _tail_logits(self, i: int, hidden):
        """hidden [..., dim] -> logits [..., size_i] float32 within cluster i (tied: h . tail_i[w] @ projection_i)."""
        reduced = self._dot(hidden, self.embedding.projections[i])  # [..., tail_dim]
        return self._dot(reduced, self.embedding.tails[i], self.tail_biases[i])

    def _dot(self, x, kernel, bias=None):
        """x [..., k] . kernel [v, k] (+ bias [v]) -> [..., v] float32."""
        return dot_rows(x, kernel, self.matmul_dtype, transpose_b=True, bias=bias)

    def call(self, hidden):
        head_end = self.embedding.ranges[0][1]
        head = keras.ops.log_softmax(self._head_logits(hidden), axis=-1)  # [b, t, head + n]
        parts = [head[..., :head_end]]
        for i in range(len(self.tail_biases)):
            cluster = head[..., head_end + i : head_end + i + 1]  # log P(cluster i), [b, t, 1]
            parts.append(cluster + keras.ops.log_softmax(self._tail_logits(i, hidden), axis=-1))
        return keras.ops.concatenate(parts, axis=-1)  # [b, t, vocab]

    def call_blocks(self, blocks: list[tf.Tensor]) -> list[tf.Tensor]:
        """call() on each block of hidden states (its matrices are small: cast per block)."""
        return [self(hidden) for hidden in blocks]

    def target_log_probs(self, hidden: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """log P(target): hidden [b, t, dim], targets [b, t] -> [b, t] float32, equal to call()'s at the targets.

        The training loss needs no other word's probability: a cluster's softmax is computed only
        for the positions whose target is in it (Grave et al. 2017), the head's for all.
        """
        ranges = self.embedding.ranges
        head_end = ranges[0][1]
        flat = tf.reshape(hidden, [-1, tf.shape(hidden)[-1]])  # [n, dim]
        ids = tf.reshape(targets, [-1])  # [n]
        head_logits = self._head_logits(flat)  # [n, head + clusters]
        cluster_of = tf.searchsorted(tf.constant([hi for _, hi in ranges[:-1]], ids.dtype), ids, side="right")
        head_index = tf.where(ids < head_end, ids, head_end - 1 + cluster_of)  # the word, or its cluster
        log_probs = tf.gather(head_logits, head_index, batch_dims=1) - tf.reduce_logsumexp(head_logits, axis=-1)
        for i, (lo, hi) in enumerate(ranges[1:]):
            rows = tf.where((ids >= lo) & (ids < hi))  # [m, 1]
            logits = self._tail_logits(i, tf.gather_nd(flat, rows))  # [m, size_i]
            local = tf.gather_nd(ids, rows) - lo
            within = tf.gather(logits, local, batch_dims=1) - tf.reduce_logsumexp(logits, axis=-1)  # [m]
            log_probs = tf.tensor_scatter_nd_add(log_probs, rows, within)
        return tf.reshape(log_probs, tf.shape(targets))
