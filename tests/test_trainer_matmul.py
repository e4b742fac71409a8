"""trainer/matmul.py: the 2-D matmul every large product of the model goes through."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer.matmul import BFLOAT16, dot_rows

pytestmark = pytest.mark.unit

RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 3, 5)).astype("float32")
KERNEL = RNG.normal(size=(5, 7)).astype("float32")
BIAS = RNG.normal(size=(7,)).astype("float32")


def test_float32_is_the_matmul_over_the_last_axis_plus_the_bias():
    got = dot_rows(tf.constant(X), tf.constant(KERNEL), bias=tf.constant(BIAS)).numpy()
    np.testing.assert_allclose(got, X @ KERNEL + BIAS, rtol=1e-5, atol=1e-5)
    transposed = dot_rows(tf.constant(X), tf.constant(KERNEL.T), transpose_b=True).numpy()
    np.testing.assert_allclose(transposed, X @ KERNEL, rtol=1e-5, atol=1e-5)


def test_bf16_returns_float32_within_bf16_rounding():
    got = dot_rows(tf.constant(X), tf.constant(KERNEL), BFLOAT16, bias=tf.constant(BIAS)).numpy()
    want = X @ KERNEL + BIAS
    assert got.dtype == np.float32 and got.shape == (2, 3, 7)
    assert 0 < np.abs(got - want).max() < 0.05 * np.abs(want).max()
