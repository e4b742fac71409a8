"""Pure parts of the trainer, with exact expected values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from trainer import data, evaluate, lm, optim, steps, streams
from trainer.strategy import ClusterError, Worker, lost_peers_reported, worker_from_tf_config

pytestmark = pytest.mark.unit


def test_split_window_predicts_every_position():
    ids = tf.constant([[5, 6, 7, 8], [1, 2, 3, 4]])
    inputs, targets, mask = steps.split_window(ids)
    assert inputs.numpy().tolist() == [[5, 6, 7], [1, 2, 3]]
    assert targets.numpy().tolist() == [[6, 7, 8], [2, 3, 4]]
    assert mask.numpy().tolist() == [[1, 1, 1], [1, 1, 1]]


def test_padding_is_never_a_target_and_reads_as_id_zero():
    inputs, targets, mask = steps.split_window(tf.constant([[5, 6, -1, -1]]))
    assert inputs.numpy().tolist() == [[5, 6, 0]]
    assert targets.numpy().tolist() == [[6, 0, 0]]
    assert mask.numpy().tolist() == [[1, 0, 0]]
    logits = tf.math.log(tf.constant([[[0.5, 0.5], [0.9, 0.1], [0.9, 0.1]]]))  # [1, 3, 2]
    sums = steps.eval_sums(logits, tf.constant([[1, 0, 0]]), tf.constant([1.0]), mask).numpy()
    assert sums[1] == 1 and sums[0] == pytest.approx(math.log(2))  # one token, the padded two left out


def test_clip_scale_is_threshold_over_norm_only_above_threshold():
    assert float(steps.clip_scale(tf.constant(10.0), 5.0)) == pytest.approx(0.5)
    assert float(steps.clip_scale(tf.constant(2.0), 5.0)) == 1.0
    assert float(steps.clip_scale(tf.constant(5.0), 5.0)) == 1.0


def test_scale_gradients_scales_dense_and_sparse_alike():
    dense = tf.constant([[3.0, 4.0]])
    sparse = tf.IndexedSlices(tf.constant([[1.0, 2.0]]), tf.constant([3]), tf.constant([5, 2]))
    scaled_dense, scaled_sparse = steps.scale_gradients([dense, sparse], tf.constant(0.5))
    assert scaled_dense.numpy().tolist() == [[1.5, 2.0]]
    assert isinstance(scaled_sparse, tf.IndexedSlices)
    assert scaled_sparse.values.numpy().tolist() == [[0.5, 1.0]]
    assert scaled_sparse.indices.numpy().tolist() == [3]


def test_clipped_gradients_have_the_threshold_as_global_norm():
    grads = [tf.constant([3.0, 0.0]), tf.constant([[0.0], [4.0]])]  # global norm 5
    clipped = steps.scale_gradients(grads, steps.clip_scale(tf.linalg.global_norm(grads), 1.0))
    assert float(tf.linalg.global_norm(clipped)) == pytest.approx(1.0)


def test_eval_sums_weights_out_padding_and_counts_top_k():
    # Two windows of two positions over a vocabulary of 6; the second window is padding.
    logits = tf.constant(
        [
            [[0.0, 5.0, 4.0, 3.0, 2.0, 1.0], [0.0, 1.0, 2.0, 3.0, 4.0, 9.0]],
            [[9.0, 0.0, 0.0, 0.0, 0.0, 0.0], [9.0, 0.0, 0.0, 0.0, 0.0, 0.0]],
        ]
    )
    targets = tf.constant([[1, 0], [3, 3]])
    sums = steps.eval_sums(logits, targets, tf.constant([1.0, 0.0])).numpy()
    expected_loss = float(lm.token_losses(logits[:1], targets[:1]).numpy().sum())
    assert sums[0] == pytest.approx(expected_loss)
    # 2 tokens; target 1 is the top logit, target 0 ranks sixth.
    assert sums[1:].tolist() == [2.0, 1.0, 1.0]


def test_the_evaluation_cross_entropy_equals_the_fused_training_one():
    logits = tf.random.stateless_normal([2, 5, 300], seed=[3, 4]) * 8.0  # peaked, as trained logits are
    targets = tf.random.stateless_uniform([2, 5], seed=[5, 6], maxval=300, dtype=tf.int32)
    fused, ours = lm.token_losses(logits, targets).numpy(), steps.eval_token_losses(logits, targets).numpy()
    np.testing.assert_allclose(ours, fused, rtol=1e-6, atol=1e-5)


def test_token_losses_of_uniform_logits_are_log_vocab():
    losses = lm.token_losses(tf.zeros([1, 3, 8]), tf.constant([[0, 3, 7]]))
    assert losses.numpy() == pytest.approx(np.full([1, 3], math.log(8)))


def test_summarize_gives_perplexity_and_accuracies():
    metrics = evaluate.summarize(np.array([2 * math.log(4.0) * 10, 20.0, 5.0, 15.0]))
    assert metrics == {
        "loss": pytest.approx(2 * math.log(4.0) / 2),
        "perplexity": pytest.approx(4.0),
        "top1_accuracy": 0.25,
        "top5_accuracy": 0.75,
        "tokens": 20,
    }


def _rows(dataset) -> list:
    return [(i.numpy()[:, 0].tolist(), w.numpy().tolist()) for i, w in dataset]


def test_streams_rows_continue_their_stream():
    def windows(start, count):  # window i is [i, i, i]
        ids = (np.arange(7)[:, None] * np.ones([1, 3])).astype(np.int32)
        return tf.data.Dataset.from_tensor_slices(ids).skip(start).take(count)

    context = tf.distribute.InputContext()
    got = _rows(streams.replica_streams(windows, 7, streams=2, context=context, pad=False))
    assert got == [([0, 3], [1, 1]), ([1, 4], [1, 1]), ([2, 5], [1, 1])]  # window 6 left out
    got = _rows(streams.replica_streams(windows, 7, streams=2, context=context, pad=True))
    assert got == [([0, 4], [1, 1]), ([1, 5], [1, 1]), ([2, 6], [1, 1]), ([3, 0], [1, 0])]


def test_streams_give_each_replica_its_own_rows():
    def windows(start, count):  # 8 windows, 4 streams of 2 steps: stream s holds windows 2s and 2s + 1
        return tf.data.Dataset.from_tensor_slices(np.arange(8, dtype=np.int32)[:, None]).skip(start).take(count)

    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=4)
    got = _rows(streams.replica_streams(windows, 8, streams=4, context=context))
    # Pipeline 1 serves replicas 2 and 3 (streams 2 and 3), one element per replica per step.
    assert got == [([4], [1.0]), ([6], [1.0]), ([5], [1.0]), ([7], [1.0])]
    skipped = streams.replica_streams(windows, 8, streams=4, context=context, skip_steps=1)
    assert [ids for ids, _ in _rows(skipped)] == [[5], [7]]


def test_continuity_tells_ordered_from_shuffled_windows():
    stream = np.arange(100)
    ordered = np.stack([stream[i : i + 5] for i in range(0, 95, 4)])  # stride 4, record length 5
    assert streams.continuity(ordered) == 1.0
    shuffled = ordered[np.random.default_rng(0).permutation(len(ordered))]
    assert streams.continuity(shuffled) < 0.2


def test_auto_shard_policy_files_when_enough_else_data():
    assert data.auto_shard_policy(4, 2) == tf.data.experimental.AutoShardPolicy.FILE
    assert data.auto_shard_policy(2, 2) == tf.data.experimental.AutoShardPolicy.FILE
    assert data.auto_shard_policy(1, 2) == tf.data.experimental.AutoShardPolicy.DATA


def test_epoch_decay_follows_zaremba_schedule():
    schedule = optim.EpochDecay(1.0, 0.5, decay_after_epochs=2, steps_per_epoch=10)
    rates = [float(schedule(step)) for step in (0, 9, 10, 19, 20, 30, 45)]
    assert rates == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25, 0.125]


def test_worker_from_tf_config():
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    first = worker_from_tf_config(json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    second = worker_from_tf_config(json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert first == Worker("worker", 0, 2, is_chief=True)
    assert not second.is_chief
    with_chief = {"chief": ["h:1"], "worker": ["h:2"]}
    worker = worker_from_tf_config(json.dumps({"cluster": with_chief, "task": {"type": "worker", "index": 0}}))
    assert worker.num_workers == 2 and not worker.is_chief


def test_bad_tf_config_is_one_line_error():
    with pytest.raises(ValueError, match=r"^TF_CONFIG: not a valid cluster description") as err:
        worker_from_tf_config('{"cluster": {}}')
    assert "\n" not in str(err.value)


# What TF 2.21 raised in the worker that survived a `kill -9` of its peer (op traceback shortened).
_PEER_RESET = """Graph execution error:

