"""Real tf.distribute strategies on CPU: MirroredStrategy over two logical CPUs, two local workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import trainer as trainer_support
from tests.support.trainer import free_port, result_of, start_run, train_args
from trainer.main import run

pytestmark = pytest.mark.multiprocess


@pytest.mark.parametrize("carry_state", [False, True], ids=["windows", "carried-state"])
def test_mirrored_on_two_cpus_matches_local_for_the_same_global_batch(synthetic, ordered, tmp_path, carry_state):
    data_dir = ordered if carry_state else synthetic
    common = ["train.epochs=1", "train.steps_per_epoch=40", f"train.carry_state={str(carry_state).lower()}"]
    # float32: bf16 matmuls round the logits, which lifts the two strategies' float32-sized differences in
    # summation order to ~1e-4 after 40 steps (still the same training; this test checks it is the same sum)
    common.append("train.matmul_dtype=float32")
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
    args = train_args(
        synthetic,
        tmp_path / "model",
        "train.strategy=multiworker",
        "train.per_replica_batch_size=16",
        "train.epochs=2",
        "train.steps_per_epoch=30",
        "train.checkpoint_every_steps=10",
        # The rate falls with the budget spent from the first step: each worker's own clock would give each its
        # own rate, and the weights would part; the replicas' all-reduced mean gives both the same.
        "train.time_budget_s=3600",
        "train.optimizer.budget_cooldown=1",
    )
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    with trainer_support.loopback_namespace() as netns:
        procs = [start_run(args, logs[i], netns, TF_CONFIG=_tf_config(ports, i)) for i in range(2)]
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
    assert results[0]["valid"]["tokens"] == counts["targets"]["valid"]
    # Only the chief (worker 0) keeps checkpoints and writes the outputs.
    assert trainer_support.latest_checkpoint_step(tmp_path / "model") == 60
    assert (
        json.loads((tmp_path / "model" / "metrics.json").read_text())["weights_sha256"] == results[0]["weights_sha256"]
    )
    assert not list((tmp_path / "model" / "tmp").glob("worker-1/*"))


def _tf_config(ports: list[int], index: int) -> str:
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def _start_cli(args: list[str], log: Path, netns: list[str], ports: list[int], index: int) -> subprocess.Popen:
    """`python -m trainer` as worker `index`: what Vertex AI runs, one-line errors included."""
    return subprocess.Popen(
        [*netns, sys.executable, "-m", "trainer", *args],  # nsenter execs: the pid is Python's
        cwd=trainer_support.REPO,
        env=trainer_support.child_env(TF_CONFIG=_tf_config(ports, index)),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def _exit_within(proc: subprocess.Popen, seconds: float) -> tuple[int, float]:
    """(exit code, seconds it took); a process still running after `seconds` is killed and fails the test."""
    start = time.monotonic()
    try:
        code = proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"still running {seconds} s later: hung")
    return code, time.monotonic() - start


def _error_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize("victim", [1, 0], ids=["kill-worker-1", "kill-chief"])
def test_killing_a_worker_fails_the_other_with_one_line_and_a_rerun_resumes(synthetic, tmp_path, victim):
    survivor = 1 - victim
    model_dir = tmp_path / "model"
    args = train_args(
        synthetic,
        model_dir,
        "train.strategy=multiworker",
        "train.per_replica_batch_size=16",
        # ~10 s of steps, the kill lands mid-training; 190 steps fit the carried-state streams of the split.
        "train.epochs=2",
        "train.steps_per_epoch=190",
        "train.checkpoint_every_steps=10",
    )
    ports = [free_port(), free_port()]
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    with trainer_support.loopback_namespace() as netns:
        procs = [_start_cli(args, logs[i], netns, ports, i) for i in range(2)]
        deadline = time.monotonic() + 120
        while trainer_support.latest_checkpoint_step(model_dir) < 20 and time.monotonic() < deadline:
            assert all(proc.poll() is None for proc in procs), [log.read_text()[-3000:] for log in logs]
            time.sleep(0.05)
        at_kill = trainer_support.latest_checkpoint_step(model_dir)
        assert at_kill >= 20
        os.kill(procs[victim].pid, signal.SIGKILL)
        code, seconds = _exit_within(procs[survivor], 90)
        procs[victim].wait()
    print(f"worker {survivor} exited {seconds:.1f} s after worker {victim} was killed at checkpoint {at_kill}")
    last = trainer_support.latest_checkpoint_step(model_dir)
    assert at_kill <= last < 380  # the chief may finish the checkpoint it was writing, never the run
    assert code == 1, logs[survivor].read_text()[-3000:]
    [line] = _error_lines(logs[survivor])
    assert line.startswith(f"error: worker {survivor} lost contact with the cluster (")
    assert line.endswith(
        f"; rerun all 2 workers: training resumes from step {last}, the last checkpoint in {model_dir}/checkpoints"
    )

    ports = [free_port(), free_port()]  # the rerun: same command, every worker
    with trainer_support.loopback_namespace() as netns:
        procs = [start_run(args, logs[i], netns, TF_CONFIG=_tf_config(ports, i)) for i in range(2)]
        results = [result_of(proc, log) for proc, log in zip(procs, logs, strict=True)]
    assert [r["train"]["resumed_from_step"] for r in results] == [last, last]
    assert [r["train"]["steps"] for r in results] == [380, 380]
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
    assert trainer_support.latest_checkpoint_step(model_dir) == 380


@pytest.mark.parametrize("alone", [0, 1], ids=["chief-alone", "worker-1-alone"])
def test_a_worker_whose_peer_never_starts_gives_up_after_the_join_timeout(synthetic, tmp_path, alone):
    args = train_args(synthetic, tmp_path / "model", "train.strategy=multiworker", "train.cluster_join_timeout_s=3")
    log = tmp_path / "worker.log"
    with trainer_support.loopback_namespace() as netns:
        proc = _start_cli(args, log, netns, [free_port(), free_port()], alone)
        code, seconds = _exit_within(proc, 90)
    print(f"worker {alone} alone gave up after {seconds:.1f} s (join timeout 3 s, TensorFlow's start included)")
    assert code == 1
    [line] = _error_lines(log)
    assert line.startswith(f"error: worker {alone} could not join the cluster of 2 workers within 3 s (")
    assert line.endswith("start every worker that TF_CONFIG lists, or raise train.cluster_join_timeout_s")
    assert not (tmp_path / "model" / "checkpoints").exists()
