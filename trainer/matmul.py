"""The model's large matmuls, over the last axis as one 2-D matmul, in float32 or bf16 (train.matmul_dtype)."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

FLOAT32 = "float32"
BFLOAT16 = "bfloat16"
# The x86 flags (Linux /proc/cpuinfo) of the units that make oneDNN's bf16 matmuls fast.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def dot_rows(
    x: tf.Tensor, kernel: tf.Tensor, dtype: str = FLOAT32, transpose_b: bool = False, bias: tf.Tensor | None = None
) -> tf.Tensor:
    """x [..., k] . kernel [k, v] (or [v, k] with transpose_b) + bias [v] -> [..., v] float32, computed in `dtype`.

    One 2-D matmul: an einsum over "..." was far slower, and a 3-D one misses oneDNN's bf16 kernels
    (slower in bf16). In bf16 the inputs are rounded to bf16 and the products summed in float32 (AMX /
    AVX512_BF16, several times as fast as float32); TF's MatMul has no bf16-in, float32-out form, so the
    result is rounded to bf16 before the cast back. The bias is added in float32 as a BiasAdd on the 2-D
    product, which oneDNN fuses into a float32 matmul (a faster evaluation step); a bf16 BiasAdd was
    slower than the cast and a float32 one. Measured in bench/README.md, "Speed against PyTorch".
    """
    flat = tf.reshape(x, [-1, tf.shape(x)[-1]])  # [rows, k]
    out = tf.matmul(tf.cast(flat, dtype), tf.cast(kernel, dtype), transpose_b=transpose_b)  # [rows, v]
    out = tf.cast(out, tf.float32)  # float32 already: no op, so the BiasAdd follows the MatMul
    if bias is not None:
        out = tf.nn.bias_add(out, bias)
    width = tf.shape(kernel)[0 if transpose_b else 1]
    return tf.reshape(out, tf.concat([tf.shape(x)[:-1], [width]], axis=0))


def bf16_units(cpuinfo: str) -> list[str]:
    """The BF16_CPU_FLAGS that a /proc/cpuinfo text lists for its first CPU (empty: none)."""
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return [flag for flag in BF16_CPU_FLAGS if flag in flags]


def cpu_bf16_units(cpuinfo_path: str = "/proc/cpuinfo") -> list[str]:
    """This machine's BF16_CPU_FLAGS (empty where the CPU has none or does not say: not Linux)."""
    try:
        return bf16_units(Path(cpuinfo_path).read_text())
    except OSError:
        return []


def choose_matmul_dtype(setting: str, gpu: bool, units: list[str]) -> tuple[str, str]:
    """(dtype, why) for train.matmul_dtype: "auto" is bf16 on a CPU with bf16 matmul units and no GPU.

    bf16 pays only where the CPU multiplies in bf16 natively (README: Speed against PyTorch); on a GPU
    the model is cuDNN's and bf16 was not measured, so "auto" keeps float32 there.
    """
    if setting != "auto":
        return setting, "train.matmul_dtype"
    if gpu:
        return FLOAT32, "auto: on a GPU"
    if units:
        units_named = ", ".join(units)
        return BFLOAT16, f"auto: this CPU has bf16 matmul units ({units_named}); train.matmul_dtype=float32 for float32"
    return FLOAT32, f"auto: this CPU has no bf16 matmul units ({', '.join(BF16_CPU_FLAGS)})"
