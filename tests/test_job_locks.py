"""Issue 34 (item 10): one job per output folder. Preprocess, baseline and predict hold `LOCK.json` in their
output folder while they run, as the trainer does in its model_dir: a second job there is refused with one
line naming the lock and its holder, a lock whose holder has exited is taken over, and a LOCK.json that is
not a lock's record is never overwritten. A real second job while one runs, and the takeover of a killed
job's lock: tests/test_batch_predict_faults.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from baseline import __main__ as baseline_main
from batch_predict import __main__ as predict_main
from beam_preprocess import __main__ as preprocess_main
from nextword.storage.job_lock import LOCK_FILE, JobLock


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


def hold(folder, pid: int) -> None:
    """The lock a job of process `pid` on this host holds on `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {"host": socket.gethostname(), "pid": pid, "job": "", "nonce": "other", "refreshed_unix": time.time()}
    (folder / LOCK_FILE).write_text(json.dumps(record))


def exited_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)


@pytest.mark.unit
def test_a_lock_file_that_is_not_a_locks_record_is_one_line_and_stays(tmp_path):
    for text in ('{"my": "notes"}', "[1, 2]", '{"host": "h", "pid": "12", "nonce": "n", "refreshed_unix": 0}'):
        (tmp_path / LOCK_FILE).write_text(text)
        with pytest.raises(ValueError) as err:
            JobLock(str(tmp_path), "predict.output_dir", "nextword predict").acquire()
        assert str(err.value).startswith(f"{tmp_path / LOCK_FILE}: ") and "\n" not in str(err.value)
        assert "if no nextword predict runs on this predict.output_dir, remove it" in str(err.value)
        assert (tmp_path / LOCK_FILE).read_text() == text


@pytest.mark.unit
def test_of_jobs_starting_at_the_same_instant_exactly_one_holds_the_lock(tmp_path):
    start, won, refused = threading.Barrier(8), [], []

    def take() -> None:
        lock = JobLock(str(tmp_path), "preprocess.output_dir", "nextword preprocess")
        start.wait()
        try:
            lock.acquire()
            won.append(lock)
        except ValueError as err:
            refused.append(str(err))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(refused) == 7
    assert json.loads((tmp_path / LOCK_FILE).read_text())["nonce"] == won[0].nonce
    won[0].release()
    assert not (tmp_path / LOCK_FILE).exists() and os.listdir(tmp_path) == []  # no temporary file left either


@pytest.mark.unit
@pytest.mark.parametrize("stage", ["preprocess", "baseline", "predict"])
def test_a_second_job_on_a_held_output_folder_is_refused_in_one_line(stage, tmp_path, capsys):
    out, holder = tmp_path / "out", os.getppid()  # a live process on this host: the job holding the folder
    hold(out, holder)
    main, key = {
        "preprocess": (preprocess_main.main, "preprocess.output_dir"),
        "baseline": (baseline_main.main, "baseline.output_dir"),
        "predict": (predict_main.main, "predict.output_dir"),
    }[stage]
    argv = ["--set", f"{key}={out}", "--set", f"train.data_dir={tmp_path}/data"]
    argv += ["--set", f"predict.input_glob={tmp_path}/in.txt", "--set", f"preprocess.corpus_glob={tmp_path}/c/*"]
    assert main(argv) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(
        f"error: {out / LOCK_FILE}: {key} is in use by pid {holder} on {socket.gethostname()} (refreshed "
    ), lines
    assert json.loads((out / LOCK_FILE).read_text())["nonce"] == "other"  # the holder's lock stays
