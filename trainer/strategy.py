"""The one place that picks the tf.distribute strategy, from train.strategy and TF_CONFIG.

    local        the default strategy: one device (a GPU when there is one)
    mirrored     MirroredStrategy over all local GPUs, or over all logical CPU
                 devices when there is no GPU (tests split the CPU in two)
    multiworker  MultiWorkerMirroredStrategy; the cluster comes from TF_CONFIG,
                 which Vertex AI sets on each replica of a multi-worker job
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import tensorflow as tf

from nextword.config import TrainConfig


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
    return tf.distribute.MultiWorkerMirroredStrategy(), worker
