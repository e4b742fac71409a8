"""Dated runs, their artifacts and the LATEST pointer (nextword/cloud/runs.py) on the real emulator."""

import datetime
import threading

import pytest

from nextword import storage
from nextword.cloud import runs
from nextword.text import contract
from tests.support.gcs_emulator import object_names

DAY = datetime.date(2025, 6, 2)
BAR = {"max_test_perplexity": 10.0}


@pytest.mark.unit
def test_run_name_and_the_bar():
    assert runs.run_name(DAY, "8123/45 6") == "2025-06-02-8123-45-6"
    assert runs.passes_bar({"test_perplexity": 9.5}, BAR) == (True, "test_perplexity 9.5 <= 10")
    assert runs.passes_bar({"test_perplexity": 10.5}, BAR) == (False, "test_perplexity 10.5 > max_test_perplexity 10")
    assert runs.passes_bar({"test_top1_accuracy": 0.2}, {"min_test_top1_accuracy": 0.3}) == (
        False, "test_top1_accuracy 0.2 < min_test_top1_accuracy 0.3")  # fmt: skip
    assert runs.passes_bar({"test_perplexity": 1.0}, {"max_test_perplexity": 0.0})[0] is False  # unset bar: off
    assert runs.passes_bar({}, BAR) == (False, "the run has no test_perplexity to compare with max_test_perplexity 10")
    with pytest.raises(ValueError, match="expected max_<metric> or min_<metric>"):
        runs.passes_bar({"x": 1.0}, {"below_x": 2.0})


@pytest.mark.unit
def test_the_baseline_gate_needs_the_ratio_and_names_both_perplexities():
    from nextword import cloud
    from nextword import config as config_lib
    from nextword.cloud import cloud_cli

    assert "max_baseline_ratio" not in cloud.promotion_bar(config_lib.from_dict(None))  # off unless set
    bar = cloud.promotion_bar(
        config_lib.from_dict(None, ["cloud.max_test_perplexity=200", "cloud.max_baseline_ratio=0.85"])
    )
    metrics = {
        "test": {"perplexity": 150.0, "tokens": 100},
        "baseline": {"status": "ok", "test": {"perplexity": 160.0, "ratio": 150.0 / 160.0}},
    }
    flat = cloud_cli._flat_metrics(metrics)
    assert flat["baseline_ratio"] == pytest.approx(0.9375) and flat["baseline_test_perplexity"] == 160.0
    refused, why = runs.passes_bar(flat, bar)
    assert not refused
    assert (
        why
        == "baseline_ratio 0.9375 > max_baseline_ratio 0.85 (test perplexity 150 against 160 for the n-gram baseline)"
    )
    better = cloud_cli._flat_metrics(
        metrics | {"baseline": {"status": "ok", "test": {"perplexity": 200.0, "ratio": 0.75}}}
    )
    assert runs.passes_bar(better, bar)[0]
    missing = cloud_cli._flat_metrics(metrics | {"baseline": {"status": "missing"}})
    assert runs.passes_bar(missing, bar) == (
        False,
        "the run has no baseline_ratio to compare with max_baseline_ratio 0.85",
    )


def test_chief_creates_the_dated_run_and_workers_and_restarts_find_it(gcs_bucket):
    runs_dir = f"{gcs_bucket}/nextword/runs"
    found = []
    # A worker that starts first waits for the chief's directory.
    worker = threading.Thread(target=lambda: found.append(
        runs.resolve_run_dir(runs_dir, "job-77", is_chief=False, today=DAY, wait_s=30, poll_s=0.05)))  # fmt: skip
    worker.start()
    chief = runs.resolve_run_dir(runs_dir, "job-77", is_chief=True, today=DAY)
    worker.join()
    assert chief == f"{runs_dir}/2025-06-02-job-77" and found == [chief]
    # A replica restarted the next day resumes the same run; another job gets its own.
    assert runs.resolve_run_dir(runs_dir, "job-77", is_chief=True, today=DAY + datetime.timedelta(days=1)) == chief
    other = runs.resolve_run_dir(runs_dir, "job-7", is_chief=True, today=DAY + datetime.timedelta(days=1))
    assert other == f"{runs_dir}/2025-06-03-job-7"
    assert runs.list_runs(runs_dir) == [chief, other]
    assert object_names(chief)[0] == runs.RUN_MARKER


def test_worker_without_a_chief_times_out_with_one_line(gcs_bucket):
    with pytest.raises(TimeoutError, match=r"runs: no run directory for job 9 after 0 s; the chief replica creates it"):
        runs.resolve_run_dir(f"{gcs_bucket}/runs", "9", is_chief=False, today=DAY, wait_s=0.2, poll_s=0.05)


def _finished_run(runs_dir: str, job: str, with_bundle: bool = True) -> str:
    run_dir = runs.resolve_run_dir(runs_dir, job, is_chief=True, today=DAY)
    storage.write_text(storage.join(run_dir, "checkpoints", "ckpt-1.index"), "x")
    if with_bundle:  # the export's commit marker, written last
        storage.write_text(storage.join(run_dir, "bundle", contract.BUNDLE_META_DIR, contract.BUNDLE_INFO_FILE), "{}")
    return run_dir


def test_latest_moves_only_to_runs_that_pass_the_bar(gcs_bucket):
    runs_dir = f"{gcs_bucket}/runs"
    pointer = storage.join(runs_dir, runs.LATEST_FILE)
    assert runs.read_latest(pointer) is None

    good = _finished_run(runs_dir, "1")
    assert runs.promote_latest(good, pointer, {"test_perplexity": 8.0}, BAR)
    latest = runs.read_latest(pointer)
    assert latest["run_dir"] == good and latest["bundle_dir"] == f"{good}/bundle"
    assert latest["metrics"] == {"test_perplexity": 8.0}

    worse = _finished_run(runs_dir, "2")
    assert not runs.promote_latest(worse, pointer, {"test_perplexity": 12.0}, BAR)
    unfinished = _finished_run(runs_dir, "3", with_bundle=False)
    assert not runs.promote_latest(unfinished, pointer, {"test_perplexity": 5.0}, BAR)
    assert runs.read_latest(pointer)["run_dir"] == good

    assert object_names(good) == [
        runs.RUN_MARKER, "bundle/nextword/bundle.json", "checkpoints/ckpt-1.index"]  # fmt: skip
    assert runs.list_runs(runs_dir) == [good, worse, unfinished]  # LATEST.json is a file, not a run


@pytest.mark.unit
def test_runs_need_a_gcs_path():
    with pytest.raises(ValueError, match=r"^runs/local: not a gs:// path; runs live on Cloud Storage"):
        runs.list_runs("runs/local")
