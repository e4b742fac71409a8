"""The training run's checkpoints, apart from the loop: what they hold, restore, save, and the best epoch's copy.

- A checkpoint holds the model, the optimizer (its step counter included) and the `RunState`: the
  position (epoch, batch in it, training seconds), the data fingerprint and the validation-driven
  schedule's state, so that a resumed run decides as the first would.
- Restoring takes the newest readable checkpoint: an unfinished save's orphaned `*_temp` directory is
  removed, and a named checkpoint that cannot be read is skipped for the one before it.
- Every worker takes part in saving, but only the chief's copy is kept.
- A save never writes through a link: TensorFlow writes `ckpt-N.index` in place (it renames the data files
  and the state file into place), so whatever holds a save's names before it runs is removed first, a link as
  a link; a symbolic link's target and a hard-linked copy of the run (`cp -al`) keep their bytes.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable

import keras
import tensorflow as tf

from nextword import errors, storage
from nextword.config import TrainConfig
from trainer import carried_state, lm
from trainer.strategy import Worker

_LOG = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"  # the weights of the best validation epoch: what is evaluated and exported
# What an unfinished tf.train.CheckpointManager save leaves behind (and all a restart may delete).
_ORPHAN = re.compile(r"ckpt-[0-9]+_temp")
_NAMED = re.compile(r"ckpt-([0-9]+)\.index")


def checkpoint_dirs(model_dir: str, worker: Worker, name: str = CHECKPOINT_DIR) -> tuple[str, str]:
    """(where checkpoints are read from, where this worker writes them)."""
    shared = storage.join(model_dir, name)
    return shared, shared if worker.is_chief else storage.join(model_dir, "tmp", f"worker-{worker.task_id}-{name}")


def clear_names(folder: str, step: int) -> None:
    """Removes what holds the names a save of `step` writes in `folder` (the same step is saved again before
    and after its validation), never following a link. Cloud Storage has no links: an upload replaces an object.
    """
    if storage.is_remote(folder) or not os.path.isdir(folder):
        return
    prefix = f"ckpt-{step}"
    for name in os.listdir(folder):
        if name in (f"{prefix}.index", f"{prefix}_temp") or name.startswith(f"{prefix}.data-"):
            storage.remove_tree(os.path.join(folder, name))


class RunState:
    """What a checkpoint holds besides the model and the optimizer, as variables the checkpoint tracks."""

    def __init__(self, fingerprint: str):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.batch = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_epoch")
        self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="train_seconds")
        self.data_fingerprint = tf.Variable(fingerprint, dtype=tf.string, trainable=False, name="data_fingerprint")
        self.best_loss = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_valid_loss")
        self.best_epoch = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_epoch")
        self.bad_epochs = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_without_improvement")
        self.lr_scale = tf.Variable(1.0, dtype=tf.float64, trainable=False, name="learning_rate_scale")
        # A checkpoint written between an epoch's (or a stop's) last step and its validation: why the steps
        # stopped (fit()'s stopped_by; "" for a checkpoint with no validation pending) and their mean loss.
        self.pending_stop = tf.Variable("", dtype=tf.string, trainable=False, name="pending_validation_stop")
        self.pending_loss = tf.Variable(math.nan, dtype=tf.float64, trainable=False, name="pending_train_loss")

    def pending(self) -> tuple[float, str] | None:
        """(mean training loss, stopped_by) of the steps whose validation had not run; None if none."""
        stopped_by = self.pending_stop.numpy().decode()
        return (float(self.pending_loss.numpy()), stopped_by) if stopped_by else None

    def tracked(self, with_pending: bool = True) -> dict[str, tf.Variable]:
        """The checkpoint's names for the variables; without the pending validation's, as older runs wrote it."""
        pending = {"pending_validation_stop": self.pending_stop, "pending_train_loss": self.pending_loss}
        return {
            **(pending if with_pending else {}),
            "epoch": self.epoch,
            "batch": self.batch,
            "train_seconds": self.seconds,
            "data_fingerprint": self.data_fingerprint,
            "best_valid_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "epochs_without_improvement": self.bad_epochs,
            "learning_rate_scale": self.lr_scale,
        }


class Checkpoints:
    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        strategy: tf.distribute.Strategy,
        worker: Worker,
        cfg: TrainConfig,
        fingerprint: str,
        heartbeat: Callable[[], None] | None = None,
    ):
        self.model = model
        self.optimizer = optimizer
        self.state = RunState(fingerprint)
        self.strategy = strategy
        self.worker = worker
        self.carry_state = cfg.carry_state
        self.fingerprint = fingerprint
        self.heartbeat = heartbeat  # called at every checkpoint (the chief refreshes its model_dir lock)
        # The best epoch's weights of this process, in memory: on other workers the chief's copy on disk
        # may still be being written when training ends (reading it there gave workers different weights).
        self._best_weights: list | None = None
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, **self.state.tracked())
        self.read_dir, write_dir = checkpoint_dirs(cfg.model_dir, worker)
        self.manager = tf.train.CheckpointManager(self.checkpoint, write_dir, max_to_keep=cfg.keep_checkpoints)
        self.best_read_dir, best_write_dir = checkpoint_dirs(cfg.model_dir, worker, BEST_DIR)
        self.best = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), best_write_dir, max_to_keep=1)

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def restore(self) -> tuple[int, tuple | None]:
        """Restores the newest readable checkpoint, if any: (its step, 0 for none; the carried states of a
        checkpoint taken inside an epoch, else None).

        The manager names a checkpoint in its state file only after its files are
        complete, so a save that died midway leaves just an orphaned `*_temp`
        directory, removed here. A named checkpoint that still cannot be read (a
        copy cut short, a disk that lost the tail of a file) is skipped with a
        warning for the one before it: a resumable job loses one interval, not the run.
        """
        if self.worker.is_chief:
            self._remove_orphans()
        candidates = self._candidates()
        for path in candidates:
            try:
                self._layout_of(path).restore(path).assert_existing_objects_matched()
            except (ValueError, AssertionError) as err:
                raise ValueError(
                    f"{path}: does not fit this model ({errors.one_line(err)}); use a new train.model_dir "
                    "or the train.model settings it was made with"
                ) from None
            except (tf.errors.OpError, IndexError, OSError) as err:  # IndexError: TF's "read less bytes"
                _LOG.warning("%s: unreadable (%s); trying the checkpoint before it", path, errors.one_line(err))
                continue
            restored = self.state.data_fingerprint.numpy().decode()
            if restored != self.fingerprint:
                raise ValueError(
                    f"{path}: trained on data with fingerprint {restored}, but train.data_dir has "
                    f"{self.fingerprint}; use a new train.model_dir"
                )
            states = None
            if self.carry_state and int(self.state.batch.numpy()) > 0:
                states = carried_state.load(self.read_dir, self.worker, self.step, self.strategy)
            _LOG.info(
                "resumed from %s: step %d, epoch %d, batch %d, %.0f s trained",
                path,
                self.step,
                int(self.state.epoch.numpy()),
                int(self.state.batch.numpy()),
                float(self.state.seconds.numpy()),
            )
            return self.step, states
        if candidates:
            raise ValueError(
                f"{self.read_dir}: none of its {len(candidates)} checkpoints can be read (see the warnings); "
                "restore them from a copy or use a new train.model_dir"
            )
        return 0, None

    def _candidates(self) -> list[str]:
        """The checkpoints to try, newest first: those the state file names, or, where it is missing or
        damaged, every `ckpt-N.index` in the folder (a fresh start there would lose them to rotation)."""
        state = tf.train.get_checkpoint_state(self.read_dir)  # None for a missing or unparsable state file
        if state and state.all_model_checkpoint_paths:
            return list(reversed(state.all_model_checkpoint_paths))
        found = []
        for index in tf.io.gfile.glob(storage.join(self.read_dir, "ckpt-*.index")):
            number = _NAMED.fullmatch(index.rsplit("/", 1)[-1])
            if number:
                found.append((int(number.group(1)), index[: -len(".index")]))
        if found:
            _LOG.warning(
                "%s: its state file is missing or damaged; trying its %d checkpoint(s) from the newest",
                storage.join(self.read_dir, "checkpoint"),
                len(found),
            )
        return [path for _, path in sorted(found, reverse=True)]

    def _layout_of(self, path: str) -> tf.train.Checkpoint:
        """The checkpoint object that reads `path`: one written before the pending-validation variables has none."""
        names = {name.split("/", 1)[0] for name, _ in tf.train.list_variables(path)}
        if "pending_validation_stop" in names:
            return self.checkpoint
        self.state.pending_stop.assign("")
        return tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, **self.state.tracked(with_pending=False))

    def _remove_orphans(self) -> None:
        for folder in (self.read_dir, self.best_read_dir):
            for orphan in tf.io.gfile.glob(storage.join(folder, "ckpt-*_temp")):
                if not _ORPHAN.fullmatch(orphan.rstrip("/").rsplit("/", 1)[-1]):
                    continue
                _LOG.warning("%s: removing the leftovers of a checkpoint write that did not finish", orphan)
                storage.remove_tree(orphan)  # never through a link: only the link itself goes

    def save(
        self, epoch: int, batch: int, seconds: float, states: tuple, with_states: bool, pending: tuple | None = None
    ) -> None:
        """A checkpoint at this position; `with_states`, the carried states too (before it, see carried_state).

        `pending`: (mean training loss, stopped_by) of the steps just run, whose validation comes next.
        """
        self.state.epoch.assign(epoch)
        self.state.batch.assign(batch)
        self.state.seconds.assign(seconds)
        self.state.pending_loss.assign(pending[0] if pending else math.nan)
        self.state.pending_stop.assign(pending[1] if pending else "")
        if states and with_states:
            per_layer = lm.of(self.model).states_per_layer
            carried_state.save(self.read_dir, self.worker, self.step, states, per_layer, self.strategy)
        self._save_with(self.manager)
        if self.worker.is_chief:
            carried_state.prune(self.read_dir, {int(p.rsplit("-", 1)[-1]) for p in self.manager.checkpoints})
        if self.heartbeat:
            self.heartbeat()

    def save_best(self) -> None:
        """The model's weights as the best epoch's (before the checkpoint that records them as best)."""
        self._save_with(self.best)
        self._best_weights = self.model.get_weights()

    def _save_with(self, manager: tf.train.CheckpointManager) -> None:
        clear_names(manager.directory, self.step)
        manager.save(checkpoint_number=self.step)
        if not self.worker.is_chief:
            tf.io.gfile.rmtree(manager.directory)

    def restore_best(self) -> None:
        """Puts the best validation epoch's weights into the model (kept as they are if none was saved)."""
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)
            return
        latest = tf.train.latest_checkpoint(self.best_read_dir)  # written by an earlier process: complete
        if not latest:
            return
        try:
            tf.train.Checkpoint(model=self.model).restore(latest).assert_existing_objects_matched()
        except (tf.errors.OpError, IndexError, OSError, ValueError, AssertionError) as err:
            raise ValueError(
                f"{latest}: the best epoch's weights cannot be read ({errors.one_line(err)}); restore "
                f"{self.best_read_dir} from a copy, or remove it to use the latest checkpoint's weights instead"
            ) from None
