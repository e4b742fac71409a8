"""Distributed inputs for the loop: shuffled windows, or ordered streams when state is carried."""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from nextword.config import TrainConfig
from trainer import data, steps, streams
from trainer.data import DataSpec
from trainer.strategy import Worker


class Inputs:
    """Per-epoch training batches and per-split evaluation batches, already distributed.

    Training elements are ids [b, L + 1] per replica; evaluation elements are
    (ids [b, L + 1], weights [b]), padding weighted 0.
    """

    def __init__(self, spec: DataSpec, cfg: TrainConfig, strategy: tf.distribute.Strategy, worker: Worker):
        self.spec = spec
        self.cfg = cfg
        self.strategy = strategy
        self.worker = worker
        self.global_batch = cfg.per_replica_batch_size * strategy.num_replicas_in_sync
        self._checked: set[str] = set()
        self._zero_states: dict = {}
        available = self._train_steps_available()
        if available < 1:
            raise ValueError(
                f"{spec.data_dir}: the train split has {spec.windows('train')} windows, fewer than one "
                f"global batch ({self.global_batch}); lower train.per_replica_batch_size"
            )
        requested = cfg.steps_per_epoch or available
        # Ordered streams run out; shuffled windows repeat.
        self.steps_per_epoch = min(requested, available) if cfg.carry_state else requested

    def initial_states(self, model: keras.Model):
        """Zero LSTM states on every replica (nothing for a stateless model)."""
        if model not in self._zero_states:
            zeros = functools.partial(steps.zero_states, model, self.cfg.per_replica_batch_size)
            self._zero_states[model] = tf.function(lambda: self.strategy.run(zeros))
        return self._zero_states[model]()

    def _train_steps_available(self) -> int:
        if self.cfg.carry_state:
            self._check_order("train")
        return self.spec.windows("train") // self.global_batch

    def _check_order(self, split: str) -> None:
        if split not in self._checked:
            streams.check_in_order(self.spec, split, streams.read_windows(self.spec, split))
            self._checked.add(split)

    def _streams(self, split: str, skip_steps: int = 0):
        """Ordered, distributed streams of a split (carry_state): per replica, ids [b, L + 1] (train)
        or (ids [b, L + 1], weights [b]) (evaluation, padding weighted 0)."""
        self._check_order(split)
        train = split == "train"

        def dataset_fn(context):
            windows = functools.partial(streams.window_records, self.spec, split)
            ordered = streams.replica_streams(
                windows, self.spec.windows(split), self.global_batch, context, skip_steps, pad=not train
            )
            return ordered.map(lambda ids, _weights: ids) if train else ordered

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def train(self, epoch: int, skip_batches: int):
        """The distributed batches of one epoch, from batch `skip_batches` on."""
        if self.cfg.carry_state:
            return self._streams("train", skip_batches)
        dataset = data.train_dataset(
            self.spec,
            self.global_batch,
            shuffle_buffer=self.cfg.shuffle_buffer,
            seed=self.cfg.seed * 1_000_003 + epoch,  # one fixed order per epoch
            skip_batches=skip_batches,
            num_workers=self.worker.num_workers,
        )
        return self.strategy.experimental_distribute_dataset(dataset)

    def evaluation(self, split: str) -> tuple[object, int]:
        """(distributed batches covering every window of `split` once, number of steps)."""
        if self.cfg.carry_state:
            steps = streams.stream_steps(self.spec.windows(split), self.global_batch, pad=True)
            return self._streams(split), steps
        dataset = data.eval_dataset(self.spec, split, self.global_batch)
        batches = data.eval_batches(self.spec, split, self.global_batch)
        return self.strategy.experimental_distribute_dataset(dataset), batches
