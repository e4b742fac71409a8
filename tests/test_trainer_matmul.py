"""trainer/matmul.py: the 2-D matmul every large product of the model goes through."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer.matmul import BFLOAT16, FLOAT32, bf16_units, choose_matmul_dtype, cpu_bf16_units, dot_rows

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


SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n\nprocessor\t: 1\n"
CASCADE_LAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"


def test_bf16_units_are_read_from_the_cpu_flags():
    assert bf16_units(SAPPHIRE_RAPIDS) == ["amx_bf16", "avx512_bf16"]
    assert bf16_units(CASCADE_LAKE) == []
    assert bf16_units("") == []


def test_auto_chooses_bf16_only_on_a_cpu_with_bf16_units_and_no_gpu(tmp_path):
    (tmp_path / "spr").write_text(SAPPHIRE_RAPIDS)
    (tmp_path / "clx").write_text(CASCADE_LAKE)
    spr, clx = cpu_bf16_units(str(tmp_path / "spr")), cpu_bf16_units(str(tmp_path / "clx"))
    assert cpu_bf16_units(str(tmp_path / "absent")) == []  # not Linux: no units known
    dtype, why = choose_matmul_dtype("auto", gpu=False, units=spr)
    assert dtype == BFLOAT16 and "(amx_bf16, avx512_bf16)" in why and "train.matmul_dtype=float32" in why
    assert choose_matmul_dtype("auto", gpu=False, units=clx)[0] == FLOAT32
    assert choose_matmul_dtype("auto", gpu=True, units=spr)[0] == FLOAT32  # cuDNN's model: bf16 not measured there
    assert choose_matmul_dtype("float32", gpu=False, units=spr) == (FLOAT32, "train.matmul_dtype")
    assert choose_matmul_dtype("bfloat16", gpu=False, units=clx) == (BFLOAT16, "train.matmul_dtype")
