"""The recurrent stack, chosen by train.model.cell: lstm or gru, both kept cuDNN-eligible.

Each cell names its states per layer (an LSTM carries h and c, a GRU h), which the
carried-state inputs, the saved streams and the bundle's stream signatures follow.
A new cell is one `CELLS.register(name, Cell(...))`: its Keras RNN layer (the contract of trainer/lm.py),
its states, its cuDNN checks, its initialization and its options; and its name among train.model.cell's
choices (nextword/config.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import tensorflow as tf

from nextword.config import ModelConfig
from trainer import lm
from trainer.matmul import FLOAT32, dot_rows


@dataclass(frozen=True)
class Cell:
    """A cell of train.model.cell."""

    layer: type[keras.layers.RNN]
    states: tuple[str, ...]  # per layer, in the order Keras takes and returns them
    # cuDNN's requirements beyond the common ones (tanh, sigmoid, no recurrent dropout, not unrolled, biases);
    # None: Keras has no cuDNN kernel for the cell
    extra_checks: Callable[[keras.layers.RNN], dict[str, bool]] | None
    init: Callable[[keras.layers.RNN, ModelConfig], None]
    # the layer's own options, from its index in the stack and the matmul dtype (build_layers)
    options: Callable[[int, str], dict] = lambda index, matmul_dtype: {}


def _set_forget_bias(lstm: keras.layers.LSTM, cfg: ModelConfig) -> None:
    # Keras orders LSTM gate biases [input, forget, cell, output].
    bias = lstm.cell.bias
    units = lstm.cell.units
    values = keras.ops.convert_to_numpy(bias).copy()
    values[units : 2 * units] = cfg.forget_bias
    bias.assign(values)


@keras.saving.register_keras_serializable(package="nextword")
class ProjectedLSTM(keras.layers.LSTM):
    """Keras' LSTM, its weights and results, with the unrolled loop's input projections done before it.

    Unrolled (the trainer on a CPU), Keras multiplies each step's input by the kernel inside the loop:
    T matmuls of [batch, in] x [in, 4 units]. Here they are one [batch * T, in] x [in, 4 units]
    matmul ahead of the loop, which keeps only the recurrent one, as PyTorch's CPU LSTM does; in
    `matmul_dtype` (train.matmul_dtype).

    `pipelined` (every layer above the first): outside training, step t's projection is made from the
    layer below's step t alone, so TF runs it while the layer below computes step t + 1 instead of
    waiting for its whole sequence (faster evaluation at 2x200, no change at 2x650;
    bench/results/peer_levers.json). Training keeps the whole-sequence projection, whose gradient is
    one matmul too. Outside training, the per-step matmuls (recurrent, and pipelined projections) also
    run in `matmul_dtype`, their kernels cast once per call: faster bf16 evaluation at 2x650 (cast per
    step, bf16 had been slower); in training bf16 recurrences were no faster, so they stay float32
    (bench/README.md, "Speed against PyTorch").
    Rolled (the bundle; cuDNN on a GPU), with a mask or with dropout inside the layer, Keras' own path runs.
    """

    def __init__(self, *args, matmul_dtype: str = FLOAT32, pipelined: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.matmul_dtype = matmul_dtype
        self.pipelined = pipelined

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self.unroll or mask is not None or self.go_backwards or self.dropout or self.recurrent_dropout:
            return super().inner_loop(sequences, initial_state, mask=mask, training=training)
        step_dtype = FLOAT32 if training else self.matmul_dtype
        kernel, bias = tf.cast(self.cell.kernel.value, step_dtype), self.cell.bias.value
        if self.pipelined and not training:
            steps = [dot_rows(sequences[:, t], kernel, step_dtype, bias=bias) for t in range(sequences.shape[1])]
        else:
            steps = tf.unstack(dot_rows(sequences, kernel, self.matmul_dtype, bias=bias), axis=1)
        outputs, h, c = _loop(steps, *initial_state, tf.cast(self.cell.recurrent_kernel.value, step_dtype))
        return h, outputs if self.return_sequences else h, [h, c]  # h: the last step's output


def _loop(steps: list[tf.Tensor], h: tf.Tensor, c: tf.Tensor, recurrent_kernel: tf.Tensor) -> tuple:
    """Each step's input projection [batch, 4 units], h, c [batch, units] -> outputs [batch, time, units], h, c.

    The recurrent matmul runs in recurrent_kernel's dtype (in float32 the casts are no ops); h, c and
    the gates stay float32.
    """
    outputs = []
    for projected in steps:
        recurrent = tf.matmul(tf.cast(h, recurrent_kernel.dtype), recurrent_kernel)  # [batch, 4 units]
        z = projected + tf.cast(recurrent, tf.float32)  # gates i, f, c, o (Keras' order)
        i, f, g, o = tf.split(z, 4, axis=-1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
        outputs.append(h)
    return tf.stack(outputs, axis=1), h, c


CELLS: lm.Registry[Cell] = lm.Registry("train.model.cell")
CELLS.register(
    "lstm",
    Cell(
        ProjectedLSTM,
        ("h", "c"),
        lambda layer: {},
        _set_forget_bias,
        lambda index, matmul_dtype: {"matmul_dtype": matmul_dtype, "pipelined": index > 0},
    ),
)
CELLS.register(
    "gru",
    Cell(
        keras.layers.GRU,
        ("h",),
        lambda layer: {"reset_after=False": not layer.cell.reset_after},
        lambda layer, cfg: None,
    ),
)


def state_names(cfg: ModelConfig, with_state: bool) -> list[str]:
    """The carried-state inputs of build_model, e.g. [lstm_0_h, lstm_0_c, lstm_1_h, ...] (none without)."""
    kinds = CELLS[cfg.cell].states
    return [f"{cfg.cell}_{i}_{kind}" for i in range(cfg.num_layers if with_state else 0) for kind in kinds]


def build_layers(
    cfg: ModelConfig, with_state: bool, unroll: bool = False, matmul_dtype: str = FLOAT32
) -> list[keras.layers.RNN]:
    """The stack's layers, unbuilt: [batch, time, in] -> [batch, time, units] (and the states after).

    `unroll`: the time loop written out in the graph (the window's length must be known when traced).
    `matmul_dtype`: the dtype of the LSTM's input projection when unrolled (trainer/matmul.py).
    """
    cell = CELLS[cfg.cell]
    return [
        cell.layer(
            cfg.units,
            return_sequences=True,
            return_state=with_state,
            unroll=unroll,
            name=f"{cfg.cell}_{i}",
            **cell.options(i, matmul_dtype),
        )
        for i in range(cfg.num_layers)
    ]


def initialize(layers: list[keras.layers.RNN], cfg: ModelConfig) -> None:
    for layer in layers:
        CELLS[cfg.cell].init(layer, cfg)


def _cell_of(layer: keras.layers.RNN) -> Cell | None:
    return next((cell for cell in CELLS.values() if isinstance(layer, cell.layer)), None)


def cudnn_reasons(layer: keras.layers.RNN) -> list[str]:
    """Why cuDNN would not run this layer (empty: eligible)."""
    cell = _cell_of(layer)
    if cell is None or cell.extra_checks is None:
        return [f"{layer.name}: no cuDNN kernel for {type(layer).__name__}"]
    checks = {
        "activation is not tanh": layer.cell.activation is not keras.activations.tanh,
        "recurrent_activation is not sigmoid": layer.cell.recurrent_activation is not keras.activations.sigmoid,
        "recurrent_dropout > 0": layer.cell.recurrent_dropout > 0,
        "unroll=True": layer.unroll,
        "use_bias=False": not layer.cell.use_bias,
        **cell.extra_checks(layer),
    }
    return [f"{layer.name}: {why}" for why, bad in checks.items() if bad]
