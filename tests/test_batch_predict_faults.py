"""Batch prediction killed with SIGKILL midway: no summary is left, and a rerun yields exactly one
record per input line (no duplicates, no gaps)."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from batch_predict.pipeline import SUMMARY_FILE
from tests.support.predict import chain_words, read_records

pytestmark = pytest.mark.e2e


def test_kill_9_midway_then_rerun_gives_one_record_per_line(tiny_bundle, tmp_path):
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
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    # Kill once the job has started writing records (Beam's temporary output files exist).
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and any(p.name.startswith("beam-temp") for p in out.iterdir()):
            time.sleep(1.0)
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before it could be killed midway"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / SUMMARY_FILE).exists()  # a killed run never looks complete

    subprocess.run(command, check=True, capture_output=True, env=env)
    summary = json.loads((out / SUMMARY_FILE).read_text())
    records = read_records(out)
    keys = Counter(r["line"] for r in records)
    assert summary["input_lines"] == summary["output_records"] == len(records) == len(lines)
    assert set(keys) == set(range(1, len(lines) + 1)) and max(keys.values()) == 1
