"""The model's ends: the input embedding and the output head, chosen by train.model.head.

- full: an embedding and its own output matrix [units, vocab];
- tied: the output is the embedding transposed, plus a bias (Press & Wolf 2017, Inan et al. 2017);
  a projection to the embedding's size comes first when the recurrent units differ;
- adaptive: tied, with the adaptive input and softmax of trainer/adaptive.py;
- auto: tied below ADAPTIVE_MIN_VOCAB words, adaptive from there. At 384 units the full softmax over
  a 10k vocabulary is ~3.8M of ~5M multiply-adds per token; the adaptive one is ~0.6M.

A new head is one more entry in `build_embedding` and `build_output`, and its name in the config's choices.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from nextword.config import ModelConfig
from trainer.adaptive import AdaptiveEmbedding, AdaptiveTiedOutput, clusters
from trainer.matmul import FLOAT32, dot_rows

ADAPTIVE_MIN_VOCAB = 5000


@keras.saving.register_keras_serializable(package="nextword")
class FullOutput(keras.layers.Dense):
    """Keras' Dense (its weights), its matmul in `matmul_dtype` (trainer/matmul.py)."""

    def __init__(self, units: int, matmul_dtype: str = FLOAT32, **kwargs):
        super().__init__(units, **kwargs)
        self.matmul_dtype = matmul_dtype

    def call(self, hidden):
        return self.call_blocks([hidden])[0]

    def call_blocks(self, blocks: list[tf.Tensor]) -> list[tf.Tensor]:
        """call() on each block of hidden states, the kernel cast to the matmul dtype once for all."""
        kernel = tf.cast(self.kernel, self.matmul_dtype)
        # hidden [batch, time, units] . kernel [units, vocab] -> logits [batch, time, vocab]
        return [dot_rows(hidden, kernel, self.matmul_dtype, bias=self.bias) for hidden in blocks]


@keras.saving.register_keras_serializable(package="nextword")
class TiedOutput(keras.layers.Layer):
    """Logits from the transposed input embedding (Press & Wolf 2017), plus a bias; matmul in `matmul_dtype`."""

    def __init__(self, embedding: keras.layers.Embedding, matmul_dtype: str = FLOAT32, **kwargs):
        super().__init__(**kwargs)
        self.embedding = embedding
        self.matmul_dtype = matmul_dtype

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(self.embedding.input_dim,), initializer="zeros")

    def call(self, hidden):
        return self.call_blocks([hidden])[0]

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


def _embedding_init(head: str, dim: int) -> keras.initializers.Initializer | str:
    """Keras' default, uniform(-0.05, 0.05), unless the embedding is also the output projection.

    Tied, so small an embedding gives nearly flat first logits, and Adam's small
    steps take long to grow it: valid perplexity 24.2 against 5.1 untied after
    two epochs on the shipped corpus (dim 128, dropout 0.3, Adam 1e-3, batch 64). A standard deviation of
    1/sqrt(dim), the LeCun scale of a projection from `dim` units, learns as
    fast as untied (5.6).
    """
    return keras.initializers.RandomNormal(stddev=dim**-0.5) if head == "tied" else "uniform"


def build_embedding(vocab_size: int, cfg: ModelConfig) -> keras.layers.Layer:
    """ids [batch, time] int32 -> vectors [batch, time, embedding_dim]."""
    head = resolve(vocab_size, cfg)
    if head == "adaptive":
        cutoffs = adaptive_cutoffs(vocab_size, cfg)
        return AdaptiveEmbedding(vocab_size, cfg.embedding_dim, cutoffs, cfg.adaptive_factor, name="embedding")
    init = _embedding_init(head, cfg.embedding_dim)
    return keras.layers.Embedding(vocab_size, cfg.embedding_dim, embeddings_initializer=init, name="embedding")


def build_output(x, embedding: keras.layers.Layer, vocab_size: int, cfg: ModelConfig, matmul_dtype: str = FLOAT32):
    """hidden [batch, time, units] -> logits [batch, time, vocab] float32 (log-probabilities when adaptive).

    `matmul_dtype`: the dtype of the output matmuls (trainer/matmul.py); the logits are float32 either way.
    """
    head = resolve(vocab_size, cfg)
    if head == "full":
        return FullOutput(vocab_size, matmul_dtype, name="logits")(x)
    if cfg.units != cfg.embedding_dim:  # project to the embedding's size first (Press & Wolf 2017)
        x = keras.layers.Dense(cfg.embedding_dim, use_bias=False, name="tied_projection")(x)
    tied_output = AdaptiveTiedOutput if head == "adaptive" else TiedOutput
    return tied_output(embedding, matmul_dtype, name="logits")(x)
