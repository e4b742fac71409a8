"""The LSTM language model. Knows nothing of distribution strategies."""

from __future__ import annotations

import hashlib

import keras

from nextword.config import ModelConfig
from trainer.adaptive import AdaptiveEmbedding, AdaptiveTiedOutput, clusters


@keras.saving.register_keras_serializable(package="nextword")
class TiedOutput(keras.layers.Layer):
    """Logits from the transposed input embedding (Press & Wolf 2017), plus a bias."""

    def __init__(self, embedding: keras.layers.Embedding, **kwargs):
        super().__init__(**kwargs)
        self.embedding = embedding

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(self.embedding.input_dim,), initializer="zeros")

    def call(self, hidden):
        # hidden: [batch, time, units]; embeddings: [vocab, units] -> logits [batch, time, vocab]
        kernel = keras.ops.cast(self.embedding.embeddings, hidden.dtype)
        return keras.ops.einsum("btu,vu->btv", hidden, kernel) + keras.ops.cast(self.bias, hidden.dtype)


def _set_forget_bias(lstm: keras.layers.LSTM, value: float) -> None:
    # Keras orders LSTM gate biases [input, forget, cell, output].
    bias = lstm.cell.bias
    units = lstm.cell.units
    values = keras.ops.convert_to_numpy(bias).copy()
    values[units : 2 * units] = value
    bias.assign(values)


def _embedding_init(cfg: ModelConfig) -> keras.initializers.Initializer | str:
    """Keras' default, uniform(-0.05, 0.05), unless the embedding is also the output projection.

    Tied, so small an embedding gives nearly flat first logits, and Adam's small
    steps take long to grow it: valid perplexity 24.2 against 5.1 untied after
    two epochs on the shipped corpus (dim 128, dropout 0.3, Adam 1e-3, batch 64). A standard deviation of
    1/sqrt(dim), the LeCun scale of a projection from `dim` units, learns as
    fast as untied (5.6).
    """
    if cfg.tie_embeddings:
        return keras.initializers.RandomNormal(stddev=cfg.embedding_dim**-0.5)
    return "uniform"


def _dropout(cfg: ModelConfig, name: str, units: int) -> keras.layers.Dropout:
    """Dropout on [batch, time, units]: a fresh mask per position, or one per sequence (locked_dropout)."""
    noise_shape = (None, 1, units) if cfg.locked_dropout else None
    return keras.layers.Dropout(cfg.dropout, noise_shape=noise_shape, name=name)


def build_model(vocab_size: int, cfg: ModelConfig, with_state: bool = False) -> keras.Model:
    """ids [batch, time] int32 -> logits [batch, time, vocab_size] float32.

    With adaptive cutoffs (cfg.adaptive_cutoffs) the "logits" are log-probabilities,
    which every consumer may treat as logits (trainer/adaptive.py).

    The LSTM layers keep cuDNN's requirements (tanh/sigmoid, no recurrent
    dropout, no masking, not unrolled): dropout sits between layers instead.

    `with_state` adds each LSTM layer's states as inputs and outputs, for
    carrying context from one window to the next (train.carry_state):
    [ids, h_0, c_0, h_1, c_1, ...] -> [logits, h_0, c_0, ...], states [batch, lstm_units].
    The weights (names, shapes, order) are the same either way.
    """
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    initial_states = [
        keras.Input(shape=(cfg.lstm_units,), name=f"lstm_{i}_{kind}")
        for i in range(cfg.num_layers if with_state else 0)
        for kind in ("h", "c")
    ]
    final_states = []
    adaptive = len(clusters(vocab_size, cfg.adaptive_cutoffs)) > 1
    if adaptive:
        embedding = AdaptiveEmbedding(
            vocab_size, cfg.embedding_dim, cfg.adaptive_cutoffs, cfg.adaptive_factor, name="embedding"
        )
    else:
        embedding = keras.layers.Embedding(
            vocab_size, cfg.embedding_dim, embeddings_initializer=_embedding_init(cfg), name="embedding"
        )
    x = embedding(ids)  # [batch, time, embedding_dim]
    x = _dropout(cfg, "embedding_dropout", cfg.embedding_dim)(x)
    lstms = []
    for i in range(cfg.num_layers):
        lstm = keras.layers.LSTM(cfg.lstm_units, return_sequences=True, return_state=with_state, name=f"lstm_{i}")
        lstms.append(lstm)
        if with_state:
            x, h, c = lstm(x, initial_state=initial_states[2 * i : 2 * i + 2])
            final_states += [h, c]
        else:
            x = lstm(x)  # [batch, time, lstm_units]
        x = _dropout(cfg, f"lstm_{i}_dropout", cfg.lstm_units)(x)
    if cfg.tie_embeddings:
        if cfg.lstm_units != cfg.embedding_dim:  # project to the embedding's size first (Press & Wolf 2017)
            x = keras.layers.Dense(cfg.embedding_dim, use_bias=False, name="tied_projection")(x)
        tied_output = AdaptiveTiedOutput if adaptive else TiedOutput
        logits = tied_output(embedding, name="logits", dtype="float32")(x)
    else:
        logits = keras.layers.Dense(vocab_size, name="logits", dtype="float32")(x)
    if with_state:
        model = keras.Model([ids, *initial_states], [logits, *final_states], name="nextword_lstm")
    else:
        model = keras.Model(ids, logits, name="nextword_lstm")
    for lstm in lstms:
        _set_forget_bias(lstm, cfg.forget_bias)
    return model


def cudnn_eligible(model: keras.Model) -> list[str]:
    """Reasons, per LSTM layer, why cuDNN would not be used (empty: eligible)."""
    reasons = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.LSTM):
            continue
        cell = layer.cell
        checks = {
            "activation is not tanh": cell.activation is not keras.activations.tanh,
            "recurrent_activation is not sigmoid": cell.recurrent_activation is not keras.activations.sigmoid,
            "recurrent_dropout > 0": cell.recurrent_dropout > 0,
            "unroll=True": layer.unroll,
            "use_bias=False": not cell.use_bias,
        }
        reasons += [f"{layer.name}: {why}" for why, bad in checks.items() if bad]
    return reasons


def weights_sha256(model: keras.Model) -> str:
    """Hash of every weight's bytes, in order: equal on workers that stayed in sync, and the weights'
    part of a bundle's model fingerprint."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()
