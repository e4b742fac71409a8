"""The model's large matmuls, over the last axis as one 2-D matmul, in float32 or bf16 (train.mixed_precision)."""

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

    One 2-D matmul: an einsum over "..." was 190x slower here, and a 3-D one misses oneDNN's bf16
    kernels (2.1x slower in bf16). In bf16 the inputs are rounded to bf16 and the products summed in
    float32 (AMX / AVX512_BF16: 3.5x a float32 [700, 200] x [200, 10k] on this CPU); TF's MatMul has no
    bf16-in, float32-out form, so the result is rounded to bf16 before the cast back. The bias is added
    in float32 as a BiasAdd on the 2-D product, which oneDNN fuses into a float32 matmul (eval step
    1.1x at 2x200); a bf16 BiasAdd was slower than the cast and a float32 one.
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


def bf16_hint(cpuinfo_path: str = "/proc/cpuinfo") -> str | None:
    """One line for a float32 run on a CPU with bf16 units: how much train.mixed_precision gives there.

    The default stays float32, so that every figure keeps one meaning; users who want the speed are told.
    None where the CPU has no such units or does not say (not Linux).
    """
    try:
        units = bf16_units(Path(cpuinfo_path).read_text())
    except OSError:
        return None
    if not units:
        return None
    return (
        f"this CPU has bf16 matmul units ({', '.join(units)}): train.mixed_precision=true runs the large matmuls "
        "in bf16, 1.2x-1.5x the tokens/s of float32 with a 10k vocabulary, less with a small one (the output "
        "layer gains most), perplexity within 1% in our runs (README: Speed against PyTorch)"
    )
