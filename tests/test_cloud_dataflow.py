"""Both Beam jobs built for Dataflow from the YAML config, offline: the job description and what Beam stages.

Beam 2.77's `--dry_run=True` returns before the job description is written
(dataflow_runner.py skips apiclient.create_job), so these tests use
`--template_location`, which runs the whole submission path (job description,
our package built from setup_file, the pipeline proto, both staged to Cloud
Storage, here the emulator) and stops before calling the Dataflow API.
"""

import json

import apache_beam as beam
import pytest

from batch_predict import pipeline as predict_pipeline
from beam_preprocess import pipeline as preprocess_pipeline
from nextword import storage
from nextword.beam import pipelines
from tests.support.dataflow import check_job, cloud_args, upload_dir

pytestmark = pytest.mark.beam


def _write_old_run(folder: str, rels: list[str]) -> dict[str, str]:
    """Stands in for the output of an earlier run: {path: content}."""
    old = {f"{folder}/{rel}": f"from an earlier run: {rel}\n" for rel in rels}
    for path, text in old.items():
        storage.write_text(path, text)
    return old


def _unchanged(old: dict[str, str], folder: str) -> bool:
    """True when `folder` holds exactly the earlier run's files, with their content."""
    return [p for p, _ in storage.match(f"{folder}/**")] == sorted(old) and all(
        storage.read_text(path) == text for path, text in old.items()
    )


def test_preprocessing_job_for_dataflow(gcs_bucket, tmp_path):
    for rel in ("a.txt", "b.txt"):
        storage.write_text(f"{gcs_bucket}/corpus/{rel}", "the cat sat on the mat\n" * 20)
    old = _write_old_run(f"{gcs_bucket}/data", ["manifest.json", "config.yaml", "vocab.txt", "_parts/p-0",
                                                 "train/windows-00000-of-00001.tfrecord.gz"])  # fmt: skip
    job_file = str(tmp_path / "preprocess-job.json")
    result = preprocess_pipeline.run(cloud_args(
        gcs_bucket, job_file, f"preprocess.corpus_glob={gcs_bucket}/corpus/*.txt",
        f"preprocess.output_dir={gcs_bucket}/data"))  # fmt: skip
    assert result == {}  # built, not run
    assert _unchanged(old, f"{gcs_bucket}/data")  # the template runs later: the earlier run's data is still whole
    labels = {"ListFiles", "CountVocabulary", "WriteWindows", "WriteManifest"}
    check_job(json.load(open(job_file)), "preprocess", labels)


def test_batch_prediction_job_for_dataflow(gcs_bucket, tiny_bundle, tmp_path):
    upload_dir(tiny_bundle.bundle_dir, f"{gcs_bucket}/bundle")
    storage.write_text(f"{gcs_bucket}/in/lines.txt", "w1 w2 w3\n")
    old = _write_old_run(f"{gcs_bucket}/out", ["summary.json", "predictions-00000-of-00001.jsonl"])
    job_file = str(tmp_path / "predict-job.json")
    config, beam_args = pipelines.parse("predict", cloud_args(
        gcs_bucket, job_file, f"predict.bundle_dir={gcs_bucket}/bundle", f"predict.input_glob={gcs_bucket}/in/*.txt",
        f"predict.output_dir={gcs_bucket}/out"))  # fmt: skip
    with beam.Pipeline(options=pipelines.pipeline_options(beam_args)) as p:
        predict_pipeline.build(p, config)
    labels = {"PlanRanges", "RangesToScore", "Score/ScoreRanges", "WriteSummary"}
    check_job(json.load(open(job_file)), "predict", labels)
    assert _unchanged(old, f"{gcs_bucket}/out")
