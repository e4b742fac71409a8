"""On-device export (`nextword export --format tflite`): the model as TensorFlow Lite, on word ids, one step at a time.

Layout of the output folder (default `train.model_dir/tflite`):
    model.tflite   the flatbuffer: one signature, `step`, TensorFlow Lite's built-in operators only
    vocab.txt      the vocabulary, line number = id (the bundle's)
    tflite.json    what the app needs besides: text settings, special ids, the state's layout, k, the
                   quantization, the fingerprints; written last (the commit marker)

Signature `step` (no string op: turning text into ids is the app's part, docs/on_device.md):
    in   id             int32   [1]   the id of the token just read
         state          float32 [S]   the state after the token before; zeros to start
    out  log_probs      float32 [V]   natural-log probability of every id as the next token
         top_ids        int32   [k]   the k most likely next ids, most likely first (k = predict.top_k at export)
         top_log_probs  float32 [k]   their log-probabilities
         state          float32 [S]   the state after `id`
S: each recurrent layer's states in order (h then c for an LSTM, h for a GRU), as in the bundle's
score_stream and advance_stream signatures, so a state moves between them unchanged.

The step is the bundle's model: the same layers and weights, the recurrent loop written out for one
position (matmuls and element-wise operators, which TensorFlow Lite runs without its LSTM kernel).
Steps from a zero state, reset every `context_tokens` predicted tokens, give the bundle's `score`;
carried on, they give its document context (`score_stream`).

Quantization (`--quantize`): none (float32), float16 (weights stored in float16, computed in float32 on
the CPU), int8 (dynamic range: weights in int8, activations quantized per call by the kernels).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from nextword import storage
from nextword.config import Config, ModelConfig
from nextword.text import contract
from trainer import recurrent
from trainer.data import read_manifest_and_vocab
from trainer.model import build_model, weights_sha256

_LOG = logging.getLogger(__name__)

TFLITE_DIR = "tflite"  # in train.model_dir, unless --out names another folder
MODEL_FILE = "model.tflite"
INFO_FILE = "tflite.json"
INFO_TYPE = "nextword.tflite"
FORMAT_VERSION = 1
SIGNATURE_STEP = "step"
QUANTIZATIONS = ("none", "float16", "int8")
_FILES = (MODEL_FILE, contract.VOCAB_FILE, INFO_FILE)
# What an export killed midway leaves (storage.atomic_write's temporary names), removed by the next export.
_LEFTOVERS = (storage.Owned("", storage.temp_names(*_FILES)),)


def step_function(
    model: keras.Model, cfg_model, vocab_size: int, top_k: int
) -> tuple[tf.types.experimental.ConcreteFunction, tf.Module]:
    """The `step` signature over a copy of `model` (its weights) with the state as input and output.

    Returns the concrete function and the module that holds its variables (what the converter freezes).
    """
    stateful = build_model(vocab_size, cfg_model, with_state=True, unroll=True)
    stateful.set_weights(model.get_weights())
    parts = [int(state.shape[-1]) for state in stateful.inputs[1:]]
    k = min(top_k, vocab_size)

    @tf.function(
        input_signature=[
            tf.TensorSpec([1], tf.int32, name="id"),
            tf.TensorSpec([sum(parts)], tf.float32, name="state"),
        ]
    )
    def step(id, state):  # noqa: A002 (the signature's input name, as the app sees it)
        states = tf.split(state[tf.newaxis], parts, axis=1)  # [1, units] each
        logits, *after = stateful([id[tf.newaxis], *states], training=False)  # [1, 1, V], [1, units] each
        log_probs = tf.nn.log_softmax(logits[0, 0])  # the adaptive head's log-probabilities stay as they are
        top = tf.math.top_k(log_probs, k=k)
        return {
            "log_probs": log_probs,
            "top_ids": top.indices,
            "top_log_probs": top.values,
            "state": tf.concat(after, axis=1)[0],
        }

    holder = tf.Module()
    # The variables alone: a tracked Keras model would be saved with its own serving function, which an
    # unrolled model of unknown length cannot trace.
    holder.weights = [weight.value for weight in stateful.weights]
    holder.step = step
    return step.get_concrete_function(), holder


def convert(model: keras.Model, model_cfg: ModelConfig, vocab_size: int, top_k: int, quantize: str) -> bytes:
    """The `step` flatbuffer of `model` with its weights quantized as `quantize` (one of QUANTIZATIONS)."""
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"--quantize: {quantize!r} is not one of {', '.join(QUANTIZATIONS)}")
    step, holder = step_function(model, model_cfg, vocab_size, top_k)
    # Through a SavedModel: the converter keeps a SavedModel's signature names, not a concrete function's.
    with tempfile.TemporaryDirectory(prefix="nextword-tflite-") as saved:
        tf.saved_model.save(holder, saved, signatures={SIGNATURE_STEP: step})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=[SIGNATURE_STEP])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no TensorFlow op in the app
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # without a representative dataset: dynamic range
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


def export(model: keras.Model, data_dir: str, config: Config, out_dir: str, quantize: str = "none") -> str:
    """Writes model.tflite, vocab.txt and tflite.json for `model` (trained on `data_dir`; built with state or
    without, in any matmul dtype: only its weights are taken) to `out_dir`; returns it.

    `config`: the run's resolved config (train.model with its sizes; predict.top_k is the signature's k).
    """
    manifest, tokens = read_manifest_and_vocab(data_dir)
    predicted = model.outputs[0].shape[-1]  # the logits come first, with the states after them or not
    if predicted != len(tokens):
        raise ValueError(
            f"{data_dir}: the model predicts {predicted} ids but {contract.VOCAB_FILE} has "
            f"{len(tokens)} tokens; export the model with the data it was trained on"
        )
    storage.claim(out_dir, "export-tflite", _LEFTOVERS, _FILES, marker=INFO_FILE, key="--out")
    storage.clear_owned(out_dir, _LEFTOVERS, marker=INFO_FILE)  # the marker first: a failed export never looks done
    flatbuffer = convert(model, config.train.model, len(tokens), config.predict.top_k, quantize)
    with storage.atomic_write(storage.join(out_dir, MODEL_FILE)) as f:
        f.write(flatbuffer)
    storage.write_text(storage.join(out_dir, contract.VOCAB_FILE), contract.vocab_text(tokens))
    cfg = config.train.model
    info = {
        "type": INFO_TYPE,
        "format_version": FORMAT_VERSION,
        "signature": SIGNATURE_STEP,
        "quantize": quantize,
        "vocab_size": len(tokens),
        "top_k": min(config.predict.top_k, len(tokens)),
        "state": [{"name": name, "size": cfg.units} for name in recurrent.state_names(cfg, with_state=True)],
        "unknown_id": contract.UNK_ID,
        "eos_id": contract.EOS_ID if manifest.text.eos else None,
        "text": manifest.text.to_dict(),
        "context_tokens": manifest.window_length,
        "fingerprint": manifest.fingerprint,
        "weights_sha256": weights_sha256(model),
        "model_sha256": hashlib.sha256(flatbuffer).hexdigest(),
    }
    storage.write_marker(storage.join(out_dir, INFO_FILE), info)
    _LOG.info(
        "exported %s (%s weights, %d bytes) with its vocabulary to %s", MODEL_FILE, quantize, len(flatbuffer), out_dir
    )
    return out_dir


def step_through(
    step: Callable[..., dict[str, np.ndarray]], ids: Sequence[int], state: np.ndarray, reset_every: int = 0
) -> tuple[list[float], np.ndarray]:
    """What an app does with the `step` signature (a TensorFlow Lite signature runner): each id of `ids` in
    turn, log P(the next id) read from its log_probs. Returns those of ids[1:] and the state after the last id.

    `reset_every` C > 0: the state goes back to zeros before ids[0], ids[C], ids[2C], ...: the bundle's
    `score` of one line (windows of C + 1 ids, stride C, each from a zero state). 0: the state is carried
    from `state` throughout (the bundle's document context).
    """
    values = []
    for i, token in enumerate(ids):
        if reset_every and i % reset_every == 0:
            state = np.zeros_like(state)
        out = step(id=np.array([token], np.int32), state=state)
        state = out["state"]
        if i + 1 < len(ids):
            values.append(float(out["log_probs"][ids[i + 1]]))
    return values, state
