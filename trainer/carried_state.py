"""The carried recurrent states saved beside each checkpoint, so a resumed run continues its streams exactly.

With train.carry_state every batch row carries its recurrent state from one step
to the next. A checkpoint holds weights and the input position; this sidecar
holds the states at that position: `carried_state-worker<N>-<step>.npz` in the
checkpoint folder, one per worker (each has its own rows), arrays
`layer<i>` [local replicas, states per layer (LSTM: h, c; GRU: h), rows per replica, units] float32. It is
written before the checkpoint that uses it, read with allow_pickle=False, and
pruned with the checkpoints it belongs to.
"""

from __future__ import annotations

import io
import logging
import re

import numpy as np
import tensorflow as tf

from nextword import storage
from trainer.strategy import Worker

_LOG = logging.getLogger(__name__)


def _path(folder: str, worker: Worker, step: int) -> str:
    return storage.join(folder, f"carried_state-worker{worker.task_id}-{step}.npz")


def save(
    folder: str, worker: Worker, step: int, states: tuple, per_layer: list[int], strategy: tf.distribute.Strategy
) -> None:
    """Writes this worker's states (`per_layer[i]` of them for layer i; each [rows, units] per local replica)."""
    local = [strategy.experimental_local_results(s) for s in states]  # [states][local replicas]
    arrays, first = {}, 0
    for i, count in enumerate(per_layer):
        groups = zip(*local[first : first + count], strict=True)  # per replica: (h, c) or (h,)
        arrays[f"layer{i}"] = np.stack([np.stack([s.numpy() for s in group]) for group in groups])
        first += count
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    storage.makedirs(folder)  # the first checkpoint has not created it yet
    with storage.atomic_write(_path(folder, worker, step)) as f:  # a new file: never through a link
        f.write(buffer.getvalue())


def load(folder: str, worker: Worker, step: int, strategy: tf.distribute.Strategy):
    """The states saved at `step`, distributed as the train step takes them; None if there are none."""
    path = _path(folder, worker, step)
    if not tf.io.gfile.exists(path):
        _LOG.warning("%s: missing; the resumed streams start from a zero state (the result differs slightly)", path)
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        arrays = np.load(io.BytesIO(f.read()), allow_pickle=False)
        layers = [arrays[f"layer{i}"] for i in range(len(arrays.files))]
    local_replicas = layers[0].shape[0] if layers else 1

    def replica_values(index: int) -> tuple:
        return tuple(tf.constant(layer[index, kind]) for layer in layers for kind in range(layer.shape[1]))

    if strategy.num_replicas_in_sync == 1:
        return replica_values(0)
    # Global replica ids run worker by worker, so id mod local replicas is the index among this worker's.
    return strategy.experimental_distribute_values_from_function(
        lambda context: replica_values(context.replica_id_in_sync_group % local_replicas)
    )


_STEP = re.compile(r"carried_state-worker[0-9]+-([0-9]+)\.npz")


def prune(folder: str, keep_steps: set[int]) -> None:
    """Removes sidecars whose checkpoint is gone (the manager keeps only the newest few)."""
    for path in tf.io.gfile.glob(storage.join(folder, "carried_state-worker*-*.npz")):
        found = _STEP.fullmatch(path.rsplit("/", 1)[-1])
        if found and int(found.group(1)) not in keep_steps:
            tf.io.gfile.remove(path)


# Training zeroes one batch row's carried state every RESET_SPACING steps, the rows in turn, so the model keeps
# learning to predict from a zero state: evaluation starts every row from one, the bundle every line. Carried
# from the epoch's start alone, the first epoch's weights came to rely on a warm state, and from a zero one fell
# into a runaway cell state, validation far worse than uniform. Zeroing every row that often cost quality
# (bench/README.md, "Sparser state resets and the cooldown rule").
RESET_SPACING = 35


def reset_due_rows(states: tuple, step: tf.Tensor, rows_per_replica: int) -> tuple:
    """`states` (each [rows_per_replica, units]) with the row due at training step `step` zeroed: at every step
    that is a multiple of RESET_SPACING, the next global row in turn (replica i's row j is i * rows_per_replica
    + j); none at the others.

    Runs in a replica context; a function of the step alone, so a resumed run resets the rows the first would.
    """
    if not states:
        return states
    context = tf.distribute.get_replica_context()
    replica = tf.cast(context.replica_id_in_sync_group, tf.int64)
    rows = replica * rows_per_replica + tf.range(rows_per_replica, dtype=tf.int64)
    step = tf.cast(step, tf.int64)
    due_row = (step // RESET_SPACING) % (context.num_replicas_in_sync * rows_per_replica)
    keep = tf.logical_or(step % RESET_SPACING != 0, rows != due_row)
    keep = tf.cast(keep, tf.float32)[:, None]  # [rows, 1]
    return tuple(state * keep for state in states)
