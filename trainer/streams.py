"""Ordered input for train.carry_state (stateful truncated BPTT, as in Zaremba et al. 2014).

A split's windows, in corpus order, are cut into `streams` contiguous runs;
batch row s of step j is window j of run s, so the LSTM state a row ends one
step with is the right starting state for the row's next window. The split is
held in memory as int32 ids (4 bytes a token): a research mode for corpora of
Penn Treebank size, not for the streaming production path.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from trainer.data import DataSpec, parse_windows

# Share of consecutive windows that must continue each other for data to count as "in order".
MIN_CONTINUITY = 0.5


def read_windows(spec: DataSpec, split: str) -> np.ndarray:
    """All windows of a split in shard order: ids [windows, record_length] int32."""
    records = tf.data.TFRecordDataset(spec.shard_paths(split), compression_type="GZIP")
    batches = records.batch(4096).map(lambda s: parse_windows(s, spec.record_length))
    parts = [ids.numpy() for ids in batches]
    return np.concatenate(parts) if parts else np.zeros([0, spec.record_length], np.int32)


def continuity(windows: np.ndarray) -> float:
    """Share of consecutive windows where the next starts with the id the previous ends with.

    With stride == window_length, windows in corpus order share that one id
    (except where a file or split segment ends); shuffled windows rarely do.
    """
    if len(windows) < 2:
        return 1.0
    return float(np.mean(windows[:-1, -1] == windows[1:, 0]))


def check_in_order(spec: DataSpec, split: str, windows: np.ndarray) -> None:
    if spec.manifest["stride"] != spec.window_length:
        raise ValueError(
            f"train.carry_state: {spec.data_dir} was preprocessed with stride {spec.manifest['stride']} "
            f"and window_length {spec.window_length}; carried state needs preprocess.stride == window_length"
        )
    share = continuity(windows)
    if share < MIN_CONTINUITY:
        raise ValueError(
            f"train.carry_state: the {split} windows of {spec.data_dir} are not in corpus order "
            f"(only {share:.0%} continue the previous one); preprocess with preprocess.num_shards: 1"
        )


def stream_layout(windows: np.ndarray, streams: int, pad: bool) -> tuple[np.ndarray, np.ndarray]:
    """windows [n, L] -> (ids [steps, streams, L], weights [steps, streams]).

    Stream s is the contiguous run of windows [s * steps, (s + 1) * steps).
    Without `pad` the last n mod streams windows are left out (training);
    with it, every window is kept and the rest is zero-weight padding (evaluation).
    """
    count, length = windows.shape
    steps = -(-count // streams) if pad else count // streams
    ids = np.zeros([streams * steps, length], np.int32)
    weights = np.zeros([streams * steps], np.float32)
    kept = min(count, streams * steps)
    ids[:kept] = windows[:kept]
    weights[:kept] = 1.0
    # [streams, steps, L] -> [steps, streams, L]: row s of step j is window s * steps + j.
    ids = ids.reshape(streams, steps, length).transpose(1, 0, 2)
    weights = weights.reshape(streams, steps).T
    return np.ascontiguousarray(ids), np.ascontiguousarray(weights)


def replica_dataset(
    ids: np.ndarray, weights: np.ndarray, context: tf.distribute.InputContext, skip_steps: int = 0
) -> tf.data.Dataset:
    """The batches of one input pipeline: for each step, one (ids [b, L], weights [b]) per local replica.

    Replica r of all replicas always gets rows [r * b, (r + 1) * b) of each
    step, so its carried state stays with its streams. A strategy hands a
    pipeline's consecutive elements to its local replicas in order.
    """
    steps, streams, length = ids.shape
    replicas = context.num_replicas_in_sync
    local = replicas // context.num_input_pipelines
    per_replica = streams // replicas
    rows = slice(context.input_pipeline_id * local * per_replica, (context.input_pipeline_id + 1) * local * per_replica)
    mine_ids = ids[skip_steps:, rows].reshape(steps - skip_steps, local, per_replica, length)
    mine_weights = weights[skip_steps:, rows].reshape(steps - skip_steps, local, per_replica)
    return tf.data.Dataset.from_tensor_slices((mine_ids, mine_weights)).unbatch().prefetch(tf.data.AUTOTUNE)
