"""Carried-state training restarts each batch row from a zero state in turn (trainer/carried_state.py).

Carried from the epoch's start alone, the first epoch's weights came to rely on a warm state: from the zero
state evaluation starts every row with (and the bundle every line) they fell into a runaway cell state, and
validation after epoch 1 was far worse than uniform (bench/README.md, "Quality").
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from nextword import config as config_lib
from tests.support.trainer import train_args
from trainer import carried_state, steps, streams
from trainer.main import set_up, training_loop


def test_each_row_restarts_from_a_zero_state_once_every_reset_period(ordered, tmp_path):
    model_dir = tmp_path / "model"
    last_step = carried_state.RESET_PERIOD  # the last step's index: row 0 is due (step + row) % period == 0
    # A learning rate too small to move the weights: the states saved with the stop are those the trained
    # model computes, and can be recomputed from it.
    args = train_args(
        ordered, model_dir, "train.carry_state=true", f"train.max_steps={last_step + 1}",
        "train.optimizer.learning_rate=1e-12", "train.matmul_dtype=float32",
    )  # fmt: skip
    config = config_lib.load(None, args[1::2])
    with training_loop(set_up(config)) as loop:  # training alone: no final evaluation, no export
        loop.fit(loop.restore())
        rows = loop.cfg.per_replica_batch_size
        windows = streams.read_windows(loop.inputs.spec, "train")
        per_row = len(windows) // rows  # row r reads windows [r * per_row, (r + 1) * per_row)
        last = tf.constant(windows[[r * per_row + last_step for r in range(rows)]])
        inputs, _targets, _mask = steps.split_window(last)
        _logits, (h_zero, c_zero) = steps.forward(loop.model, inputs, steps.zero_states(loop.model, rows), False)
    saved = np.load(model_dir / "checkpoints" / f"carried_state-worker0-{last_step + 1}.npz", allow_pickle=False)
    h_saved, c_saved = saved["layer0"][0]  # replica 0: h, c [rows, units]
    due = [(last_step + r) % carried_state.RESET_PERIOD == 0 for r in range(rows)]
    assert due[0] and not any(due[1:])
    # Row 0 started its last window from zero; the others carried their state into it.
    np.testing.assert_allclose(h_saved[0], h_zero[0], atol=1e-5)
    np.testing.assert_allclose(c_saved[0], c_zero[0], atol=1e-5)
    assert all(np.abs(c_saved[r] - c_zero[r]).max() > 1e-3 for r in range(1, rows))
