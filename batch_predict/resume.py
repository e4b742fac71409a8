"""A batch prediction job's output, committed range by range, so that a killed job resumes.

Each byte range's records go to a shard of their own, predictions-<i>-of-<n>.jsonl, written whole
(storage.write_text: a temporary name renamed, or one upload); then the range's marker
_ranges/<i>-of-<n>.json, with the digest of the job that made it and the range's figures. The job's
identity (the model fingerprint, the record format, the settings that change records, the input ranges
and each input file's CRC32C) is in _ranges/job.json. A rerun of the same job keeps the ranges whose
marker and shard are there and scores only the others; a rerun of another job, or of one that completed
(summary.json), starts over, and the log says why. Only this job's files are ever cleared
(nextword/storage/__init__.py: clear_owned).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re

from batch_predict import core
from nextword import storage
from nextword.artifacts import bundle as bundle_lib
from nextword.artifacts.predictions import SUMMARY_FILE, PredictionRecord, Summary
from nextword.config import PredictConfig, keys_where

_LOG = logging.getLogger(__name__)
OUTPUT_PREFIX = "predictions"
OUTPUT_SUFFIX = ".jsonl"
RANGES_DIR = "_ranges"
JOB_FILE = f"{RANGES_DIR}/job.json"
# What a record depends on: the predict.* keys whose field in nextword/config.py says changes_records.
OUTPUT_SETTINGS = keys_where("changes_records", "predict")
_TEMP = r"(?:\.tmp-[0-9a-f]{32})?"  # storage.write_text's temporary name of a killed write
_RANGE = r"\d{5,}-of-\d{5,}"
# All that clearing deletes, besides the shards the previous summary lists.
OWNED = (
    storage.Owned("", re.escape(OUTPUT_PREFIX) + "-" + _RANGE + re.escape(OUTPUT_SUFFIX) + _TEMP),
    storage.Owned("", "beam-temp-" + re.escape(OUTPUT_PREFIX) + "-[0-9a-f]{32}"),  # WriteToText's, before ranges
    storage.Owned("", storage.temp_names(SUMMARY_FILE)),
    storage.Owned(RANGES_DIR, "(?:" + _RANGE + r"|job)\.json" + _TEMP, temporary=True),
)


def shard_name(index: int, count: int) -> str:
    return f"{OUTPUT_PREFIX}-{index:05d}-of-{count:05d}{OUTPUT_SUFFIX}"


def marker_name(index: int, count: int) -> str:
    return f"{RANGES_DIR}/{index:05d}-of-{count:05d}.json"


def job_identity(cfg: PredictConfig, bundle: bundle_lib.Bundle, ranges: list[core.FileRange]) -> dict:
    """What the records depend on. The input files are known by their bytes (CRC32C), not their sizes:
    a file edited to the same size since a killed run is scored again, never matched to the old records."""
    return {
        "model_fingerprint": bundle.model_fingerprint,
        "record_format": PredictionRecord.FORMAT,
        "settings": {name: getattr(cfg, name) for name in OUTPUT_SETTINGS},
        "ranges": [list(r) for r in ranges],
        "checksums": storage.crc32c_all(dict.fromkeys(r.path for r in ranges)),
    }


def job_digest(job: dict) -> str:
    return hashlib.sha256(json.dumps(job, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def what_changed(previous: dict, current: dict) -> str:
    """The first difference between two job identities, in words."""
    if previous.get("model_fingerprint") != current["model_fingerprint"]:
        return f"the model changed ({previous.get('model_fingerprint')} -> {current['model_fingerprint']})"
    if previous.get("record_format") != current["record_format"]:
        return f"the record format changed ({previous.get('record_format')} -> {current['record_format']})"
    for name, value in current["settings"].items():
        if previous.get("settings", {}).get(name) != value:
            return f"predict.{name} changed ({previous.get('settings', {}).get(name)!r} -> {value!r})"
    checksums = previous.get("checksums") if isinstance(previous.get("checksums"), dict) else {}
    edited = [path for path, crc in current["checksums"].items() if path in checksums and checksums[path] != crc]
    if edited and previous.get("ranges") == current["ranges"]:
        return f"{edited[0]} changed (other bytes, same size)"
    return "the input files (or predict.split_bytes) changed"


def _committed(output_dir: str, job: dict) -> tuple[dict[int, dict], str]:
    """The ranges of `job` already committed in output_dir: {index: marker}, and why none are kept if so."""
    if storage.exists(storage.join(output_dir, SUMMARY_FILE)):
        return {}, "the previous job completed"
    job_path = storage.join(output_dir, JOB_FILE)
    if not storage.exists(job_path):
        return {}, ""
    previous = json.loads(storage.read_text(job_path))
    if previous != job:
        return {}, what_changed(previous, job)
    digest, count = job_digest(job), len(job["ranges"])
    # Two listings, not two requests per range: on gs:// a job of many ranges starts at once.
    listed = {path.rsplit("/", 1)[-1] for pattern in (f"{OUTPUT_PREFIX}-*", f"{RANGES_DIR}/*") for path, _ in
              storage.match(storage.join(output_dir, pattern))}  # fmt: skip
    done = {}
    for index in range(count):
        marker = marker_name(index, count)
        if marker.rsplit("/", 1)[-1] in listed and shard_name(index, count) in listed:
            content = json.loads(storage.read_text(storage.join(output_dir, marker)))
            if content.get("job") == digest:
                done[index] = content
    return done, ""


def prepare_output(output_dir: str, job: dict, inputs: list[str]) -> dict[int, dict]:
    """Clears what this stage wrote before, except the committed ranges of the same job; writes job.json.

    Returns the committed ranges ({index: marker}) that this run does not score again.
    """
    storage.makedirs(output_dir, "predict.output_dir")
    storage.claim(output_dir, "predict", OWNED, marker=SUMMARY_FILE, listed_key="output_shards", trust=_ours,
                  key="predict.output_dir")  # fmt: skip
    done, why_not = _committed(output_dir, job)
    count = len(job["ranges"])
    spare = [name for i in done for name in (shard_name(i, count), marker_name(i, count))] + [JOB_FILE] * bool(done)
    clear(output_dir, inputs, spare)
    if done:
        lines = sum(marker["stats"].get("records", 0) for marker in done.values())
        _LOG.info("resuming %s: %d of %d ranges (%d lines) already committed; scoring the other %d",
                  output_dir, len(done), count, lines, count - len(done))  # fmt: skip
    else:
        if why_not:
            _LOG.info("starting %s over: %s", output_dir, why_not)
        storage.write_marker(storage.join(output_dir, JOB_FILE), job)
    return done


def clear(output_dir: str, inputs: list[str], spare: list[str] = ()) -> None:
    """Removes summary.json first (a failed rerun never looks complete), then this job's old files but
    `spare`: only the shards the old summary lists and the names in OWNED, never through a symbolic
    link (refused with one line), never one of `inputs`."""
    storage.clear_owned(
        output_dir, OWNED, marker=SUMMARY_FILE, listed_key="output_shards", trust=_ours, keep=inputs, spare=spare
    )


def _ours(content: dict) -> bool:
    """Whether a summary.json is one nextword wrote (a Summary of this format, with a model fingerprint):
    only then are the shards it lists deleted."""
    try:
        summary = Summary.from_dict(content, SUMMARY_FILE)
    except ValueError:
        return False
    return isinstance(summary.model_fingerprint, str) and bool(summary.model_fingerprint)


def commit_marker(output_dir: str, index: int, count: int, digest: str, stats: dict) -> None:
    """Marks one range committed, once its shard (shard_name) is written whole."""
    storage.write_marker(storage.join(output_dir, marker_name(index, count)), {"job": digest, "stats": stats})
