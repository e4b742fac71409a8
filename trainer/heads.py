"""The model's ends: the input embedding and the output head, chosen by train.model.head from HEADS.

- full: an embedding and its own output matrix [units, vocab];
- tied: the output is the embedding transposed, plus a bias (Press & Wolf 2017, Inan et al. 2017);
  a projection to the embedding's size comes first when the recurrent units differ;
- adaptive: tied, with the adaptive input and softmax of trainer/adaptive.py;
- auto: tied below ADAPTIVE_MIN_VOCAB words, adaptive from there. At 384 units the full softmax over
  a 10k vocabulary is ~3.8M of ~5M multiply-adds per token; the adaptive one is ~0.6M.

A new head is one `HEADS.register(name, Head(embedding, output))`, its output layer an lm.OutputHead
(trainer/lm.py), and its name among train.model.head's choices (nextword/config.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import tensorflow as tf

from nextword.config import ModelConfig
from trainer import lm
from trainer.adaptive import AdaptiveEmbedding, AdaptiveTiedOutput, clusters
from trainer.matmul import FLOAT32, dot_rows

ADAPTIVE_MIN_VOCAB = 5000


@keras.saving.register_keras_serializable(package="nextword")
class FullOutput(lm.OutputHead, keras.layers.Dense):
    """Keras' Dense (its weights), its matmul in `matmul_dtype` (trainer/matmul.py)."""

    def __init__(self, units: int, matmul_dtype: str = FLOAT32, **kwargs):
        super().__init__(units, **kwargs)
        self.matmul_dtype = matmul_dtype

    def call_blocks(self, blocks: list[tf.Tensor]) -> list[tf.Tensor]:
        """call() on each block of hidden states, the kernel cast to the matmul dtype once for all."""
        kernel = tf.cast(self.kernel, self.matmul_dtype)
        # hidden [batch, time, units] . kernel [units, vocab] -> logits [batch, time, vocab]
        return [dot_rows(hidden, kernel, self.matmul_dtype, bias=self.bias) for hidden in blocks]


@keras.saving.register_keras_serializable(package="nextword")
class TiedOutput(lm.OutputHead):
    """Logits from the transposed input embedding (Press & Wolf 2017), plus a bias; matmul in `matmul_dtype`."""

    def __init__(self, embedding: keras.layers.Embedding, matmul_dtype: str = FLOAT32, **kwargs):
        super().__init__(**kwargs)
        self.embedding = embedding
        self.matmul_dtype = matmul_dtype

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(self.embedding.input_dim,), initializer="zeros")

    def call_blocks(self, blocks: list[tf.Tensor]) -> list[tf.Tensor]:
        """call() on each block of hidden states, the embeddings cast to the matmul dtype once for all."""
        kernel = tf.cast(self.embedding.embeddings, self.matmul_dtype)
        # hidden [batch, time, units] . embeddings [vocab, units]^T -> logits [batch, time, vocab]
        return [dot_rows(hidden, kernel, self.matmul_dtype, transpose_b=True, bias=self.bias) for hidden in blocks]


def adaptive_cutoffs(vocab_size: int, cfg: ModelConfig) -> tuple[int, ...]:
    """The configured cutoffs, or a tenth and two fifths of the vocabulary."""
    return cfg.adaptive_cutoffs or (vocab_size // 10, vocab_size * 2 // 5)


def resolve(vocab_size: int, cfg: ModelConfig) -> str:
    """The head a model of this vocabulary gets: full, tied or adaptive (one softmax if no cluster is left)."""
    head = cfg.head
    if head == "auto":
        head = "adaptive" if cfg.adaptive_cutoffs or vocab_size >= ADAPTIVE_MIN_VOCAB else "tied"
    if head == "adaptive" and len(clusters(vocab_size, adaptive_cutoffs(vocab_size, cfg))) == 1:
        return "tied"  # every cutoff at or past the vocabulary
    return head


@dataclass(frozen=True)
class Head:
    """A head of train.model.head: how it makes the model's two ends."""

    # (vocab_size, cfg) -> a layer: ids [batch, time] int32 -> vectors [batch, time, embedding_dim]
    embedding: Callable[[int, ModelConfig], keras.layers.Layer]
    # (hidden [batch, time, units], the embedding, vocab_size, cfg, matmul_dtype) -> logits
    # [batch, time, vocab] float32, made last by an lm.OutputHead (layers before it, such as a projection, may come)
    output: Callable[[tf.Tensor, keras.layers.Layer, int, ModelConfig, str], tf.Tensor]


def _full_embedding(vocab_size: int, cfg: ModelConfig) -> keras.layers.Layer:
    return keras.layers.Embedding(vocab_size, cfg.embedding_dim, name="embedding")  # uniform(-0.05, 0.05)


def _tied_embedding(vocab_size: int, cfg: ModelConfig) -> keras.layers.Layer:
    """Keras' embedding, initialized as the output projection it also is.

    Keras' default, uniform(-0.05, 0.05), gives nearly flat first logits when tied, and Adam's small
    steps take long to grow it: valid perplexity 24.2 against 5.1 untied after
    two epochs on the shipped corpus (dim 128, dropout 0.3, Adam 1e-3, batch 64). A standard deviation of
    1/sqrt(dim), the LeCun scale of a projection from `dim` units, learns as
    fast as untied (5.6).
    """
    init = keras.initializers.RandomNormal(stddev=cfg.embedding_dim**-0.5)
    return keras.layers.Embedding(vocab_size, cfg.embedding_dim, embeddings_initializer=init, name="embedding")


def _adaptive_embedding(vocab_size: int, cfg: ModelConfig) -> keras.layers.Layer:
    cutoffs = adaptive_cutoffs(vocab_size, cfg)
    return AdaptiveEmbedding(vocab_size, cfg.embedding_dim, cutoffs, cfg.adaptive_factor, name="embedding")


def _full_output(x, embedding: keras.layers.Layer, vocab_size: int, cfg: ModelConfig, matmul_dtype: str):
    return FullOutput(vocab_size, matmul_dtype, name="logits")(x)


def _tied(output: type[lm.OutputHead]) -> Callable:
    def build(x, embedding: keras.layers.Layer, vocab_size: int, cfg: ModelConfig, matmul_dtype: str):
        if cfg.units != cfg.embedding_dim:  # project to the embedding's size first (Press & Wolf 2017)
            x = keras.layers.Dense(cfg.embedding_dim, use_bias=False, name="tied_projection")(x)
        return output(embedding, matmul_dtype, name="logits")(x)

    return build


HEADS: lm.Registry[Head] = lm.Registry("train.model.head")
HEADS.register("full", Head(_full_embedding, _full_output))
HEADS.register("tied", Head(_tied_embedding, _tied(TiedOutput)))
HEADS.register("adaptive", Head(_adaptive_embedding, _tied(AdaptiveTiedOutput)))


def build_embedding(vocab_size: int, cfg: ModelConfig) -> keras.layers.Layer:
    """ids [batch, time] int32 -> vectors [batch, time, embedding_dim]."""
    return HEADS[resolve(vocab_size, cfg)].embedding(vocab_size, cfg)


def build_output(x, embedding: keras.layers.Layer, vocab_size: int, cfg: ModelConfig, matmul_dtype: str = FLOAT32):
    """hidden [batch, time, units] -> logits [batch, time, vocab] float32 (log-probabilities when adaptive).

    `matmul_dtype`: the dtype of the output matmuls (trainer/matmul.py); the logits are float32 either way.
    """
    return HEADS[resolve(vocab_size, cfg)].output(x, embedding, vocab_size, cfg, matmul_dtype)
