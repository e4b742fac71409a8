"""Vertex AI Model Registry uploads and BatchPredictionJobs: rendered, then parsed into the official types."""

from __future__ import annotations

import json
import os

import pytest
from google.cloud.aiplatform_v1.types import BatchPredictionJob, UploadModelRequest

from nextword import cli
from nextword import config as config_lib
from nextword.cloud import registry
from nextword.config import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOUD_YAML = os.path.join(REPO, "configs", "cloud.yaml")
RUN = "gs://my-bucket/nextword/runs/2026-12-07-555"
MODEL = "projects/my-project/locations/us-central1/models/nextword"
IN, OUT = "cloud.registry.batch_input", "cloud.registry.batch_output"


def _config(*overrides: str):
    return config_lib.load(CLOUD_YAML, ["cloud.registry.model_id=nextword", *overrides])


@pytest.mark.unit
def test_each_promoted_run_is_a_new_version_of_one_model():
    first = UploadModelRequest.from_json(
        json.dumps(registry.upload_request(_config(), RUN, f"{RUN}/bundle", 95.5, True))
    )
    later = UploadModelRequest.from_json(
        json.dumps(registry.upload_request(_config(), RUN, f"{RUN}/bundle", 95.5, False))
    )
    assert (first.model_id, first.parent_model) == ("nextword", "")  # the first upload creates the model
    assert (later.model_id, later.parent_model) == ("", MODEL)  # later ones are its versions
    for request in (first, later):
        assert request.parent == "projects/my-project/locations/us-central1"
        assert request.model.artifact_uri == f"{RUN}/bundle"
        assert request.model.container_spec.image_uri == "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
        assert dict(request.model.labels) == {"app": "nextword", "run": "2026-12-07-555"}
        assert request.model.version_description == f"{RUN}: test perplexity 95.5"


@pytest.mark.unit
def test_batch_prediction_jobs_over_jsonl_and_bigquery_parse_into_the_official_type(tmp_path):
    jsonl = _config(
        "cloud.registry.batch_input=gs://my-bucket/in/*.jsonl", "cloud.registry.batch_output=gs://my-bucket/out"
    )
    argv = ["cloud", "render", "--config", CLOUD_YAML, "--out", str(tmp_path),
            "--set", "cloud.registry.model_id=nextword",
            "--set", f"{IN}=gs://my-bucket/in/*.jsonl", "--set", f"{OUT}=gs://my-bucket/out"]  # fmt: skip
    assert cli.main(argv) == 0
    rendered = (tmp_path / "vertex_batch_prediction.json").read_text()
    assert json.loads(rendered) == registry.batch_prediction_job(jsonl)
    job = BatchPredictionJob.from_json(rendered)  # unknown fields would fail
    assert job.model == f"{MODEL}@promoted"  # the version the alias points at: LATEST's
    assert job.input_config.instances_format == "jsonl" and list(job.input_config.gcs_source.uris) == [
        "gs://my-bucket/in/*.jsonl"
    ]
    assert job.output_config.gcs_destination.output_uri_prefix == "gs://my-bucket/out"
    assert job.dedicated_resources.max_replica_count == 4 and job.dedicated_resources.machine_spec.machine_type
    assert "batchPredictionJobs vertex_batch_prediction.json" in (tmp_path / "vertex.sh").read_text()

    bigquery = _config(
        "cloud.registry.batch_input=bq://my-project.corpus.lines", "cloud.registry.batch_output=bq://my-project.scores"
    )
    job = BatchPredictionJob.from_json(json.dumps(registry.batch_prediction_job(bigquery)))
    assert job.input_config.instances_format == "bigquery"
    assert job.input_config.bigquery_source.input_uri == "bq://my-project.corpus.lines"
    assert list(job.instance_config.included_fields) == ["text"]  # each row as {"text": ...}
    assert job.output_config.bigquery_destination.output_uri == "bq://my-project.scores"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["cloud.registry.alias=default"], "cloud.registry.alias: 'default' is not a version alias"),
        (["cloud.registry.alias=Promoted"], "cloud.registry.alias: 'Promoted' is not a version alias"),
        (["cloud.registry.model_id="], "cloud.registry.model_id: required for Google Cloud runs"),
        ([f"{IN}=/data/in.jsonl", f"{OUT}=gs://b/o"], f"{IN}: '/data/in.jsonl' is neither"),
        ([f"{IN}=gs://b/i.jsonl", f"{OUT}=s3://b/o"], f"{OUT}: 's3://b/o' is neither"),
        ([f"{IN}=gs://b/i.jsonl", f"{OUT}=gs://b/o", "cloud.registry.batch_max_replica_count=0"], "must be >= 1"),
    ],
)  # fmt: skip
def test_registry_settings_that_cannot_work_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        registry.batch_prediction_job(_config(*overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.unit
def test_run_labels_are_valid_label_values():
    assert registry.run_label("gs://b/runs/2026-12-07-Local041501/") == "2026-12-07-local041501"
    assert registry.run_label("gs://b/runs/" + "x" * 80) == "x" * 63


def test_batch_instances_as_vertex_sends_them_are_answered_by_serving_default(tiny_bundle, tmp_path):
    """Vertex AI's batch prediction posts each JSONL line (or BigQuery row) as an instance to the container."""
    import tensorflow as tf

    from tests.support import tf_serving_rest
    from tests.support.predict import chain_words

    texts = [chain_words(tiny_bundle, 0, 4), chain_words(tiny_bundle, 3, 6)]
    lines = [json.dumps({registry.INPUT_FIELD: text}) for text in texts]  # the JSONL input file's lines
    body = json.dumps({"instances": [json.loads(line) for line in lines]})
    loaded = tf.saved_model.load(tiny_bundle.bundle_dir)
    predictions = tf_serving_rest.answer(body, loaded)["predictions"]
    direct = loaded.signatures["next_words"](text=tf.constant(texts), k=tf.constant(5))
    assert [p["words"] for p in predictions] == [[w.decode() for w in row] for row in direct["words"].numpy()]


@pytest.mark.unit
def test_the_trainer_image_has_the_client_that_uploads_and_its_absence_is_one_line(monkeypatch):
    import sys

    setup = open(os.path.join(REPO, "setup.py")).read()
    dockerfile = open(os.path.join(REPO, "infra", "Dockerfile.trainer")).read()
    (pin,) = [p for p in ("google-cloud-aiplatform>=1.60",) if f'"{p}"' in setup]  # the tests' floor
    assert f'"{pin}"' in dockerfile  # the chief of `nextword cloud train` publishes from the image
    monkeypatch.setitem(sys.modules, "google.cloud.aiplatform_v1", None)  # as where it is not installed
    with pytest.raises(ConfigError, match=r"^cloud.registry.model_id: uploading to the Model Registry needs"):
        registry.publish(_config(), RUN, f"{RUN}/bundle", 95.5)
