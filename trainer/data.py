"""Input pipelines over the preprocessing output (manifest.json, vocab.txt, TFRecord shards).

The vocabulary, text settings and window length come from the data directory,
never from the trainer's config. The builders know nothing of distribution
strategies: they take a worker count only to pick tf.data's auto-shard policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

from nextword import storage
from nextword.artifacts.data_dir import Manifest, read_manifest_and_vocab, shard_paths
from nextword.text import contract
from nextword.text.contract import TextSettings

_FILE = tf.data.experimental.AutoShardPolicy.FILE
_DATA = tf.data.experimental.AutoShardPolicy.DATA


@dataclass(frozen=True)
class DataSpec:
    """What the trainer knows about one preprocessed data directory."""

    data_dir: str
    manifest: Manifest
    vocab: list[str]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def window_length(self) -> int:
        return self.manifest.window_length

    @property
    def record_length(self) -> int:
        return self.window_length + 1

    @property
    def text(self) -> TextSettings:
        return self.manifest.text

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    def shard_paths(self, split: str) -> list[str]:
        return shard_paths(self.data_dir, self.manifest, split)

    def windows(self, split: str) -> int:
        return self.manifest.count("windows", split)

    def targets(self, split: str) -> int:
        """Tokens the model predicts in a split (manifests before padded windows: every window position)."""
        if "targets" not in self.manifest.counts:
            return self.windows(split) * self.window_length
        return self.manifest.count("targets", split)


def load_data_spec(data_dir: str) -> DataSpec:
    """The checked manifest and vocabulary of a data directory that has data in every split."""
    manifest, vocab = read_manifest_and_vocab(data_dir)
    manifest_path = storage.join(data_dir, contract.MANIFEST_FILE)
    spec = DataSpec(data_dir=data_dir, manifest=manifest, vocab=vocab)
    for split in contract.SPLITS:
        # Without a token to predict, validation (the schedule, early stopping) and the test figures have no meaning.
        if not manifest.shards[split] or not spec.windows(split) or not spec.targets(split):
            raise ValueError(
                f"{manifest_path}: the {split} split has no token to predict; give it text "
                f"(preprocess.split.{split}_fraction or {split}_glob, or a larger corpus) and rerun preprocessing"
            )
    return spec


def auto_shard_policy(num_files: int, num_workers: int) -> tf.data.experimental.AutoShardPolicy:
    """FILE sharding when every worker gets at least one file, DATA sharding otherwise."""
    return _FILE if num_files >= num_workers else _DATA


def parse_windows(serialized: tf.Tensor, record_length: int) -> tf.Tensor:
    """Serialized Examples [batch] -> ids [batch, record_length] int32."""
    spec = {contract.FEATURE_IDS: tf.io.FixedLenFeature([record_length], tf.int64)}
    return tf.cast(tf.io.parse_example(serialized, spec)[contract.FEATURE_IDS], tf.int32)


def _with_policy(dataset: tf.data.Dataset, policy: tf.data.experimental.AutoShardPolicy) -> tf.data.Dataset:
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    options.deterministic = True  # a resumed run must see the same batches
    return dataset.with_options(options)


def train_dataset(
    spec: DataSpec,
    global_batch: int,
    *,
    shuffle_buffer: int,
    seed: int,
    skip_batches: int = 0,
    num_workers: int = 1,
) -> tf.data.Dataset:
    """Shuffled, endless batches of ids [global_batch, record_length] int32.

    The order depends only on `seed` (pass one per epoch), so a resumed run
    skips exactly the batches it already trained on. Endless because an epoch
    is a fixed number of steps: every worker must take the same number, even
    when file sharding gives them different amounts of data.
    """
    files = spec.shard_paths("train")
    dataset = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed)
    dataset = dataset.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP"),
        cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    dataset = dataset.shuffle(shuffle_buffer, seed=seed).repeat()
    dataset = dataset.batch(global_batch, drop_remainder=True).skip(skip_batches)
    dataset = dataset.map(lambda s: parse_windows(s, spec.record_length), num_parallel_calls=tf.data.AUTOTUNE)
    return _with_policy(dataset, auto_shard_policy(len(files), num_workers)).prefetch(tf.data.AUTOTUNE)


def eval_batches(spec: DataSpec, split: str, global_batch: int) -> int:
    return math.ceil(spec.windows(split) / global_batch)


def eval_dataset(spec: DataSpec, split: str, global_batch: int) -> tf.data.Dataset:
    """Every window of a split once: (ids [global_batch, record_length] int32, weights [global_batch] float32).

    The last batch is padded with zero-weight windows, so every replica and
    worker takes the same number of steps. Every worker reads the whole split
    and keeps its part of each batch (DATA sharding).
    """
    windows = spec.windows(split)
    padding = eval_batches(spec, split, global_batch) * global_batch - windows
    records = tf.data.TFRecordDataset(spec.shard_paths(split), compression_type="GZIP")
    real = records.batch(1024).map(lambda s: parse_windows(s, spec.record_length)).unbatch()
    real = real.map(lambda ids: (ids, tf.constant(1.0)))
    pad = tf.data.Dataset.from_tensors((tf.zeros([spec.record_length], tf.int32), tf.constant(0.0))).repeat(padding)
    dataset = real.concatenate(pad).batch(global_batch, drop_remainder=True)
    return _with_policy(dataset, _DATA).prefetch(tf.data.AUTOTUNE)
