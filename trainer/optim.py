"""Optimizers from the config: Adam, or SGD with the PTB papers' per-epoch learning-rate decay."""

from __future__ import annotations

import keras
import tensorflow as tf

from nextword.config import OptimizerConfig


@keras.saving.register_keras_serializable(package="nextword")
class EpochDecay(keras.optimizers.schedules.LearningRateSchedule):
    """initial * decay ** max(epoch + 1 - decay_after_epochs, 0), epoch = step // steps_per_epoch.

    Zaremba et al. 2014: the first `decay_after_epochs` epochs at the initial
    rate, then one multiplication by `decay` per epoch.
    """

    def __init__(self, initial_learning_rate: float, decay: float, decay_after_epochs: int, steps_per_epoch: int):
        self.initial_learning_rate = initial_learning_rate
        self.decay = decay
        self.decay_after_epochs = decay_after_epochs
        self.steps_per_epoch = steps_per_epoch

    def __call__(self, step):
        epoch = tf.cast(step, tf.int64) // self.steps_per_epoch
        exponent = tf.cast(tf.maximum(epoch + 1 - self.decay_after_epochs, 0), tf.float32)
        return self.initial_learning_rate * tf.pow(tf.constant(self.decay, tf.float32), exponent)

    def get_config(self) -> dict:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay": self.decay,
            "decay_after_epochs": self.decay_after_epochs,
            "steps_per_epoch": self.steps_per_epoch,
        }


def make_optimizer(cfg: OptimizerConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Clipping is not the optimizer's job here: the train step clips the all-reduced gradient."""
    rate = (
        EpochDecay(cfg.learning_rate, cfg.decay, cfg.decay_after_epochs, steps_per_epoch)
        if cfg.decay < 1
        else cfg.learning_rate
    )
    decay = cfg.weight_decay or None
    optimizer = (
        keras.optimizers.SGD(rate, weight_decay=decay)
        if cfg.name == "sgd"
        else keras.optimizers.Adam(rate, weight_decay=decay)
    )
    if decay:
        optimizer.exclude_from_weight_decay(var_names=["bias"])
    return optimizer
