"""Loss, metrics and the per-replica train/eval steps: plain functions over tensors.

The loop (`trainer.loop`) runs the replica steps under `strategy.run` inside
a `tf.function`; nothing here knows which strategy that is. Each window of
`window_length + 1` ids predicts every position: inputs ids[:, :-1],
targets ids[:, 1:].
"""

from __future__ import annotations

import keras
import tensorflow as tf

from trainer import lm

SUM = tf.distribute.ReduceOp.SUM
# Order of the figures an eval step sums (one float64 vector, reduced in one all-reduce).
EVAL_FIGURES = ("loss_sum", "tokens", "top1", "top5")


def split_window(ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """ids [b, L + 1] -> inputs [b, L], targets [b, L], target mask [b, L] float32.

    Padding (contract.PAD_ID, negative) ends a segment's last window: it is
    never a target (mask 0), and as an input (read as id 0) it only follows
    the window's real targets, so it changes none of their predictions.
    """
    real = ids >= 0
    safe = tf.where(real, ids, tf.zeros_like(ids))
    return safe[:, :-1], safe[:, 1:], tf.cast(real[:, 1:], tf.float32)


def eval_token_losses(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """The same cross-entropy without a gradient: [b, L, V], [b, L] -> [b, L] float32 (or [n, V], [n] -> [n]).

    Log-sum-exp over the vocabulary minus the target's logit: the fused op computes its gradient on every
    call, which evaluation never uses, and took 2.6 times as long forward at [700, 10k] logits
    (bench/cross_entropy_bench.py).
    """
    logits = tf.cast(logits, tf.float32)
    return tf.reduce_logsumexp(logits, axis=-1) - tf.gather(logits, targets, batch_dims=targets.shape.rank)


def clip_scale(global_norm: tf.Tensor, threshold: float) -> tf.Tensor:
    """The seed's exercise: threshold / norm when the norm exceeds the threshold, else 1."""
    return threshold / tf.maximum(global_norm, threshold)


def scale_gradients(grads: list, scale: tf.Tensor) -> list:
    """Multiplies every gradient (dense or IndexedSlices, as embeddings give) by `scale`."""
    scaled = []
    for grad in grads:
        if isinstance(grad, tf.IndexedSlices):
            values = grad.values * tf.cast(scale, grad.values.dtype)
            scaled.append(tf.IndexedSlices(values, grad.indices, grad.dense_shape))
        else:
            scaled.append(grad * tf.cast(scale, grad.dtype))
    return scaled


def eval_sums(logits: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor, mask: tf.Tensor | None = None) -> tf.Tensor:
    """[loss_sum, tokens, top1 hits, top5 hits] float64 over windows weighted 1 (real) or 0 (padding).

    logits [b, L, V], targets [b, L], weights [b], mask [b, L] (1: a real target; None: all are).
    Ties at the k-th logit count as hits (tf.nn.in_top_k).
    """
    token_weights = tf.broadcast_to(weights[:, None], tf.shape(targets))  # [b, L]
    if mask is not None:
        token_weights = token_weights * mask
    flat_logits = tf.reshape(tf.cast(logits, tf.float32), [-1, tf.shape(logits)[-1]])  # [b*L, V]
    flat_targets = tf.reshape(targets, [-1])
    flat_weights = tf.reshape(token_weights, [-1])
    losses = eval_loss_kernel(flat_logits, flat_targets)

    def weighted(values):
        return tf.reduce_sum(tf.cast(values, tf.float64) * tf.cast(flat_weights, tf.float64))

    return tf.stack(
        [
            weighted(losses),
            weighted(tf.ones_like(losses)),
            weighted(tf.nn.in_top_k(flat_targets, flat_logits, 1)),
            weighted(tf.nn.in_top_k(flat_targets, flat_logits, 5)),
        ]
    )


# Plain TF ops, no XLA cluster: compiling one (jit_compile) at the first validation crashed processes with
# SIGSEGV inside XLA's CPU compiler, rarely and at random, and cost them their epoch (bench/xla_stress.py).
# The bench swaps this for the old cluster to count crashes and time both.
eval_loss_kernel = eval_token_losses


def forward(model: keras.Model, inputs: tf.Tensor, states: tuple, training: bool) -> tuple[tf.Tensor, tuple]:
    """logits [b, L, V] and the LSTM states after the window (empty without carried state)."""
    if not states:
        return model(inputs, training=training), ()
    logits, *final = model([inputs, *states], training=training)
    return logits, tuple(tf.cast(s, tf.float32) for s in final)


def train_losses(model: keras.Model, inputs: tf.Tensor, states: tuple, targets: tf.Tensor) -> tuple[tf.Tensor, tuple]:
    """Cross-entropy per target [b, L] (training mode) and the states after the window.

    The head's own target log-probabilities (trainer/lm.py): the adaptive one (trainer/adaptive.py)
    computes only each target's, never the whole vocabulary's.
    """
    view = lm.of(model)
    hidden, new_states = view.hidden(inputs, states, training=True)
    return -view.head.target_log_probs(hidden, targets), new_states


def zero_states(model: keras.Model, batch: int) -> tuple:
    """Zero states per recurrent layer (LSTM: h, c), [batch, units] float32; empty for a stateless model."""
    return lm.of(model).zero_states(batch)


def replica_train_step(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    ids: tf.Tensor,
    states: tuple,
    stop_votes: tf.Tensor,
    global_batch: int,
    clip_norm: float,
) -> tuple[tf.Tensor, tuple]:
    """One optimizer step on one replica's ids [b, L + 1].

    The loss is the sum over this replica's tokens divided by the global
    token count, so gradients summed over replicas are the global mean. The
    clipping norm is that of the summed gradient (what one device would see);
    the optimizer then sums the scaled replica gradients itself. `stop_votes`
    [n] float32 are this replica's reasons to stop; returns the all-reduced
    [global mean loss, *stop votes] and the states after the window.
    """
    inputs, targets, mask = split_window(ids)
    # A constant denominator (every position of the global batch) keeps replicas independent of each other's padding.
    tokens = tf.cast(global_batch * tf.shape(targets)[1], tf.float32)
    with tf.GradientTape() as tape:
        losses, new_states = train_losses(model, inputs, states, targets)
        loss = tf.reduce_sum(losses * mask) / tokens
    variables = model.trainable_variables
    grads = tape.gradient(loss, variables)
    context = tf.distribute.get_replica_context()
    if clip_norm > 0:
        summed = context.all_reduce(SUM, grads)
        grads = scale_gradients(grads, clip_scale(tf.linalg.global_norm(summed), clip_norm))
    optimizer.apply(grads, variables)
    figures = context.all_reduce(SUM, tf.concat([loss[None], stop_votes], axis=0))
    return figures, new_states


# Evaluation's output layer and figures run this many time steps at a time (all of them where the window's
# length is unknown when traced).
EVAL_HEAD_STEPS = 5


def replica_eval_step(
    model: keras.Model, ids: tf.Tensor, weights: tf.Tensor, states: tuple, stop_votes: tf.Tensor | None = None
) -> tuple[tf.Tensor, tuple]:
    """EVAL_FIGURES summed over all replicas (then `stop_votes` [n] summed, if given), and this replica's
    states after the window.

    The logits [b, L, V] are made and reduced EVAL_HEAD_STEPS time steps at a time, so that each block
    ([b, 5, V]: 4 MB at batch 20 with 10k words) is still in cache when cast, biased and reduced, where
    the whole window's (28 MB) went to memory and back at each pass: at 2x200, faster evaluation steps in
    bf16 and in float32 (bench/results/peer_levers.json).
    """
    inputs, targets, mask = split_window(ids)
    view = lm.of(model)
    hidden, new_states = view.hidden(inputs, states, training=False)
    length = targets.shape[1]  # None: unknown when traced, one block of all (-1)
    starts = range(0, length, EVAL_HEAD_STEPS) if length else [0]
    sizes = [min(EVAL_HEAD_STEPS, length - start) if length else -1 for start in starts]
    hidden, targets, mask = (tf.split(t, sizes, axis=1) for t in (hidden, targets, mask))
    blocks = zip(view.head.call_blocks(hidden), targets, mask, strict=True)
    figures = tf.add_n([eval_sums(logits, t, weights, m) for logits, t, m in blocks])
    if stop_votes is not None:  # in the same all-reduce: every worker learns of a stop at the same step
        figures = tf.concat([figures, tf.cast(stop_votes, tf.float64)], axis=0)
    return tf.distribute.get_replica_context().all_reduce(SUM, figures), new_states
