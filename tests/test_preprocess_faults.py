"""Preprocessing killed with SIGKILL midway: no manifest is left, and a rerun is complete and correct."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nextword.text import contract
from tests.support import synthetic
from tests.support.preprocess import read_windows

pytestmark = pytest.mark.e2e


def _command(corpus, out):
    return [
        sys.executable, "-m", "beam_preprocess",
        "--set", f"preprocess.corpus_glob={corpus}/**/*.txt",
        "--set", f"preprocess.output_dir={out}",
        "--set", "preprocess.num_shards=2",
    ]  # fmt: skip


def test_kill_9_midway_then_rerun_gives_the_complete_output(tmp_path):
    corpus = tmp_path / "corpus"
    synthetic.write_corpus(str(corpus), synthetic.ChainSpec(), num_files=6, tokens_per_file=60_000)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    clean, interrupted = tmp_path / "clean", tmp_path / "interrupted"
    subprocess.run(_command(corpus, clean), check=True, capture_output=True, env=env)

    # First run of the interrupted output completes, so the kill hits a directory with an old manifest.
    subprocess.run(_command(corpus, interrupted), check=True, capture_output=True, env=env)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen(_command(corpus, interrupted), env=env, **quiet)
    parts = interrupted / "_parts"
    deadline = time.monotonic() + 120
    while not (parts.exists() and any(parts.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed midway"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (interrupted / contract.MANIFEST_FILE).exists()  # never mistaken for complete

    subprocess.run(_command(corpus, interrupted), check=True, capture_output=True, env=env)
    done = json.loads((interrupted / contract.MANIFEST_FILE).read_text())
    reference = json.loads((clean / contract.MANIFEST_FILE).read_text())
    assert done["counts"] == reference["counts"] and done["fingerprint"] == reference["fingerprint"]
    assert not parts.exists()
    for split in contract.SPLITS:
        assert sorted(read_windows(interrupted, done, split)) == sorted(read_windows(clean, reference, split))
