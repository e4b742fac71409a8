"""The one place that picks the tf.distribute strategy, from train.strategy and TF_CONFIG.

    local        the default strategy: one device (a GPU when there is one)
    mirrored     MirroredStrategy over all local GPUs, or over all logical CPU
                 devices when there is no GPU (tests split the CPU in two)
    multiworker  MultiWorkerMirroredStrategy; the cluster comes from TF_CONFIG,
                 which Vertex AI sets on each replica of a multi-worker job

No multi-worker wait is endless: a worker gives up joining after
train.cluster_join_timeout_s, and a worker that dies mid-run makes the others
fail with one ClusterError line (rerunning all of them resumes from the last
checkpoint) instead of hanging.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import tensorflow as tf

# TF has no public API for the coordination service's timeouts; these are the
# modules MultiWorkerMirroredStrategy itself configures it with.
from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
from tensorflow.python.distribute import multi_worker_util
from tensorflow.python.eager import context

from nextword.config import TrainConfig

# Worker 0 hosts TF's coordination service; every worker sends it heartbeats.
# A worker process that dies closes its connections and the others fail at
# their next collective op; a hung one, or one whose machine vanished, is
# declared dead after this long without a heartbeat (TF's default, made explicit).
HEARTBEAT_TIMEOUT_S = 10
# The errors TF raises once a peer is gone, and marks in their messages that
# tell them from, say, a storage outage.
_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError)
_CLUSTER_MARKS = ("Collective ops", "CoordinationService", "/job:")


@dataclass(frozen=True)
class Worker:
    """This process's place in the cluster."""

    task_type: str
    task_id: int
    num_workers: int
    # The chief keeps checkpoints and writes logs, metrics and the bundle; the others
    # only take part. It is the "chief" task, or worker 0 in a cluster without one.
    is_chief: bool


LOCAL_WORKER = Worker(task_type="worker", task_id=0, num_workers=1, is_chief=True)


def worker_from_tf_config(tf_config: str) -> Worker:
    """Reads a TF_CONFIG value: {"cluster": {"chief": [...], "worker": [...]}, "task": {"type", "index"}}."""
    try:
        value = json.loads(tf_config)
        cluster, task = value["cluster"], value["task"]
        num_workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
        task_type, task_id = task["type"], int(task["index"])
        is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)
        return Worker(task_type=task_type, task_id=task_id, num_workers=num_workers, is_chief=is_chief)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"TF_CONFIG: not a valid cluster description ({type(err).__name__}: {err}); "
            'expected {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'
        ) from None


def make_strategy(cfg: TrainConfig) -> tuple[tf.distribute.Strategy, Worker]:
    """The strategy for train.strategy, and this process's place in the cluster.

    Call it before any other TensorFlow work: a multi-worker strategy must set
    up the collective runtime before the first op runs.
    """
    if cfg.strategy == "local":
        return tf.distribute.get_strategy(), LOCAL_WORKER
    if cfg.strategy == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices), LOCAL_WORKER
    tf_config = os.environ.get("TF_CONFIG", "")
    if not tf_config:
        raise ValueError(
            "train.strategy: multiworker needs the TF_CONFIG environment variable "
            "(Vertex AI sets it; locally, set it on each worker process)"
        )
    worker = worker_from_tf_config(tf_config)
    return _join_cluster(worker, cfg.cluster_join_timeout_s), worker


class ClusterError(ConnectionError):
    """A worker could not join its cluster, or lost a peer; one line that says what to do."""


def _join_cluster(worker: Worker, join_timeout_s: float) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy, once every worker has joined (at most join_timeout_s)."""
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    spec = resolver.cluster_spec()
    if context.context().coordination_service is None:  # as the strategy would, plus the bounds
        context.context().configure_coordination_service(
            service_type="standalone",
            service_leader=multi_worker_util.coordination_leader(spec),
            coordinated_jobs=[
                coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
                for job in ("chief", "worker")
                if job in spec.jobs
            ],
            cluster_register_timeout_in_ms=int(join_timeout_s * 1000),
            heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT_S * 1000,
        )
        # Without the barrier, worker 0 (the service's host) registers with itself
        # at once and then waits in its first collective op forever for a worker
        # that never starts; with it, every worker waits for all, up to the timeout.
        context.context().coordination_service.cluster_register_with_barrier = True
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except _PEER_ERRORS as err:
        raise ClusterError(
            f"{_name(worker)} could not join the cluster of {worker.num_workers} workers within "
            f"{join_timeout_s:g} s ({_reason(err)}); start every worker that TF_CONFIG lists, "
            "or raise train.cluster_join_timeout_s"
        ) from None


@contextlib.contextmanager
def lost_peers_reported(worker: Worker, checkpoint_dir: str) -> Iterator[None]:
    """Turns TF's errors for a lost peer into one ClusterError naming the checkpoint to resume from.

    Every worker fails this way once one is gone: collective ops cannot finish
    without it, and TF cannot go on with fewer workers; a rerun of all resumes.
    """
    try:
        yield
    except _PEER_ERRORS as err:
        if worker.num_workers < 2 or not any(mark in err.message for mark in _CLUSTER_MARKS):
            raise
        latest = tf.train.latest_checkpoint(checkpoint_dir)
        resume = (
            f"training resumes from step {latest.rsplit('-', 1)[1]}, the last checkpoint in {checkpoint_dir}"
            if latest
            else f"training starts over (no checkpoint in {checkpoint_dir} yet)"
        )
        raise ClusterError(
            f"{_name(worker)} lost contact with the cluster ({_reason(err)}); rerun all "
            f"{worker.num_workers} workers: {resume}"
        ) from None


def _name(worker: Worker) -> str:
    return f"{worker.task_type} {worker.task_id}"


def _reason(err: tf.errors.OpError) -> str:
    """TF's own first sentence of the cause, without the graph-execution preamble and op traceback."""
    for line in err.message.splitlines():
        line = line.strip().split(". ", 1)[0].rstrip(":.")
        if line and not line.startswith(("Graph execution error", "Detected at node", "File ")):
            return f"{type(err).__name__}: {line}"
    return type(err).__name__
