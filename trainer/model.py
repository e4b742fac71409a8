"""The language model, from the parts chosen in train.model. Knows nothing of distribution strategies."""

from __future__ import annotations

import hashlib

import keras

from nextword.config import ModelConfig
from trainer import heads, lm, recurrent
from trainer.matmul import FLOAT32


def _dropout(cfg: ModelConfig, name: str, units: int) -> keras.layers.Dropout:
    """Dropout on [batch, time, units]: a fresh mask per position, or one per sequence (locked_dropout)."""
    noise_shape = (None, 1, units) if cfg.locked_dropout else None
    return keras.layers.Dropout(cfg.dropout, noise_shape=noise_shape, name=name)


def build_model(
    vocab_size: int, cfg: ModelConfig, with_state: bool = False, unroll: bool = False, matmul_dtype: str = FLOAT32
) -> keras.Model:
    """ids [batch, time] int32 -> logits [batch, time, vocab_size] float32.

    The parts: the embedding and output head of trainer/heads.py (the adaptive head's
    "logits" are log-probabilities, which every consumer may treat as logits), and the
    recurrent stack of trainer/recurrent.py, chosen by name (train.model.head, train.model.cell).
    Dropout sits between them, outside the recurrent layers, so they keep cuDNN's requirements.
    The model keeps the contract of trainer/lm.py, checked here.

    `with_state` adds each recurrent layer's states as inputs and outputs, for
    carrying context from one window to the next (train.carry_state):
    [ids, *states] -> [logits, *states after], named by recurrent.state_names, each [batch, units].
    The weights (names, shapes, order) are the same either way.

    `unroll` writes the recurrent layers' time loop out in the graph: faster training and evaluation on
    CPUs (bench/results/peer_levers.json), but not cuDNN-eligible, and the window's length
    must be known when traced. The trainer asks for it where there is no GPU (trainer/main.py); the
    bundle's model takes lines of any length and stays rolled. The weights are the same either way.

    `matmul_dtype` "bfloat16" computes the output matmuls and the unrolled LSTMs' input projections in
    bf16 (train.matmul_dtype; trainer/matmul.py); everything else stays float32.
    """
    if not cfg.units or not cfg.num_layers or not cfg.embedding_dim or cfg.dropout is None:
        raise ValueError("train.model: a size is left to the corpus; call trainer.sizing.resolve first")
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    initial_states = [keras.Input(shape=(cfg.units,), name=name) for name in recurrent.state_names(cfg, with_state)]
    per_layer = len(recurrent.CELLS[cfg.cell].states)
    embedding = heads.build_embedding(vocab_size, cfg)
    x = embedding(ids)  # [batch, time, embedding_dim]
    x = _dropout(cfg, "embedding_dropout", cfg.embedding_dim)(x)
    layers = recurrent.build_layers(cfg, with_state, unroll, matmul_dtype)
    final_states = []
    for i, layer in enumerate(layers):
        if with_state:
            x, *states = layer(x, initial_state=initial_states[per_layer * i : per_layer * (i + 1)])
            final_states += states
        else:
            x = layer(x)  # [batch, time, units]
        x = _dropout(cfg, f"{layer.name}_dropout", cfg.units)(x)
    logits = heads.build_output(x, embedding, vocab_size, cfg, matmul_dtype)
    if with_state:
        model = keras.Model([ids, *initial_states], [logits, *final_states], name="nextword_lm")
    else:
        model = keras.Model(ids, logits, name="nextword_lm")
    recurrent.initialize(layers, cfg)
    lm.of(model)  # a part that breaks the contract fails here, not in training, evaluation or export
    return model


def cudnn_eligible(model: keras.Model) -> list[str]:
    """Reasons, per recurrent layer, why cuDNN would not be used (empty: eligible)."""
    return [why for layer in lm.of(model).recurrent_layers for why in recurrent.cudnn_reasons(layer)]


def weights_sha256(model: keras.Model) -> str:
    """Hash of every weight's bytes, in order: equal on workers that stayed in sync, and the weights'
    part of a bundle's model fingerprint."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()
