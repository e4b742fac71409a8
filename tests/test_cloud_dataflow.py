"""Both Beam jobs built for Dataflow from the YAML config, offline: the job description and what Beam stages.

Beam 2.77's `--dry_run=True` returns before the job description is written
(dataflow_runner.py skips apiclient.create_job), so these tests use
`--template_location`, which runs the whole submission path (job description,
our package built from setup_file, the pipeline proto, both staged to Cloud
Storage, here the emulator) and stops before calling the Dataflow API.
"""

import io
import json
import os
import tarfile

import apache_beam as beam
import pytest
from apache_beam.portability.api import beam_runner_api_pb2

from batch_predict import pipeline as predict_pipeline
from beam_preprocess import pipeline as preprocess_pipeline
from nextword import storage
from nextword.beam import pipelines

pytestmark = pytest.mark.beam

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOUD_YAML = os.path.join(REPO, "configs", "cloud.yaml")


def _cloud_args(bucket: str, job_file: str, *overrides: str) -> list[str]:
    items = [
        f"cloud.temp_location={bucket}/dataflow/tmp",
        f"cloud.staging_location={bucket}/dataflow/staging",
        f"cloud.dataflow.setup_file={REPO}/setup.py",
        *overrides,
    ]
    return ["--config", CLOUD_YAML, *[a for item in items for a in ("--set", item)],
            "--runner", "DataflowRunner", "--template_location", job_file]  # fmt: skip


def _read_gcs(path: str) -> bytes:
    return storage.read_bytes(path)


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


def _check_job(job: dict, stage: str, labels: set[str]) -> None:
    options = job["environment"]["sdkPipelineOptions"]["options"]
    assert options["project"] == "my-project" and options["region"] == "us-central1"
    assert options["job_name"].startswith(f"nextword-{stage}-")
    assert options["setup_file"] == f"{REPO}/setup.py"
    assert (options["machine_type"], options["num_workers"], options["max_num_workers"]) == ("n2-standard-4", 2, 20)
    assert options["autoscaling_algorithm"] == "THROUGHPUT_BASED"
    # The transforms are in the staged pipeline proto (runner v2 keeps no steps in the job itself).
    proto = beam_runner_api_pb2.Pipeline.FromString(_read_gcs(options["pipelineUrl"]))
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert labels <= names, labels - names
    # setup_file: our package, built as an sdist and staged for the workers to install.
    (package,) = [p for p in job["environment"]["workerPools"][0]["packages"] if p["name"] == "workflow.tar.gz"]
    staged = package["location"].replace("storage.googleapis.com/", "gs://", 1)
    with tarfile.open(fileobj=io.BytesIO(_read_gcs(staged))) as sdist:
        files = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {
        "nextword/storage/__init__.py",
        "nextword/text/contract.py",
        "beam_preprocess/pipeline.py",
        "batch_predict/pipeline.py",
        "setup.py",
    } <= files


def test_preprocessing_job_for_dataflow(gcs_bucket, tmp_path):
    for rel in ("a.txt", "b.txt"):
        storage.write_text(f"{gcs_bucket}/corpus/{rel}", "the cat sat on the mat\n" * 20)
    old = _write_old_run(f"{gcs_bucket}/data", ["manifest.json", "config.yaml", "vocab.txt", "_parts/p-0",
                                                 "train/windows-00000-of-00001.tfrecord.gz"])  # fmt: skip
    job_file = str(tmp_path / "preprocess-job.json")
    result = preprocess_pipeline.run(_cloud_args(
        gcs_bucket, job_file, f"preprocess.corpus_glob={gcs_bucket}/corpus/*.txt",
        f"preprocess.output_dir={gcs_bucket}/data"))  # fmt: skip
    assert result == {}  # built, not run
    assert _unchanged(old, f"{gcs_bucket}/data")  # the template runs later: the earlier run's data is still whole
    labels = {"ListFiles", "CountVocabulary", "WriteWindows", "WriteManifest"}
    _check_job(json.load(open(job_file)), "preprocess", labels)


def _upload_dir(local_dir: str, gs_dir: str) -> None:
    for root, _, names in os.walk(local_dir):
        for name in names:
            path = os.path.join(root, name)
            with (
                open(path, "rb") as src,
                beam.io.filesystems.FileSystems.create(storage.join(gs_dir, os.path.relpath(path, local_dir))) as dst,
            ):
                dst.write(src.read())


def test_batch_prediction_job_for_dataflow(gcs_bucket, tiny_bundle, tmp_path):
    _upload_dir(tiny_bundle.bundle_dir, f"{gcs_bucket}/bundle")
    storage.write_text(f"{gcs_bucket}/in/lines.txt", "w1 w2 w3\n")
    old = _write_old_run(f"{gcs_bucket}/out", ["summary.json", "predictions-00000-of-00001.jsonl"])
    job_file = str(tmp_path / "predict-job.json")
    config, beam_args = pipelines.parse("predict", _cloud_args(
        gcs_bucket, job_file, f"predict.bundle_dir={gcs_bucket}/bundle", f"predict.input_glob={gcs_bucket}/in/*.txt",
        f"predict.output_dir={gcs_bucket}/out"))  # fmt: skip
    with beam.Pipeline(options=pipelines.pipeline_options(beam_args)) as p:
        predict_pipeline.build(p, config)
    labels = {"PlanRanges", "RangesToScore", "Score/ScoreRanges", "WriteSummary"}
    _check_job(json.load(open(job_file)), "predict", labels)
    assert _unchanged(old, f"{gcs_bucket}/out")
