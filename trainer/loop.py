"""The custom distributed training loop: `strategy.run` inside a `tf.function`, one step at a time.

Keras 3's `model.fit` fails under MultiWorkerMirroredStrategy in TF 2.21
(keras-team/keras#20585); this loop avoids it and decides when to checkpoint (trainer/checkpoints.py):

- A checkpoint is written every `checkpoint_every_steps` steps, at each epoch
  end both before its validation (which a crash or kill there resumes at) and
  after it, and when stopping.
- A rerun restores the latest one and rebuilds that epoch's input order
  (fixed by the seed and the epoch), skipping the batches already done:
  `kill -9` costs at most one checkpoint interval of steps.
- SIGTERM (Vertex AI's preemption notice) or the time budget makes every
  worker vote to stop; the votes are summed in the step's all-reduce, so all
  workers stop after the same step, write the checkpoint together and exit.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from nextword import storage
from nextword.artifacts import versioned
from nextword.artifacts.model_dir import HISTORY_FILE
from nextword.cli import cli_common
from nextword.config import TrainConfig
from trainer import carried_state
from trainer.checkpoints import Checkpoints
from trainer.evaluate import Evaluator
from trainer.inputs import Inputs
from trainer.steps import replica_train_step
from trainer.strategy import Worker

_LOG = logging.getLogger(__name__)

SUMMARY_SPLITS = ("train", "valid")  # TensorBoard runs under <model_dir>/logs/
# Validation loss (nats/token) an epoch must gain to count as progress: 0.2% of perplexity. Smaller
# gains, as a decayed learning rate gives epoch after epoch, would keep early stopping from ever stopping.
MIN_IMPROVEMENT = 0.002
# Stop votes, in the order the train step sums them.
_BUDGET, _PREEMPTED, _ELAPSED = 0, 1, 2  # votes; _ELAPSED: this replica's fraction of the time budget


# Nats per token past which training has diverged: perplexity e^700 is no model of any vocabulary
# (uniform over a million words is e^13.8), and exp() overflows a float a little further (e^709.8).
DIVERGED_LOSS = 700.0


class TrainingDiverged(ValueError):
    """The loss stopped being a number: the weights are lost, and nothing is written from them."""


class TrainingPreempted(cli_common.Stopped):
    """SIGTERM or Ctrl-C arrived (here or on another worker); the message names the checkpoint to resume from."""


@dataclass(frozen=True)
class FitResult:
    steps: int
    epochs: float  # epochs done, fractional when stopped inside one
    train_seconds: float
    stopped_by: str  # epochs | max_steps | time_budget | early_stopping
    resumed_from_step: int  # 0 for a fresh start
    history: list[dict]
    best_epoch: float  # the epoch (fractional if stopped inside one) whose weights the model now holds
    best_valid_loss: float


@contextlib.contextmanager
def stop_signals(raise_at_once: Callable[[int], BaseException] | None = None) -> Iterator[dict]:
    """{"raised": bool, "signum": int}, set when SIGTERM or Ctrl-C (SIGINT) arrives while the block runs.

    Ctrl-C is treated as SIGTERM: the step finishes and a checkpoint is written. A
    second Ctrl-C gets Python's default handling back, for a user who cannot wait.
    With `raise_at_once`, the signal raises raise_at_once(signum) wherever the block is, at once: for work
    with no step that every worker must end together (the chief's export).
    """
    flag = {"raised": False, "signum": signal.SIGTERM}
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum, frame):
        flag.update(raised=True, signum=signum)
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, previous[signal.SIGINT])
        if raise_at_once:
            raise raise_at_once(signum)
        _LOG.warning("%s: stopping after this step", signal.Signals(signum).name)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class TrainLoop:
    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        strategy: tf.distribute.Strategy,
        worker: Worker,
        inputs: Inputs,
        cfg: TrainConfig,
        fingerprint: str,
        heartbeat: Callable[[], None] | None = None,
    ):
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.worker = worker
        self.inputs = inputs
        self.cfg = cfg
        self.evaluator = Evaluator(model, strategy, inputs)
        self.checkpoints = Checkpoints(model, optimizer, strategy, worker, cfg, fingerprint, heartbeat)
        self.state = self.checkpoints.state
        self._resumed_states = None  # the carried states of a checkpoint taken inside an epoch
        self._budget_fraction = 0.0  # the share of the time budget the current rate was set for
        self._train_step = tf.function(self._distributed_train_step)
        self.history_path = storage.join(cfg.model_dir, HISTORY_FILE)
        self.writers: dict = {}  # the summary writers of fit()

    # --- compiled step -------------------------------------------------------
    def _distributed_train_step(self, iterator, states, votes):
        ids = next(iterator)
        train_step = functools.partial(
            replica_train_step,
            self.model,
            self.optimizer,
            global_batch=self.inputs.global_batch,
            clip_norm=self.cfg.optimizer.clip_global_norm,
        )

        def step(ids, states, votes):
            rows = self.cfg.per_replica_batch_size
            return train_step(ids, carried_state.reset_due_rows(states, self.optimizer.iterations, rows), votes)

        figures, states = self.strategy.run(step, args=(ids, states, votes))
        return self.strategy.experimental_local_results(figures)[0], states

    # --- checkpoints (trainer/checkpoints.py) ----------------------------------
    @property
    def step(self) -> int:
        return self.checkpoints.step

    def restore(self) -> int:
        """Restores the newest readable checkpoint, if any; returns its step (0: fresh start)."""
        step, self._resumed_states = self.checkpoints.restore()
        if step:
            self._apply_learning_rate()
        return step

    def save(self, epoch: int, batch: int, seconds: float, states: tuple = (), pending: tuple | None = None) -> None:
        inside_epoch = 0 < batch < self.inputs.steps_per_epoch
        self.checkpoints.save(epoch, batch, seconds, states, with_states=inside_epoch or bool(pending), pending=pending)

    def restore_best(self) -> None:
        self.checkpoints.restore_best()

    # --- the validation-driven schedule ------------------------------------------
    def _apply_learning_rate(self, budget_fraction: float | None = None) -> None:
        """The configured rate times the plateau scale and the budget's cooldown (a fixed decay schedule,
        decay < 1, runs alone).

        `budget_fraction` is the share of train.time_budget_s spent; None: the checkpoint's. Every worker
        passes the same figure (the checkpoint's, or the replicas' mean from the last step's all-reduce),
        so the replicas never step with different rates.
        """
        cfg = self.cfg.optimizer
        if cfg.decay < 1:
            return
        budget = self.cfg.time_budget_s
        if budget_fraction is None:
            budget_fraction = float(self.state.seconds.numpy()) / budget if budget else 0.0
        self._budget_fraction = budget_fraction
        cooldown = self._cooldown_scale(budget_fraction)
        self.optimizer.learning_rate = cfg.learning_rate * float(self.state.lr_scale.numpy()) * cooldown

    def _cooldown_scale(self, budget_fraction: float) -> float:
        """The time budget's cooldown factor on the rate with `budget_fraction` of it spent (1: not cooling
        down, or no budget, or the per-epoch decay setting the rate instead)."""
        cfg = self.cfg
        if not cfg.time_budget_s or cfg.optimizer.decay < 1:
            return 1.0
        return budget_cooldown_scale(budget_fraction, cfg.optimizer.budget_cooldown)

    def _track_best(self, valid_loss: float, done: float, schedule: bool) -> bool:
        """Keeps the best epoch's weights apart, lowers the rate on a plateau; True when patience ran out.

        Any better epoch becomes the best; only one better by MIN_IMPROVEMENT counts as progress for the
        schedule, except in the time budget's cooldown: there the rate already falls to zero on schedule, so
        each epoch gains less by design, any better epoch is progress and the plateau factor is not applied.
        The best weights are saved before the checkpoint that records them as best, so a kill in between makes
        the rerun redo the same comparison. Without `schedule` (a run stopping by budget or max_steps, often a
        few steps into an epoch) only the best is kept: a stub epoch says nothing about a plateau, and a
        resumed run goes on at the same rate.
        """
        best = float(self.state.best_loss.numpy())
        if valid_loss < best:  # NaN is never better
            self.state.best_loss.assign(valid_loss)
            self.state.best_epoch.assign(done)
            self.checkpoints.save_best()
        if not schedule:
            return False
        annealing = self._cooldown_scale(self._budget_fraction) < 1  # the rate already falls on schedule
        if valid_loss < best - (0.0 if annealing else MIN_IMPROVEMENT):
            self.state.bad_epochs.assign(0)
            return False
        self.state.bad_epochs.assign_add(1)
        factor = self.cfg.optimizer.plateau_factor
        if factor < 1 and self.cfg.optimizer.decay == 1 and not annealing:
            self.state.lr_scale.assign(self.state.lr_scale * factor)
            self._apply_learning_rate(self._budget_fraction)
            _LOG.info(
                "validation did not improve: learning rate x%g -> %.3g",
                factor,
                float(self.optimizer.learning_rate.numpy()),
            )
        patience = self.cfg.early_stopping_patience
        return bool(patience) and int(self.state.bad_epochs.numpy()) >= patience

    # --- history ---------------------------------------------------------------
    def _load_history(self, epoch: int) -> list[dict]:
        """Per-epoch records of earlier runs, before the epoch being resumed."""
        if not storage.exists(self.history_path):
            return []
        fix = "training rewrites it: remove it to start the record afresh (the checkpoints keep the weights)"
        history = versioned.read_json(self.history_path, fix, list)
        if not all(isinstance(h, dict) and isinstance(h.get("epoch"), int | float) for h in history):
            raise ValueError(f"{self.history_path}: damaged, a record without a numeric 'epoch'; {fix}")
        return [h for h in history if h["epoch"] <= epoch]

    def _write_history(self, history: list[dict]) -> None:
        if self.worker.is_chief:
            storage.write_text(self.history_path, json.dumps(history, indent=1, allow_nan=False) + "\n")

    # --- the loop ----------------------------------------------------------------
    def fit(self, resumed_from: int) -> FitResult:
        """Trains from the restored position (`restore()` first) to the end, a stop, or preemption."""
        cfg = self.cfg
        epoch, batch = int(self.state.epoch.numpy()), int(self.state.batch.numpy())
        history = self._load_history(epoch)
        steps_per_epoch = self.inputs.steps_per_epoch
        clock = _Clock(float(self.state.seconds.numpy()))
        self.writers = _summary_writers(cfg.model_dir, self.worker)
        with stop_signals() as sigterm:
            pending = self.state.pending()
            if pending:  # the checkpoint was written before a validation that never finished: run it now
                _LOG.info("validating the steps before the checkpoint (the last run stopped during validation)")
                states = self._resumed_states or ()
                epoch, batch, _ = self._validate(epoch, batch, pending, states, history, clock, sigterm)
            stopped_by = "epochs"
            if cfg.max_steps and self.step >= cfg.max_steps:
                stopped_by = "max_steps"
            elif cfg.time_budget_s and clock() >= cfg.time_budget_s:
                stopped_by = "time_budget"
            elif cfg.early_stopping_patience and int(self.state.bad_epochs.numpy()) >= cfg.early_stopping_patience:
                stopped_by = "early_stopping"
            while epoch < cfg.epochs and stopped_by == "epochs":
                batch, train_loss, stopped_by, states = self._train_epoch(epoch, batch, clock, sigterm)
                pending = (train_loss, stopped_by)
                epoch, batch, stopped_by = self._validate(epoch, batch, pending, states, history, clock, sigterm)
        for writer in self.writers.values():
            writer.flush()
        self.restore_best()
        return FitResult(
            steps=self.step,
            epochs=epoch + batch / steps_per_epoch,
            train_seconds=clock(),
            stopped_by=stopped_by,
            resumed_from_step=resumed_from,
            history=history,
            best_epoch=float(self.state.best_epoch.numpy()),
            best_valid_loss=float(self.state.best_loss.numpy()),
        )

    def _validate(
        self, epoch: int, batch: int, pending: tuple, states: tuple, history: list, clock, sigterm: dict
    ) -> tuple[int, int, str]:
        """Validation after an epoch (or the part of one that a stop ended), between two checkpoints; returns
        the position after it and stopped_by (early_stopping when patience ran out).

        The checkpoint before it records the validation as pending, so a crash, kill or preemption during
        validation costs that validation, not the steps since the last interval's checkpoint.
        """
        train_loss, stopped_by = pending
        self.save(epoch, batch, clock(), states, pending=pending)
        done = epoch + min(batch / self.inputs.steps_per_epoch, 1.0)
        history.append(self._epoch_record(done, train_loss, clock(), sigterm))
        if self._track_best(history[-1]["valid_loss"], done, schedule=stopped_by == "epochs"):
            stopped_by = "early_stopping"
        history[-1]["best_epoch"] = float(self.state.best_epoch.numpy())
        self._write_history(history)
        if batch >= self.inputs.steps_per_epoch:
            epoch, batch = epoch + 1, 0
        self.save(epoch, batch, clock(), states)
        _LOG.info("epoch %.2f (step %d): %s", done, self.step, json.dumps(history[-1]))
        return epoch, batch, stopped_by

    def _train_epoch(self, epoch: int, batch: int, clock, sigterm: dict) -> tuple[int, float, str, tuple]:
        """Steps from `batch` to the end of the epoch or a stop: (batch reached, mean loss, stopped_by, states)."""
        cfg = self.cfg
        steps_per_epoch = self.inputs.steps_per_epoch
        iterator = iter(self.inputs.train(epoch, batch))
        resumed, self._resumed_states = self._resumed_states, None
        states = resumed if resumed is not None and batch > 0 else self.inputs.initial_states(self.model)
        progbar = keras.utils.Progbar(steps_per_epoch, verbose=_progbar_verbosity(self.worker), unit_name="step")
        progbar.update(batch)
        loss_sum, loss_steps = 0.0, 0
        while batch < steps_per_epoch:
            votes = np.zeros(3, np.float32)
            votes[_BUDGET] = bool(cfg.time_budget_s) and clock() >= cfg.time_budget_s
            votes[_PREEMPTED] = sigterm["raised"]
            votes[_ELAPSED] = clock() / cfg.time_budget_s if cfg.time_budget_s else 0.0
            figures, states = self._train_step(iterator, states, tf.constant(votes))
            loss, *summed_votes = figures.numpy()
            if cfg.optimizer.budget_cooldown:  # the next step's rate, from the same figure on every worker
                self._apply_learning_rate(float(summed_votes[_ELAPSED]) / self.strategy.num_replicas_in_sync)
            batch, step = batch + 1, self.step
            # All-reduced: every worker stops here; nothing is saved past this point.
            if not math.isfinite(loss) or loss > DIVERGED_LOSS:
                raise TrainingDiverged(
                    f"training diverged at step {step} (loss {loss}): nothing was saved or exported from these "
                    "weights; lower train.optimizer.learning_rate "
                    f"({cfg.optimizer.learning_rate:g}) or set train.optimizer.clip_global_norm, "
                    "and train again in a new train.model_dir"
                )
            loss_sum, loss_steps = loss_sum + float(loss), loss_steps + 1
            mean_loss = loss_sum / loss_steps
            progbar.update(batch, [("loss", mean_loss), ("perplexity", math.exp(mean_loss))])
            with self.writers["train"].as_default(step=step):
                tf.summary.scalar("loss", loss)
                tf.summary.scalar("learning_rate", float(self.optimizer.learning_rate.numpy()))
            if summed_votes[_PREEMPTED]:
                self.save(epoch, batch, clock(), states)
                raise TrainingPreempted(
                    f"stopped at step {step} for {signal.Signals(sigterm['signum']).name}; checkpoint written "
                    f"to {self.checkpoints.read_dir}: rerun the same command to resume",
                    sigterm["signum"],
                )
            if summed_votes[_BUDGET]:
                return batch, mean_loss, "time_budget", states
            if cfg.max_steps and step >= cfg.max_steps:
                return batch, mean_loss, "max_steps", states
            if batch < steps_per_epoch and step % cfg.checkpoint_every_steps == 0:
                self.save(epoch, batch, clock(), states)
                _LOG.info("step %d: checkpoint, mean loss %.4f in this epoch", step, mean_loss)
        return batch, loss_sum / loss_steps if loss_steps else float("nan"), "epochs", states

    def _epoch_record(self, done: float, train_loss: float, seconds: float, sigterm: dict) -> dict:
        """Validation after an epoch (or part of one), with the mean training loss of its steps run here.

        SIGTERM or Ctrl-C during it stops within a step: the checkpoint just before it is where a rerun resumes.
        """
        valid = self.evaluator("valid", stop_requested=lambda: sigterm["raised"])
        if valid is None:
            raise TrainingPreempted(
                f"stopped during validation for {signal.Signals(sigterm['signum']).name}; the checkpoint before "
                f"it (step {self.step}) is in {self.checkpoints.read_dir}: rerun the same command to resume",
                sigterm["signum"],
            )
        with self.writers["valid"].as_default(step=self.step):
            for name in ("loss", "perplexity", "top1_accuracy", "top5_accuracy"):
                tf.summary.scalar(name, valid[name])
        return {
            "epoch": round(done, 4),
            "step": self.step,
            "seconds": round(seconds, 1),
            "learning_rate": float(f"{float(self.optimizer.learning_rate.numpy()):.6g}"),
            "train_loss": train_loss,
            "train_perplexity": math.exp(train_loss),
            **{f"valid_{name}": value for name, value in valid.items()},
        }


def budget_cooldown_scale(fraction: float, cooldown: float) -> float:
    """1 until the last `cooldown` of the budget, then falling linearly to 0 at its end."""
    if cooldown <= 0:
        return 1.0
    return min(1.0, max(0.0, (1.0 - fraction) / cooldown))


class _Clock:
    """Training seconds: those of earlier runs (from the checkpoint) plus this run's."""

    def __init__(self, before: float):
        self._before = before
        self._start = time.monotonic()

    def __call__(self) -> float:
        return self._before + time.monotonic() - self._start


def _summary_writers(model_dir: str, worker: Worker) -> dict:
    if not worker.is_chief:
        return {split: tf.summary.create_noop_writer() for split in SUMMARY_SPLITS}
    return {split: tf.summary.create_file_writer(storage.join(model_dir, "logs", split)) for split in SUMMARY_SPLITS}


def _progbar_verbosity(worker: Worker) -> int:
    """A live bar on a terminal, one line per epoch in logs, nothing on non-chief workers."""
    if not worker.is_chief:
        return 0
    return 1 if sys.stdout.isatty() else 2
