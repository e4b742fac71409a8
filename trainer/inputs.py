"""Distributed inputs for the loop: shuffled windows, or ordered streams when state is carried."""

from __future__ import annotations

import functools

import keras
import numpy as np
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
        self._ordered: dict[str, tuple[np.ndarray, np.ndarray]] = {}
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
            return self._layout("train")[0].shape[0]
        return self.spec.windows("train") // self.global_batch

    def _layout(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Ordered streams of a split (carry_state), read once: ids [steps, streams, L + 1], weights."""
        if split not in self._ordered:
            windows = streams.read_windows(self.spec, split)
            streams.check_in_order(self.spec, split, windows)
            self._ordered[split] = streams.stream_layout(windows, self.global_batch, pad=split != "train")
        return self._ordered[split]

    def train(self, epoch: int, skip_batches: int):
        """The distributed batches of one epoch, from batch `skip_batches` on."""
        if self.cfg.carry_state:
            ids, weights = self._layout("train")

            def dataset_fn(context):
                ordered = streams.replica_dataset(ids, weights, context, skip_batches)
                return ordered.map(lambda window_ids, _weights: window_ids)

            return self.strategy.distribute_datasets_from_function(dataset_fn)
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
            ids, weights = self._layout(split)
            dataset_fn = functools.partial(streams.replica_dataset, ids, weights)
            return self.strategy.distribute_datasets_from_function(dataset_fn), ids.shape[0]
        dataset = data.eval_dataset(self.spec, split, self.global_batch)
        batches = data.eval_batches(self.spec, split, self.global_batch)
        return self.strategy.experimental_distribute_dataset(dataset), batches
