"""Shared helpers of the trainer tests: preprocessed copies of the shipped corpus, tiny configs, subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "data" / "synthetic"  # the synthetic Markov corpus (known entropy rate)
GENERATOR = json.loads((CORPUS / "GENERATOR.json").read_text())

_PREPROCESSED: dict[tuple, Path] = {}

# A tiny model: each test run takes seconds on one CPU core.
TINY = [
    "--set",
    "train.per_replica_batch_size=32",
    "--set",
    "train.model.embedding_dim=32",
    "--set",
    "train.model.units=32",
    "--set",
    "train.model.dropout=0.0",
    "--set",
    "train.optimizer.learning_rate=0.01",
    "--set",
    "train.mixtures=false",  # on in the tests that check the cache and n-gram mixtures
]


def preprocess(tmp_path_factory, *overrides: str) -> Path:
    """The shipped synthetic corpus preprocessed with `overrides` (once per session), window 20, stride 20."""
    key = tuple(overrides)
    if key not in _PREPROCESSED:
        from beam_preprocess import pipeline

        out = tmp_path_factory.mktemp("data")
        args = [
            "--set",
            f"preprocess.corpus_glob={CORPUS}/**/*.txt",
            "--set",
            f"preprocess.output_dir={out}",
            "--set",
            "preprocess.window_length=20",
            "--set",
            "preprocess.stride=20",
        ]
        for item in overrides:
            args += ["--set", item]
        pipeline.run(args)
        _PREPROCESSED[key] = out
    return _PREPROCESSED[key]


def ordered_data(tmp_path_factory, *overrides: str) -> Path:
    """Whole files per split and one shard each: records in corpus order (for train.carry_state)."""
    return preprocess(
        tmp_path_factory,
        f"preprocess.split.train_glob={CORPUS}/part-0/*.txt",
        f"preprocess.split.valid_glob={CORPUS}/part-1/doc-01.txt",
        f"preprocess.split.test_glob={CORPUS}/part-1/doc-03.txt",
        "preprocess.num_shards=1",
        *overrides,
    )


def shuffled_copy(data_dir: Path, dest: Path) -> Path:
    """A copy of a data directory whose train records are shuffled across its shards (same manifest, but for
    the windows each shard file now holds)."""
    import numpy as np
    import tensorflow as tf

    shutil.copytree(data_dir, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    paths = [str(dest / name) for name in manifest["shards"]["train"]]
    records = [r.numpy() for r in tf.data.TFRecordDataset(paths, compression_type="GZIP")]
    order = np.random.default_rng(0).permutation(len(records))
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for shard, path in enumerate(paths):
        with tf.io.TFRecordWriter(path, options) as writer:
            for index in order[shard :: len(paths)]:
                writer.write(records[index])
    manifest["shard_windows"]["train"] = [len(order[shard :: len(paths)]) for shard in range(len(paths))]
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def train_args(data_dir: Path, model_dir: Path, *overrides: str) -> list[str]:
    args = ["--set", f"train.data_dir={data_dir}", "--set", f"train.model_dir={model_dir}", *TINY]
    for item in overrides:
        args += ["--set", item]
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Runs training in a fresh interpreter and prints its metrics on a RESULT line.
# With LOGICAL_CPUS set, the CPU is first split into that many logical devices
# (before TensorFlow starts), so MirroredStrategy has several replicas.
RUN_SCRIPT = """
import json, os, sys
import tensorflow as tf
cpus = int(os.environ.get("LOGICAL_CPUS", "0"))
if cpus:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpus)
if os.environ.get("KILL_AT"):
    from tests.support.trainer import arm_kill
    arm_kill(os.environ["KILL_AT"])
from trainer.main import run
print("RESULT " + json.dumps(run(sys.argv[1:])), flush=True)
"""


def arm_kill(spec: str) -> None:
    """Makes this process kill -9 itself at a chosen point: "module:attribute.path@call[:before|:after][:SIGNAL]".

    The attribute (a function, or a method on a class) is wrapped so that its
    `call`-th call SIGKILLs the process (or sends it SIGNAL, e.g. SIGTERM) before it runs, or after it
    returns: a real signal at an exact point that a timer outside could only hit by luck.
    """
    import importlib
    import signal

    module, _, rest = spec.partition(":")
    target, _, when = rest.partition(":")
    when, _, signal_name = when.partition(":")
    sent = signal.Signals[signal_name] if signal_name else signal.SIGKILL
    path, _, nth = target.partition("@")
    owner = importlib.import_module(module)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    original = getattr(owner, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(nth) and when != "after":
            os.kill(os.getpid(), sent)
        result = original(*args, **kwargs)
        if calls[0] == int(nth) and when == "after":
            os.kill(os.getpid(), sent)
        return result

    setattr(owner, name, wrapper)


def child_env(**extra: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


@contextlib.contextmanager
def loopback_namespace() -> Iterator[list[str]]:
    """A network namespace with only a loopback interface; yields the command prefix that enters it.

    TensorFlow's worker gRPC servers bind every interface ([::]:port) whatever address
    TF_CONFIG names, so the multi-worker tests run them where no other host can reach them.
    """
    holder = subprocess.Popen(["unshare", "--net", "sleep", "3600"])
    try:
        prefix = ["nsenter", "-t", str(holder.pid), "-n"]
        for _ in range(100):  # unshare has to exec sleep before the namespace is the new one
            if os.readlink(f"/proc/{holder.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                break
            time.sleep(0.02)
        subprocess.run([*prefix, "ip", "link", "set", "lo", "up"], check=True)
        yield prefix
    finally:
        holder.kill()
        holder.wait()


def listening_ports(prefix: list[str] = ()) -> set[int]:
    """TCP ports listening in a network namespace (this one, or the one `prefix` enters)."""
    tables = subprocess.run([*prefix, "cat", "/proc/net/tcp", "/proc/net/tcp6"], capture_output=True, text=True)
    return {
        int(fields[1].rsplit(":", 1)[1], 16)
        for fields in (line.split() for line in tables.stdout.splitlines())
        if len(fields) > 3 and fields[3] == "0A"  # LISTEN
    }


def start_run(args: list[str], log: Path, prefix: list[str] = (), **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*prefix, sys.executable, "-c", RUN_SCRIPT, *args],
        cwd=REPO,
        env=child_env(**env),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def result_of(proc: subprocess.Popen, log: Path, timeout: float = 180) -> dict:
    code = proc.wait(timeout=timeout)
    text = log.read_text()
    assert code == 0, f"exit {code}:\n{text[-3000:]}"
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    assert lines, text[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def latest_checkpoint_step(model_dir: Path) -> int:
    """Step of the newest checkpoint in model_dir (0: none yet), read from the manager's state file."""
    state = model_dir / "checkpoints" / "checkpoint"
    if not state.exists():
        return 0
    for line in state.read_text().splitlines():
        if line.startswith("model_checkpoint_path:"):
            return int(line.split('"')[1].rsplit("-", 1)[1])
    return 0
