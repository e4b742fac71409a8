"""Reading preprocessing output back in tests."""

from __future__ import annotations

import os


def read_windows(out, manifest, split):
    """Every window of a split, read with TensorFlow's own TFRecord reader and Example parser."""
    import tensorflow as tf

    paths = [os.path.join(out, shard) for shard in manifest["shards"][split]]
    spec = {"ids": tf.io.FixedLenFeature([manifest["record_length"]], tf.int64)}
    records = tf.data.TFRecordDataset(paths, compression_type="GZIP").batch(4096)
    return [w for batch in records.map(lambda r: tf.io.parse_example(r, spec)["ids"]) for w in batch.numpy().tolist()]
