"""Dated training runs under `cloud.runs_dir` on Cloud Storage, and the LATEST pointer.

    gs://BUCKET/nextword/runs/2025-06-02-8123456789/   one run (train.model_dir of one CustomJob)
    gs://BUCKET/nextword/runs/LATEST.json              {"run_dir", "bundle_dir", "metrics", "promoted_unix"}

Cloud Scheduler sends the same CustomJob body every time, so a run's directory
cannot be fixed in the spec: the job picks it when it starts, from the UTC date
and the Vertex AI job id (the same on every replica, and across replica
restarts, which then resume the same run). The chief creates it; the other
workers wait until it exists, so all replicas agree even across midnight.

This module uses the google-cloud-storage client rather than Beam's
FileSystems: listing "directories" needs the delimiter listing (a run holds
many checkpoint files), and the client is what the Vertex AI job already has.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import time
from collections.abc import Mapping

from nextword import storage
from nextword.artifacts.model_dir import BUNDLE_DIR
from nextword.storage.gcs_errors import guard
from nextword.text import contract

_LOG = logging.getLogger(__name__)

LATEST_FILE = "LATEST.json"
RUN_MARKER = "RUN.json"


def _split(gs_path: str) -> tuple[str, str]:
    """gs://bucket/a/b -> ("bucket", "a/b")."""
    if not gs_path.startswith("gs://"):
        raise ValueError(f"{gs_path}: not a gs:// path; runs live on Cloud Storage (cloud.runs_dir)")
    bucket, _, name = gs_path[len("gs://") :].partition("/")
    return bucket, name


def _dir_prefix(gs_dir: str) -> tuple[str, str]:
    bucket, name = _split(gs_dir)
    return bucket, (name.rstrip("/") + "/") if name.strip("/") else ""


def _client():
    from google.cloud import storage as gcs

    return gcs.Client()


def run_name(day: datetime.date, job_id: str) -> str:
    """`YYYY-MM-DD-<job id>`: sorts by date, unique per job."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", job_id).strip("-")
    if not safe:
        raise ValueError(f"job id {job_id!r}: needs at least one letter or digit")
    return f"{day:%Y-%m-%d}-{safe}"


def list_runs(runs_dir: str) -> list[str]:
    """Every run directory under `runs_dir` (gs://BUCKET/.../NAME), oldest first."""
    bucket, prefix = _dir_prefix(runs_dir)
    with guard(runs_dir, "list"):
        pages = _client().list_blobs(bucket, prefix=prefix, delimiter="/")
        for _ in pages:  # the prefixes are known once the pages are read
            pass
        return sorted(f"gs://{bucket}/{p.rstrip('/')}" for p in pages.prefixes)


def resolve_run_dir(
    runs_dir: str, job_id: str, is_chief: bool, today: datetime.date, wait_s: float = 600.0, poll_s: float = 2.0
) -> str:
    """This job's run directory: the existing one for `job_id`, or (chief only) a new dated one."""
    deadline = time.monotonic() + wait_s
    name = run_name(today, job_id)
    job_part = name[len("YYYY-MM-DD-") :]
    while True:
        found = [run for run in list_runs(runs_dir) if run.rsplit("/", 1)[1][len("YYYY-MM-DD-") :] == job_part]
        if found:
            return found[-1]
        if is_chief:
            run_dir = storage.join(runs_dir, name)
            _write_json(storage.join(run_dir, RUN_MARKER), {"job_id": job_id, "created_unix": int(time.time())})
            _LOG.info("new run %s", run_dir)
            return run_dir
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{runs_dir}: no run directory for job {job_id} after {wait_s:.0f} s; "
                "the chief replica creates it: check that it started (Vertex AI job logs)"
            )
        time.sleep(poll_s)


def passes_bar(metrics: Mapping[str, float], bar: Mapping[str, float]) -> tuple[bool, str]:
    """Whether `metrics` pass every `max_<name>` / `min_<name>` limit of `bar`, and why (one line)."""
    if not bar:
        return False, "no promotion bar is configured"
    passed = []
    for key, limit in sorted(bar.items()):
        kind, _, name = key.partition("_")
        if kind not in ("max", "min") or not name:
            raise ValueError(f"promotion bar {key!r}: expected max_<metric> or min_<metric>")
        if limit <= 0:
            return False, f"{key} is {limit}: promotion is off until it is set (> 0)"
        if name not in metrics:
            return False, f"the run has no {name} to compare with {key} {limit:g}"
        value = metrics[name]
        if (value > limit) if kind == "max" else (value < limit):
            why = f"{name} {value:.4g} {'>' if kind == 'max' else '<'} {key} {limit:g}"
            if name == "baseline_ratio":
                why += (
                    f" (test perplexity {metrics.get('test_perplexity', float('nan')):.4g} against "
                    f"{metrics.get('baseline_test_perplexity', float('nan')):.4g} for the n-gram baseline)"
                )
            return False, why
        passed.append(f"{name} {value:.4g} {'<=' if kind == 'max' else '>='} {limit:g}")
    return True, ", ".join(passed)


def promote_latest(run_dir: str, pointer_path: str, metrics: Mapping[str, float], bar: Mapping[str, float]) -> bool:
    """Points LATEST at `run_dir` if `metrics` pass `bar` and the run has a complete bundle; True if it did."""
    ok, reason = passes_bar(metrics, bar)
    bundle_dir = storage.join(run_dir, BUNDLE_DIR)
    # The bundle's info file is written last: without it the export did not finish.
    if ok and not storage.exists(storage.join(bundle_dir, contract.BUNDLE_META_DIR, contract.BUNDLE_INFO_FILE)):
        ok, reason = False, f"{bundle_dir} is incomplete (no {contract.BUNDLE_META_DIR}/{contract.BUNDLE_INFO_FILE})"
    if not ok:
        _LOG.warning("not promoting %s: %s", run_dir, reason)
        return False
    pointer = {"run_dir": run_dir, "bundle_dir": bundle_dir, "metrics": dict(metrics)}
    _write_json(pointer_path, pointer | {"promoted_unix": int(time.time())})
    _LOG.info("promoted %s to %s (%s)", run_dir, pointer_path, reason)
    return True


def read_latest(pointer_path: str) -> dict | None:
    """The LATEST pointer's content, or None when nothing was promoted yet."""
    bucket, name = _split(pointer_path)
    with guard(pointer_path, "read"):
        blob = _client().bucket(bucket).get_blob(name)
        return None if blob is None else json.loads(blob.download_as_text())


def _write_json(path: str, value: dict) -> None:
    bucket, name = _split(path)
    with guard(path, "write"):
        blob = _client().bucket(bucket).blob(name)
        blob.upload_from_string(json.dumps(value, indent=2, sort_keys=True) + "\n", content_type="application/json")
