"""The model's large matmuls, over the last axis as one 2-D matmul, in float32 or bf16 (train.mixed_precision)."""

from __future__ import annotations

import tensorflow as tf

FLOAT32 = "float32"
BFLOAT16 = "bfloat16"


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
