"""Every typed artifact reads back what it wrote, and refuses another format or a missing field in one line."""

from __future__ import annotations

import dataclasses
import json

import pytest

from nextword.artifacts.baseline_report import BaselineReport
from nextword.artifacts.bundle import BundleInfo
from nextword.artifacts.data_dir import Manifest
from nextword.artifacts.predictions import Summary
from nextword.text.contract import TextSettings

pytestmark = pytest.mark.unit

SPLITS = {"train": 8, "valid": 1, "test": 1}
SAMPLES = {
    "manifest": Manifest(
        created_unix=1, corpus_glob="corpus/**/*.txt", text=TextSettings(eos=True), window_length=35,
        record_length=36, stride=35, pad_id=None, vocab_size=10, fingerprint="f" * 16,
        counts={"files": 1, "tokens": SPLITS}, shards={"train": ["train/w-0.tfrecord.gz"], "valid": [], "test": []},
    ),
    "bundle": BundleInfo(
        fingerprint="f" * 16, text=TextSettings(normalization="whitespace"), window_length=35, context_tokens=35,
        vocab_size=10, created_unix=1, checksums={"saved_model.pb": "abc"}, state_size=8, weights_sha256="0" * 64,
    ),
    "baseline": BaselineReport(
        order=5, data_dir="runs/data", data_fingerprint="f" * 16, manifest_sha256="0" * 64, train_tokens=9,
        ngrams=[10, 9], discounts=[[0.5, 1.0, 1.5]], fallback_orders=[], evaluation={"carried": {}},
        count_seconds=0.1, estimate_seconds=0.2,
    ),
    "summary": Summary(
        input_glob="in/*.txt", bundle_dir="b", fingerprint="f", model_fingerprint="m", mode="score",
        context="line", files=1, bytes=10, input_lines=2, output_records=2, complete=True, rejects_by_reason={},
        flags={}, scored_tokens=3, unknown_scored_tokens=0, perplexity=4.5, known_perplexity=4.5, seconds=0.5,
        lines_per_second=4.0, ranges=1, resumed_ranges=0, resumed_lines=0, output_shards=["predictions-00000"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", SAMPLES)
def test_an_artifact_reads_back_what_it_wrote_through_json(name):
    artifact = SAMPLES[name]
    data = json.loads(json.dumps(artifact.to_dict(), sort_keys=True))
    assert type(artifact).from_dict(data, "f.json") == artifact
    assert data["format_version"] >= 1


@pytest.mark.parametrize("name", SAMPLES)
def test_a_newer_or_unknown_format_or_a_missing_field_is_one_line_naming_the_file(name):
    artifact = SAMPLES[name]
    data, kind = artifact.to_dict(), type(artifact)
    with pytest.raises(ValueError, match=r"^f.json: format_version 99, this nextword reads \d+; .*upgrade nextword"):
        kind.from_dict(data | {"format_version": 99}, "f.json")
    with pytest.raises(ValueError, match=r"^f.json: format_version None, this nextword reads \d+; (rerun|re-export)"):
        kind.from_dict({k: v for k, v in data.items() if k != "format_version"}, "f.json")
    required = next(f.name for f in dataclasses.fields(kind) if f.default is dataclasses.MISSING)
    with pytest.raises(ValueError, match=rf"^f.json: missing {required}; (rerun|re-export)"):
        kind.from_dict({k: v for k, v in data.items() if k != required}, "f.json")


def test_text_settings_inside_an_artifact_are_checked_too():
    data = SAMPLES["manifest"].to_dict()
    data["text"] = data["text"] | {"casing": "upper"}
    with pytest.raises(ValueError, match=r"^f.json: incomplete or invalid .*casing.*; rerun `nextword preprocess`"):
        Manifest.from_dict(data, "f.json")


@pytest.mark.parametrize(
    "name, field, value",
    [
        ("manifest", "pad_id", float("nan")),  # would be copied into the bundle's manifest.json
        ("manifest", "window_length", "35"),
        ("manifest", "text", None),
        ("manifest", "shards", {"train": [7]}),
        ("bundle", "context_tokens", "35"),
        ("bundle", "vocab_size", True),
        ("baseline", "discounts", [[float("inf")]]),
        ("summary", "complete", "yes"),
        ("summary", "output_shards", None),
    ],
)
def test_a_field_of_another_type_null_or_nan_is_one_line_naming_the_file_and_field(name, field, value):
    artifact = SAMPLES[name]
    data = json.loads(json.dumps(artifact.to_dict() | {field: value}))  # Python's JSON reads NaN and Infinity
    with pytest.raises(ValueError, match=rf"^f.json: {field} is .+, not of type .+; (rerun|re-export)") as err:
        type(artifact).from_dict(data, "f.json")
    assert "\n" not in str(err.value)
