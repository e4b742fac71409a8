"""Real tf.distribute strategies on CPU: MirroredStrategy over two logical CPUs, two local workers."""

from __future__ import annotations

import json
import time

import pytest

from tests import trainer_support
from tests.trainer_support import free_port, result_of, start_run, train_args
from trainer.main import run


@pytest.mark.parametrize("carry_state", [False, True], ids=["windows", "carried-state"])
def test_mirrored_on_two_cpus_matches_local_for_the_same_global_batch(synthetic, ordered, tmp_path, carry_state):
    data_dir = ordered if carry_state else synthetic
    common = ["train.epochs=1", "train.steps_per_epoch=40", f"train.carry_state={str(carry_state).lower()}"]
    log = tmp_path / "mirrored.log"
    mirrored_args = ["train.strategy=mirrored", "train.per_replica_batch_size=16"]
    mirrored = start_run(train_args(data_dir, tmp_path / "mirrored", *common, *mirrored_args), log, LOGICAL_CPUS="2")
    local = run(train_args(data_dir, tmp_path / "local", *common, "train.per_replica_batch_size=32"))
    mirrored = result_of(mirrored, log)
    assert mirrored["train"]["replicas"] == 2 and mirrored["train"]["global_batch"] == 32
    assert local["train"]["replicas"] == 1 and local["train"]["global_batch"] == 32
    assert mirrored["valid"]["tokens"] == local["valid"]["tokens"]
    assert mirrored["valid"]["loss"] == pytest.approx(local["valid"]["loss"], rel=1e-4)
    history = [json.loads((tmp_path / d / "history.json").read_text())[-1] for d in ("mirrored", "local")]
    assert history[0]["train_loss"] == pytest.approx(history[1]["train_loss"], rel=1e-4)


def test_two_workers_finish_with_identical_weights(synthetic, tmp_path):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    args = train_args(
        synthetic,
        tmp_path / "model",
        "train.strategy=multiworker",
        "train.per_replica_batch_size=16",
        "train.epochs=2",
        "train.steps_per_epoch=30",
        "train.checkpoint_every_steps=10",
    )
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    with trainer_support.loopback_namespace() as netns:
        procs = [
            start_run(args, logs[i], netns,
                      TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
            for i in range(2)
        ]  # fmt: skip
        # Their servers listen inside the loopback-only namespace, never on this host's interfaces.
        deadline = time.monotonic() + 60
        while not set(ports) <= trainer_support.listening_ports(netns) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert set(ports) <= trainer_support.listening_ports(netns)
        assert not set(ports) & trainer_support.listening_ports()
        results = [result_of(proc, log) for proc, log in zip(procs, logs, strict=True)]
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
    assert all(r["train"]["workers"] == 2 and r["train"]["global_batch"] == 32 for r in results)
    assert all(r["train"]["steps"] == 60 for r in results)
    counts = json.loads((synthetic / "manifest.json").read_text())["counts"]
    # Evaluation is sharded across the workers and summed: each window counted exactly once.
    assert results[0]["valid"] == results[1]["valid"]
    assert results[0]["valid"]["tokens"] == counts["windows"]["valid"] * 20
    # Only the chief (worker 0) keeps checkpoints and writes the outputs.
    assert trainer_support.latest_checkpoint_step(tmp_path / "model") == 60
    assert json.loads((tmp_path / "model" / "metrics.json").read_text())["weights_sha256"] == results[0][
        "weights_sha256"
    ]
    assert not list((tmp_path / "model" / "tmp").glob("worker-1/*"))
