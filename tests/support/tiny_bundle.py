"""A tiny trained model bundle for tests: synthetic corpus -> preprocessing -> Keras fit -> export.

Plain `model.fit` on the preprocessed TFRecord windows (the trainer proper is
tested on its own); a few hundred steps are enough for the model to learn the
synthetic chain's successors.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from beam_preprocess import pipeline as preprocess
from nextword import config as config_lib
from nextword.config import Config, ModelConfig
from nextword.text import contract
from tests.support import synthetic
from trainer.export import export_bundle
from trainer.model import build_model
from trainer.steps import split_window

TINY_MODEL = ModelConfig(embedding_dim=16, units=32, num_layers=1, dropout=0.0)
WINDOW = 4


@dataclass
class TinyBundle:
    root: str
    corpus_glob: str
    data_dir: str
    bundle_dir: str
    config: Config
    model: keras.Model
    vocab: contract.Vocabulary
    settings: contract.TextSettings
    chain: synthetic.MarkovChain


def windows_dataset(data_dir: str, manifest: dict, batch_size: int) -> tf.data.Dataset:
    """(inputs [b, W], targets [b, W], target mask [b, W]) from the train split's windows, repeated."""
    files = [os.path.join(data_dir, shard) for shard in manifest["shards"]["train"]]
    spec = {contract.FEATURE_IDS: tf.io.FixedLenFeature([manifest["record_length"]], tf.int64)}

    def split(record):
        ids = tf.cast(tf.io.parse_single_example(record, spec)[contract.FEATURE_IDS], tf.int32)
        inputs, targets, mask = split_window(ids[None])  # padding: never a target
        return inputs[0], targets[0], mask[0]

    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").map(split)
    return dataset.shuffle(2048, seed=1).repeat().batch(batch_size, drop_remainder=True)


def train_tiny_model(data_dir: str, manifest: dict, steps: int) -> keras.Model:
    keras.utils.set_random_seed(1)
    model = build_model(manifest["vocab_size"], TINY_MODEL)
    model.compile(
        optimizer=keras.optimizers.Adam(0.02),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,  # no XLA anywhere on CPU (bench/xla_stress.py)
    )
    model.fit(windows_dataset(data_dir, manifest, 32), steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    return model


def build_tiny_bundle(root: str, steps: int = 300) -> TinyBundle:
    spec = synthetic.ChainSpec(vocab_size=30, branching=3, seed=3)
    synthetic.write_corpus(os.path.join(root, "corpus"), spec, num_files=2, tokens_per_file=4000)
    corpus_glob = os.path.join(root, "corpus", "**", "*.txt")
    data_dir = os.path.join(root, "data")
    bundle_dir = os.path.join(root, "bundle")
    overrides = [
        f"preprocess.corpus_glob={corpus_glob}",
        f"preprocess.output_dir={data_dir}",
        f"preprocess.window_length={WINDOW}",
        "preprocess.stride=2",
        "preprocess.num_shards=1",
        "preprocess.text.min_count=1",
        "preprocess.split.valid_fraction=0",
        "preprocess.split.test_fraction=0",
        f"train.data_dir={data_dir}",
        f"predict.bundle_dir={bundle_dir}",
        *(f"train.model.{k}={v}" for k, v in config_lib.section_to_dict(TINY_MODEL).items()),
    ]
    manifest = preprocess.run([arg for item in overrides for arg in ("--set", item)])
    config = config_lib.from_dict(None, overrides)
    model = train_tiny_model(data_dir, manifest, steps)
    export_bundle(model, data_dir, config, bundle_dir)
    tokens = contract.parse_vocab_text(Path(data_dir, contract.VOCAB_FILE).read_text(encoding="utf-8"), data_dir)
    return TinyBundle(
        root=root,
        corpus_glob=corpus_glob,
        data_dir=data_dir,
        bundle_dir=bundle_dir,
        config=config,
        model=model,
        vocab=contract.Vocabulary(tokens),
        settings=config.preprocess.text,
        chain=synthetic.make_chain(spec),
    )


def corpus_lines(bundle: TinyBundle) -> list[str]:
    paths = sorted(glob.glob(bundle.corpus_glob, recursive=True))
    return [line for path in paths for line in Path(path).read_text(encoding="utf-8").splitlines()]


# --- The reference computation: the Keras model on Python-side ids ----------
def line_ids(text: str, vocab: contract.Vocabulary, settings: contract.TextSettings) -> list[int]:
    """A line's ids as the bundle defines them: words, with <eos> before and after when enabled."""
    ids = vocab.ids(contract.tokenize(text, settings))
    return [contract.EOS_ID, *ids, contract.EOS_ID] if settings.eos else ids


def reference_next(model: keras.Model, ids: list[int], window: int) -> np.ndarray:
    """Softmax after the last `window` ids (the ids end where the next word begins)."""
    context = np.array([ids[-window:]], dtype=np.int32)
    logits = keras.ops.convert_to_numpy(model(context, training=False))[0, -1].astype(np.float64)
    return np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    peak = logits.max(-1, keepdims=True)
    return logits - (peak + np.log(np.exp(logits - peak).sum(-1, keepdims=True)))


def reference_token_log_probs(model: keras.Model, ids: list[int], window: int) -> list[float]:
    """log P of every id after the first, over windows of window+1 ids with stride window (each from zero state)."""
    values = []
    for start in range(0, max(len(ids) - 1, 0), window):
        chunk = ids[start : start + window + 1]
        log_softmax = _log_softmax(
            keras.ops.convert_to_numpy(model(np.array([chunk[:-1]], np.int32), training=False))[0]
        )
        values += [float(log_softmax[i, t]) for i, t in enumerate(chunk[1:])]
    return values


def reference_score(model: keras.Model, ids: list[int], window: int) -> tuple[float, int]:
    """Sum of log-probabilities over windows of window+1 ids with stride window, and their count."""
    values = reference_token_log_probs(model, ids, window)
    return float(sum(values)), len(values)


def document_ids(lines: list[str], vocab: contract.Vocabulary, settings: contract.TextSettings) -> list[list[int]]:
    """Each line's ids in a document as preprocessing streams them: its words, then <eos> when enabled."""
    return [vocab.ids(contract.line_tokens(line, settings)) for line in lines]


def reference_carried(model: keras.Model, model_cfg: ModelConfig, ids: list[int], window: int) -> list[float]:
    """The trainer's carried evaluation of one stream: windows of window+1 ids, stride window, the LSTM
    state carried from window to window (trainer/steps.py forward), through a stateful copy of `model`.

    log P of every id after the first, in order.
    """
    stateful = build_model(model.output_shape[-1], model_cfg, with_state=True)
    stateful.set_weights(model.get_weights())
    states = [np.zeros([1, model_cfg.units], np.float32) for _ in stateful.inputs[1:]]  # LSTM: h, c; GRU: h
    values = []
    for start in range(0, max(len(ids) - 1, 0), window):
        chunk = ids[start : start + window + 1]
        logits, *states = stateful([np.array([chunk[:-1]], np.int32), *states], training=False)
        log_softmax = _log_softmax(keras.ops.convert_to_numpy(logits)[0])
        values += [float(log_softmax[i, t]) for i, t in enumerate(chunk[1:])]
        states = [keras.ops.convert_to_numpy(s) for s in states]
    return values
