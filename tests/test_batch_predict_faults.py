"""Batch prediction killed with SIGKILL midway: no summary is left, a rerun scores only the ranges not yet
committed and yields exactly one record per input line (no duplicates, no gaps); another job starts over.
A second job while the first runs is refused; the killed job's lock is taken over by the rerun."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from batch_predict import __main__ as predict_main
from batch_predict import resume
from batch_predict.pipeline import SUMMARY_FILE
from nextword.storage.job_lock import LOCK_FILE
from tests.support.predict import chain_words, read_records

pytestmark = pytest.mark.e2e


def test_kill_9_midway_then_rerun_scores_only_the_rest_and_gives_one_record_per_line(tiny_bundle, tmp_path, capsys):
    lines = [chain_words(tiny_bundle, i % 10, 5 + i % 20) for i in range(40_000)]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "batch_predict",
        "--set", f"predict.bundle_dir={tiny_bundle.bundle_dir}",
        "--set", f"predict.input_glob={tmp_path}/in.txt",
        "--set", f"predict.output_dir={out}",
        "--set", "predict.mode=next", "--set", "predict.split_bytes=100000",
    ]  # fmt: skip
    ranges = -(-(tmp_path / "in.txt").stat().st_size // 100_000)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    # Kill once about half of the ranges are committed (their markers exist).
    markers = out / resume.RANGES_DIR
    while time.monotonic() < deadline and proc.poll() is None:
        if markers.exists() and len(list(markers.glob("*-of-*.json"))) >= ranges // 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the job ended before it could be killed midway"
    # A second job into the same output directory while the first runs: refused in one line, nothing touched.
    capsys.readouterr()
    assert predict_main.main(command[3:]) == 1
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .startswith(f"error: {out / LOCK_FILE}: predict.output_dir is in use by pid {proc.pid} on ")
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / SUMMARY_FILE).exists()  # a killed run never looks complete
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == proc.pid  # its lock stays behind
    committed = len(list(markers.glob("*-of-*.json")))
    assert 0 < committed < ranges

    rerun = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert f"{committed} of {ranges} ranges" in rerun.stderr
    assert f"taking over the lock of pid {proc.pid}" in rerun.stderr and not (out / LOCK_FILE).exists()
    assert summary["ranges"] == ranges and summary["resumed_ranges"] == committed
    assert summary["resumed_lines"] > 0.4 * len(lines)  # less than 60% of the lines scored again
    records = read_records(out)
    keys = Counter(r["line"] for r in records)
    assert summary["input_lines"] == summary["output_records"] == len(records) == len(lines)
    assert set(keys) == set(range(1, len(lines) + 1)) and max(keys.values()) == 1
    assert sorted(p.name for p in out.glob("predictions-*.jsonl")) == summary["output_shards"]

    # Another job in the same output directory (here a setting that changes records) starts over.
    (out / SUMMARY_FILE).unlink()  # as if killed before the end
    other = subprocess.run([*command, "--set", "predict.top_k=3"], check=True, capture_output=True, text=True, env=env)
    assert "over: predict.top_k changed (5 -> 3)" in other.stderr
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["resumed_ranges"] == 0 and summary["output_records"] == len(lines)
    assert all(len(r["next"]) == 3 for r in read_records(out)[:100])
