"""The language model's contract: what training, evaluation, export and checkpoints ask of a model.

A model (trainer/model.py build_model) is a Keras functional model
    ids [batch, time] int32 (, *states) -> logits [batch, time, vocab] float32 (, *states after)
whose layers are:
- a chain from the ids to the output head's input, the hidden states [batch, time, units]: each layer
  takes the previous one's output. The layers that carry state are Keras RNN layers
  (`keras.layers.RNN`, a cell of recurrent.CELLS); each state is [batch, units] float32, in the order
  Keras takes and returns them (LSTM: h, c; GRU: h). A model built with state takes them as inputs
  after the ids and returns them after the logits, layer by layer;
- the output head, the last layer: an `OutputHead` (a head of heads.HEADS), hidden -> logits.

`LanguageModel` is that contract's view of a model: its hidden states from ids and states, its head's
blocked logits and target log-probabilities, its state spec and the layers that carry state. The train
and eval steps (trainer/steps.py), the bundle (trainer/export.py) and the checkpoints use only it;
build_model checks it, so a part that breaks it fails where the model is built.

Cells and heads are chosen by name through a `Registry` (train.model.cell, train.model.head): a new one
is one `register` call and its name among the config key's choices (nextword/config.py).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TypeVar

import keras
import tensorflow as tf

Part = TypeVar("Part")


class Registry(dict[str, Part]):
    """The parts a config key chooses by name (recurrent.CELLS, heads.HEADS)."""

    def __init__(self, key: str):
        super().__init__()
        self.key = key

    def register(self, name: str, part: Part) -> Part:
        if name in self:
            raise ValueError(f"{self.key}: {name!r} is registered already")
        self[name] = part
        return part

    def __missing__(self, name: str):
        raise ValueError(f"{self.key}: {name!r} is not one of {', '.join(self)}")


def token_losses(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Cross-entropy in nats, for training: logits [b, L, V], targets [b, L] -> [b, L] float32.

    TF's fused op, which computes the gradient along with the loss: with the gradient it is faster than
    log-sum-exp by hand (bench/results/cross_entropy_bench.json).
    """
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=tf.cast(logits, tf.float32))


class OutputHead(keras.layers.Layer):
    """The model's last layer: hidden [b, t, units] -> logits [b, t, vocab] float32.

    The logits may be log-probabilities (trainer/adaptive.py): every consumer takes a log-softmax of
    them, which leaves log-probabilities as they are.
    """

    def call(self, hidden):
        return self.call_blocks([hidden])[0]

    def call_blocks(self, blocks: list[tf.Tensor]) -> list[tf.Tensor]:
        """The logits of each block of hidden states [b, t_i, units] (evaluation's blocks of a few time
        steps): what the blocks share, such as a cast of the output matrix, is made once for all."""
        raise NotImplementedError(f"{type(self).__name__}: an output head defines call_blocks")

    def target_log_probs(self, hidden: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """log P(target): hidden [b, t, units], targets [b, t] -> [b, t] float32; the training loss negated.

        Here from the whole vocabulary's logits; a head that needs no other word's probability
        overrides it (trainer/adaptive.py).
        """
        return -token_losses(self(hidden), targets)


class LanguageModel:
    """The contract's view of a model of build_model (see the module docstring); `of(model)` keeps one per model."""

    def __init__(self, model: keras.Model):
        self.model = model
        head = model.layers[-1]
        if not isinstance(head, OutputHead) or head.output is not model.outputs[0]:
            raise TypeError(
                f"{model.name}: the last layer ({head.name}, {type(head).__name__}) must be the output head, an "
                "lm.OutputHead that makes the first output (trainer/lm.py)"
            )
        self.head: OutputHead = head
        self.chain = [layer for layer in model.layers[:-1] if not isinstance(layer, keras.layers.InputLayer)]
        # The layers that carry state, and the units of each of their states in order: the state spec.
        self.recurrent_layers = [layer for layer in self.chain if isinstance(layer, keras.layers.RNN)]
        self.states_per_layer = [len(tf.nest.flatten(layer.cell.state_size)) for layer in self.recurrent_layers]
        self.state_units = [
            int(units) for layer in self.recurrent_layers for units in tf.nest.flatten(layer.cell.state_size)
        ]
        self.takes_states = len(model.inputs) > 1
        if self.takes_states and [int(i.shape[-1]) for i in model.inputs[1:]] != self.state_units:
            raise TypeError(f"{model.name}: its state inputs are not [batch, units] per state of each recurrent layer")
        outputs = [head.input, *model.outputs[1:]]
        # One output as a tensor, not a list of one, as the model's own.
        self.hidden_model = keras.Model(
            model.inputs, outputs if len(outputs) > 1 else outputs[0], name="nextword_hidden"
        )
        self.hidden_units = int(head.input.shape[-1])

    def zero_states(self, batch: int) -> tuple[tf.Tensor, ...]:
        """Zero states [batch, units] float32 of a model built with state (empty for one without)."""
        return tuple(tf.zeros([batch, units], tf.float32) for units in self.state_units) if self.takes_states else ()

    def hidden(self, ids: tf.Tensor, states: Sequence[tf.Tensor], training: bool) -> tuple[tf.Tensor, tuple]:
        """ids [b, t] from `states` -> hidden [b, t, units] (the head's input), and the states after (float32).

        No states: the model's own graph from a zero state, and none after. States given to a model
        built without them (the bundle's streams): its chain run layer by layer, each recurrent layer
        from its states.
        """
        if self.takes_states or not states:
            out = self.hidden_model([ids, *states] if self.takes_states else ids, training=training)
            hidden, *after = out if self.takes_states else (out,)
            return hidden, tuple(tf.cast(s, tf.float32) for s in after)
        x, rest, after = ids, list(states), []
        for layer in self.chain:
            if not isinstance(layer, keras.layers.RNN):
                x = layer(x, training=training)
                continue
            count = len(tf.nest.flatten(layer.cell.state_size))
            initial, rest = rest[:count], rest[count:]
            _, x, final = layer.inner_loop(sequences=x, initial_state=initial, mask=None, training=training)
            after += [tf.cast(s, tf.float32) for s in tf.nest.flatten(final)]
        return x, tuple(after)


_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def of(model: keras.Model) -> LanguageModel:
    """The contract's view of `model`, made once (build_model makes it, which checks the contract)."""
    if model not in _VIEWS:
        _VIEWS[model] = LanguageModel(model)
    return _VIEWS[model]