Detected at node CollectiveReduceV2 defined at (most recent call last):
  File "/work/main/trainer/loop.py", line 135, in _distributed_train_step
Collective ops is aborted by: recvmsg:Connection reset by peer
Additional GRPC error information from remote target /job:worker/replica:0/task:1 while calling RecvBuf:
The error could be from a previous operation. Restart your program to reset.
\t [[{{node CollectiveReduceV2}}]] [Op:__inference__distributed_train_step_1596]"""


def test_lost_peer_is_one_line_naming_the_checkpoint_a_rerun_resumes_from(tmp_path):
    worker = Worker("worker", 0, 2, is_chief=True)
    lost = (
        "worker 0 lost contact with the cluster (UnavailableError: Collective ops is aborted by: "
        "recvmsg:Connection reset by peer); rerun all 2 workers: "
    )
    with pytest.raises(ClusterError) as err, lost_peers_reported(worker, str(tmp_path)):
        raise tf.errors.UnavailableError(None, None, _PEER_RESET)
    assert str(err.value) == lost + f"training starts over (no checkpoint in {tmp_path} yet)"
    checkpoint = tf.train.Checkpoint(step=tf.Variable(1))
    tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=2).save(checkpoint_number=30)
    with pytest.raises(ClusterError) as err, lost_peers_reported(worker, str(tmp_path)):
        raise tf.errors.DeadlineExceededError(None, None, "Collective ops is aborted by: Deadline Exceeded\nRPC: x")
    assert str(err.value).endswith(f"training resumes from step 30, the last checkpoint in {tmp_path}")
    assert "(DeadlineExceededError: Collective ops is aborted by: Deadline Exceeded)" in str(err.value)


def test_errors_that_are_not_a_lost_peer_pass_unchanged(tmp_path):
    two, one = Worker("worker", 0, 2, is_chief=True), Worker("worker", 0, 1, is_chief=True)
    outage = tf.errors.UnavailableError(None, None, "Error executing an HTTP request: HTTP response code 503")
    for worker, error in [(two, outage), (one, tf.errors.UnavailableError(None, None, _PEER_RESET))]:
        with pytest.raises(tf.errors.UnavailableError) as err, lost_peers_reported(worker, str(tmp_path)):
            raise error
        assert err.value is error
