"""`nextword cloud render` and the Dataflow options: parsed into the official message types, strictly."""

import base64
import json
import os

import pytest
from google.cloud.aiplatform_v1.types import CustomJob
from google.cloud.scheduler_v1.types import HttpMethod, Job

from nextword import cli, cloud
from nextword import config as config_lib
from nextword.beam import pipelines
from nextword.cloud import cloud_specs
from nextword.config import ConfigError

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOUD_YAML = os.path.join(REPO, "configs", "cloud.yaml")


def _config(*overrides: str):
    return config_lib.load(CLOUD_YAML, list(overrides))


def test_rendered_files_parse_into_the_official_types(tmp_path, capsys):
    assert cli.main(["cloud", "render", "--config", CLOUD_YAML, "--out", str(tmp_path),
                     "--set", "cloud.training.replica_count=3"]) == 0  # fmt: skip
    rendered = ["dataflow.sh", "scheduler_job.json", "vertex.sh", "vertex_mirrored.json", "vertex_multiworker.json"]
    assert sorted(os.listdir(tmp_path)) == rendered

    mirrored = CustomJob.from_json((tmp_path / "vertex_mirrored.json").read_text())  # unknown fields would fail
    (pool,) = mirrored.job_spec.worker_pool_specs
    assert pool.replica_count == 1 and pool.machine_spec.accelerator_count == 4
    assert pool.machine_spec.accelerator_type.name == "NVIDIA_TESLA_T4"
    assert pool.container_spec.image_uri == "us-central1-docker.pkg.dev/my-project/nextword/trainer:0.1.0"
    assert list(pool.container_spec.args) == [
        "cloud",
        "train",
        "--config",
        "gs://my-bucket/nextword/config.yaml",
        "--set",
        "train.strategy=mirrored",
    ]

    multi = CustomJob.from_json((tmp_path / "vertex_multiworker.json").read_text())
    chief, workers = multi.job_spec.worker_pool_specs
    assert (chief.replica_count, workers.replica_count) == (1, 2)  # 3 machines: Vertex AI's TF_CONFIG has them all
    assert list(workers.container_spec.args)[-1] == "train.strategy=multiworker"
    assert multi.job_spec.scheduling.restart_job_on_worker_restart

    schedule = Job.from_json((tmp_path / "scheduler_job.json").read_text())
    assert schedule.name == "projects/my-project/locations/us-central1/jobs/nextword-retrain"
    assert (schedule.schedule, schedule.time_zone) == ("0 3 * * 1", "Etc/UTC")
    target = schedule.http_target
    assert target.http_method == HttpMethod.POST
    assert (
        target.uri
        == "https://us-central1-aiplatform.googleapis.com/v1/projects/my-project/locations/us-central1/customJobs"
    )
    assert target.oauth_token.service_account_email == "nextword-scheduler@my-project.iam.gserviceaccount.com"
    # What Scheduler POSTs is the multiworker CustomJob itself.
    assert CustomJob.from_json(target.body.decode()) == multi

    vertex_sh = (tmp_path / "vertex.sh").read_text()
    assert f"gcloud storage cp {CLOUD_YAML} gs://my-bucket/nextword/config.yaml" in vertex_sh
    assert "vertex_mirrored.json" in vertex_sh and "scheduler_job.json" in vertex_sh
    dataflow_sh = (tmp_path / "dataflow.sh").read_text()
    assert 'nextword preprocess --config "$CONFIG" --runner DataflowRunner' in dataflow_sh
    assert "--setup_file=./setup.py" in dataflow_sh


def test_official_parsers_are_strict():
    body = cloud_specs.custom_job(_config(), "mirrored")
    body["jobSpec"]["workerPoolSpecs"][0]["machineSpec"]["gpus"] = 4
    with pytest.raises(Exception, match="gpus"):
        CustomJob.from_json(json.dumps(body))
    job = cloud_specs.scheduler_job(_config())
    job["httpTarget"]["body"] = base64.b64encode(b"{}").decode()
    job["cronSchedule"] = "daily"
    with pytest.raises(Exception, match="cronSchedule"):
        Job.from_json(json.dumps(job))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cloud.project=", "cloud.project: required for Google Cloud runs"),
        ("cloud.runs_dir=runs/local", "cloud.runs_dir: must be a gs:// path, got 'runs/local'"),
        ("cloud.training.replica_count=1", "cloud.training.replica_count: multiworker needs at least 2 machines"),
        ("cloud.max_test_perplexity=0", "cloud.max_test_perplexity: required for Google Cloud runs"),
        ("cloud.schedule.cron=daily", "cloud.schedule.cron: expected 5 unix-cron fields, got 'daily'"),
        ("cloud.dataflow.max_num_workers=1", "cloud.dataflow.max_num_workers: must be >= cloud.dataflow.num_workers"),
    ],
)
def test_missing_or_bad_cloud_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        cloud_specs.render(_config(override), "cloud.yaml")


def test_schedule_strategy_is_a_checked_choice():
    with pytest.raises(ConfigError, match="cloud.schedule.strategy: 'ring' is not one of mirrored, multiworker"):
        _config("cloud.schedule.strategy=ring")


def test_dataflow_options_come_from_the_config_and_the_command_line_wins():
    config, args = pipelines.parse("preprocess", ["--config", CLOUD_YAML, "--runner", "DataflowRunner",
                                                    "--num_workers", "5"])  # fmt: skip
    from apache_beam.options.pipeline_options import GoogleCloudOptions, SetupOptions, WorkerOptions

    options = pipelines.pipeline_options(args)
    gcp = options.view_as(GoogleCloudOptions)
    assert (gcp.project, gcp.region, gcp.temp_location) == ("my-project", "us-central1", "gs://my-bucket/dataflow/tmp")
    assert gcp.job_name.startswith("nextword-preprocess-")
    workers = options.view_as(WorkerOptions)
    assert (workers.machine_type, workers.num_workers, workers.max_num_workers) == ("n2-standard-4", 5, 20)
    assert options.view_as(SetupOptions).setup_file == "./setup.py"
    # A custom container replaces setup_file; no --runner: the local runner, no cloud options.
    image = cloud.dataflow_args(_config("cloud.dataflow.sdk_container_image=gcr.io/p/beam:1"), "j")
    assert "--sdk_container_image=gcr.io/p/beam:1" in image and not any("setup_file" in a for a in image)
    assert pipelines.parse("preprocess", ["--config", CLOUD_YAML])[1] == []
    assert config.cloud.project == "my-project"
