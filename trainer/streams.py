"""Ordered input for train.carry_state (stateful truncated BPTT, as in Zaremba et al. 2014), streamed.

A split's windows, in shard order, are cut into `streams` contiguous runs;
batch row s of step j is window j of run s, so the LSTM state a row ends one
step with is the right starting state for the row's next window. Each row
reads its run straight from the shards (a TFRecord reader that opens the file
holding the run's start and skips to it), so memory stays flat whatever the
corpus size: one reader and one window per row.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from trainer.data import DataSpec, parse_windows

# Share of consecutive windows that must continue each other for data to count as "in order".
MIN_CONTINUITY = 0.5


# Windows read to check that a split is in corpus order: enough to tell, and bounded memory (~9 MB at 35 ids).
ORDER_SAMPLE = 1 << 16


def window_records(spec: DataSpec, split: str, start=0, count=-1) -> tf.data.Dataset:
    """Windows [start, start + count) of a split in shard order (count -1: to the end), one at a time:
    ids [record_length] int32. `start` may be a tensor.

    Only the files from the one holding `start` are read (the manifest's windows per file), so a reader that
    starts late in a large split skips within one file instead of decompressing everything before it.
    """
    paths = spec.shard_paths(split)
    per_file = spec.manifest.shard_windows.get(split)
    first, before = 0, 0
    if per_file and len(per_file) == len(paths) and len(paths) > 1:
        ends = tf.constant(np.cumsum(per_file), tf.int64)  # [files]: windows up to each file's end
        start = tf.cast(start, tf.int64)
        first = tf.searchsorted(ends, start[tf.newaxis], side="right")[0]  # the file holding window `start`
        before = tf.concat([[0], ends], 0)[first]
        paths = tf.constant(paths)[first:]
    records = tf.data.TFRecordDataset(paths, compression_type="GZIP").skip(start - before).take(count)
    # Parsed a block at a time: one parse per record costs more than the model step on small models.
    return records.batch(256).map(lambda s: parse_windows(s, spec.record_length)).unbatch()


def read_windows(spec: DataSpec, split: str, limit: int = ORDER_SAMPLE) -> np.ndarray:
    """The first `limit` windows of a split in shard order: ids [windows, record_length] int32."""
    parts = [ids.numpy() for ids in window_records(spec, split, count=limit).batch(1024)]
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
    if spec.manifest.stride != spec.window_length:
        raise ValueError(
            f"train.carry_state: {spec.data_dir} was preprocessed with stride {spec.manifest.stride} "
            f"and window_length {spec.window_length}; carried state needs preprocess.stride == window_length"
        )
    share = continuity(windows)
    if share < MIN_CONTINUITY:
        raise ValueError(
            f"train.carry_state: the {split} windows of {spec.data_dir} are not in corpus order "
            f"(only {share:.0%} continue the previous one); preprocess with preprocess.num_shards: 1"
        )


def stream_steps(count: int, streams: int, pad: bool) -> int:
    """Steps to cover `count` windows in `streams` rows: all of them (pad) or only whole steps."""
    return -(-count // streams) if pad else count // streams


def replica_streams(
    windows_fn: Callable[[int, int], tf.data.Dataset],
    count: int,
    streams: int,
    context: tf.distribute.InputContext,
    skip_steps: int = 0,
    pad: bool = False,
) -> tf.data.Dataset:
    """The batches of one input pipeline: per step, one (ids [b, L], weights [b]) per local replica.

    `windows_fn(start, n)` gives windows [start, start + n) of the split's `count`, in order. Stream s is
    the run of windows [s * steps, (s + 1) * steps); without `pad` the last
    count mod streams windows are left out (training), with it every window is
    kept and the rest is zero-weight padding (evaluation). Replica r of all
    replicas always gets rows [r * b, (r + 1) * b), so its carried state stays
    with its streams; a strategy hands a pipeline's consecutive elements to its
    local replicas in order.
    """
    steps = stream_steps(count, streams, pad)
    replicas = context.num_replicas_in_sync
    local = replicas // context.num_input_pipelines
    per_replica = streams // replicas
    first = context.input_pipeline_id * local * per_replica
    length = windows_fn(0, 1).element_spec.shape[0]
    padding = tf.data.Dataset.from_tensors((tf.zeros([length], tf.int32), tf.constant(0.0)))

    def row(stream: tf.Tensor) -> tf.data.Dataset:
        real = tf.clip_by_value(count - stream * steps, 0, steps)
        windows = windows_fn(stream * steps, real).map(lambda ids: (ids, tf.constant(1.0)))
        return windows.concatenate(padding.repeat(steps - real)).skip(skip_steps)

    # One reader per row, read in turn (row 0's next window, row 1's, ...): an interleave over the rows
    # builds one pipeline whatever the batch size (one per row was slow to build at large batch sizes;
    # bench/README.md, "Speed against PyTorch").
    rows = local * per_replica
    streams_of_pipeline = tf.data.Dataset.range(first, first + rows)
    interleaved = streams_of_pipeline.interleave(row, cycle_length=max(rows, 1), block_length=1)  # sequential: in order
    batches = interleaved.batch(per_replica)
    return batches.prefetch(tf.data.AUTOTUNE)
