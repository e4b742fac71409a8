"""Carried-state training restarts one batch row from a zero state every RESET_SPACING steps, the rows in turn
(trainer/carried_state.py).

Carried from the epoch's start alone, the first epoch's weights came to rely on a warm state: from the zero
state evaluation starts every row with (and the bundle every line) they fell into a runaway cell state, and
validation after epoch 1 was far worse than uniform (bench/README.md, "Quality").
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from nextword import config as config_lib
from tests.support.trainer import train_args
from trainer import carried_state, steps, streams
from trainer.main import set_up, training_loop


@pytest.mark.unit
def test_one_row_restarts_every_reset_spacing_steps_the_rows_in_turn():
    spacing, rows = carried_state.RESET_SPACING, 4
    states = (tf.ones([rows, 2]), tf.ones([rows, 2]))

    def zeroed_rows(step: int) -> list[int]:
        h, c = carried_state.reset_due_rows(states, tf.constant(step, tf.int64), rows)
        np.testing.assert_array_equal(h.numpy(), c.numpy())
        return [r for r in range(rows) if not h[r].numpy().any()]

    assert [zeroed_rows(k * spacing) for k in range(rows + 2)] == [[0], [1], [2], [3], [0], [1]]
    assert all(zeroed_rows(step) == [] for step in range(1, spacing))


def test_the_due_row_trains_from_a_zero_state_and_the_others_carry_theirs(ordered, tmp_path):
    model_dir = tmp_path / "model"
    last_step = carried_state.RESET_SPACING  # the last step's index: the second reset, row 1's
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
    # Row 1 started its last window from zero; the others carried their state into it.
    np.testing.assert_allclose(h_saved[1], h_zero[1], atol=1e-5)
    np.testing.assert_allclose(c_saved[1], c_zero[1], atol=1e-5)
    assert all(np.abs(c_saved[r] - c_zero[r]).max() > 1e-3 for r in range(rows) if r != 1)
