"""`nextword cloud render`: Vertex AI, Cloud Scheduler and Dataflow launch files from the YAML config.

    vertex_mirrored.json     CustomJob: one machine, several GPUs (train.strategy=mirrored)
    vertex_multiworker.json  CustomJob: a chief and workers (multiworker; Vertex AI sets TF_CONFIG)
    scheduler_job.json       Cloud Scheduler job: POSTs the schedule's CustomJob to the Vertex AI API on a cron
    vertex_tuning.json       HyperparameterTuningJob over `nextword train` (only with cloud.tuning.max_trial_count > 0)
    vertex_batch_prediction.json  BatchPredictionJob of the registry's promoted version (cloud.registry.batch_input)
    vertex.sh                uploads the config, submits the two jobs once, creates the schedule
    dataflow.sh              preprocessing and batch prediction on Dataflow

The JSON files are the REST request bodies (customJobs.create, jobs.create), so
what the tests parse into the official message types is exactly what is sent.
Every job runs `nextword cloud train`, which picks the dated run directory,
trains, evaluates and promotes LATEST only when the run passes the bar
(nextword/cloud/runs.py); Scheduler's body is the same every time, so the date
cannot be in the spec.
"""

from __future__ import annotations

import base64
import json
import shlex

from nextword import cloud
from nextword.cloud import registry, tuning
from nextword.config import Config, ConfigError

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
SCHEDULE_JOB_ID = "nextword-retrain"
STRATEGIES = ("mirrored", "multiworker")


def _parent(config: Config) -> str:
    return f"projects/{config.cloud.project}/locations/{config.cloud.region}"


def vertex_api(config: Config) -> str:
    return f"https://{config.cloud.region}-aiplatform.googleapis.com/v1/{_parent(config)}"


def training_args(config: Config, strategy: str) -> list[str]:
    """The trainer container's arguments (its entrypoint is the `nextword` console script)."""
    return ["cloud", "train", "--config", config.cloud.config_uri, "--set", f"train.strategy={strategy}"]


def _worker_pool(config: Config, replicas: int, args: list[str]) -> dict:
    training = config.cloud.training
    return {
        "machineSpec": {
            "machineType": training.machine_type,
            "acceleratorType": training.accelerator_type,
            "acceleratorCount": training.accelerator_count,
        },
        "replicaCount": str(replicas),
        "diskSpec": {"bootDiskType": "pd-ssd", "bootDiskSizeGb": training.boot_disk_size_gb},
        "containerSpec": {"imageUri": training.image_uri, "args": args},
    }


def custom_job(config: Config, strategy: str) -> dict:
    """The CustomJob request body for one training strategy."""
    cloud.require(config, "cloud.project", "cloud.region", "cloud.config_uri", "cloud.runs_dir",
                  "cloud.training.image_uri")  # fmt: skip
    if strategy not in STRATEGIES:
        raise ConfigError(f"cloud.schedule.strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    args = training_args(config, strategy)
    pools = [_worker_pool(config, 1, args)]  # pool 0: the chief
    if strategy == "multiworker":
        workers = config.cloud.training.replica_count - 1
        if workers < 1:
            raise ConfigError("cloud.training.replica_count: multiworker needs at least 2 machines")
        pools.append(_worker_pool(config, workers, args))
    spec: dict = {
        "workerPoolSpecs": pools,
        # A lost worker breaks the collective ring: restart them all, and they resume from the checkpoint.
        "scheduling": {"restartJobOnWorkerRestart": strategy == "multiworker"},
    }
    if config.cloud.training.service_account:
        spec["serviceAccount"] = config.cloud.training.service_account
    return {
        "displayName": f"nextword-train-{strategy}",
        "labels": {"app": "nextword", "strategy": strategy},
        "jobSpec": spec,
    }


def tuning_job(config: Config) -> dict:
    """The HyperparameterTuningJob request body: trials of `nextword train` on one machine each (mirrored).

    Each trial trains into <cloud.runs_dir>/tuning/<trial id>/ (Vertex AI's AIP_* folders under the job's
    baseOutputDirectory; trainer/main.py follows them) and reports cloud.tuning.metric at its end.
    """
    cloud.require(config, "cloud.project", "cloud.region", "cloud.config_uri", "cloud.runs_dir",
                  "cloud.training.image_uri")  # fmt: skip
    tuning.check_counts(config)
    spec = tuning.study_spec(config)
    args = ["train", "--config", config.cloud.config_uri, "--set", "train.strategy=mirrored"]
    trial: dict = {
        "workerPoolSpecs": [_worker_pool(config, 1, args)],
        "baseOutputDirectory": {"outputUriPrefix": f"{config.cloud.runs_dir.rstrip('/')}/tuning"},
    }
    if config.cloud.training.service_account:
        trial["serviceAccount"] = config.cloud.training.service_account
    return {
        "displayName": "nextword-tuning",
        "labels": {"app": "nextword"},
        "studySpec": spec,
        "maxTrialCount": config.cloud.tuning.max_trial_count,
        "parallelTrialCount": config.cloud.tuning.parallel_trial_count,
        "trialJobSpec": trial,
    }


def scheduler_job(config: Config) -> dict:
    """The Cloud Scheduler job request body: POST the schedule's CustomJob to Vertex AI on a cron."""
    cloud.require(config, "cloud.schedule.service_account", "cloud.max_test_perplexity")
    schedule = config.cloud.schedule
    if len(schedule.cron.split()) != 5:
        raise ConfigError(f"cloud.schedule.cron: expected 5 unix-cron fields, got {schedule.cron!r}")
    body = json.dumps(custom_job(config, schedule.strategy), sort_keys=True).encode("utf-8")
    return {
        "name": f"{_parent(config)}/jobs/{SCHEDULE_JOB_ID}",
        "description": f"nextword: {schedule.strategy} training run, promoted to LATEST when it passes the bar",
        "schedule": schedule.cron,
        "timeZone": schedule.time_zone,
        "httpTarget": {
            "uri": f"{vertex_api(config)}/customJobs",
            "httpMethod": "POST",
            "headers": {"Content-Type": "application/json"},
            "body": base64.b64encode(body).decode("ascii"),
            "oauthToken": {"serviceAccountEmail": schedule.service_account, "scope": CLOUD_PLATFORM_SCOPE},
        },
        # Creating a job twice would train twice: no retries; a failure shows in Scheduler's logs.
        "retryConfig": {"retryCount": 0},
    }


def vertex_script(config: Config, local_config: str) -> str:
    api = vertex_api(config)
    scheduler_api = f"https://cloudscheduler.googleapis.com/v1/{_parent(config)}/jobs"
    q = shlex.quote
    return (
        f"""#!/usr/bin/env bash
# Rendered by `nextword cloud render`: trains on Vertex AI and schedules retraining.
set -euo pipefail
cd "$(dirname "$0")"
TOKEN="$(gcloud auth print-access-token)"
post() {{ curl -fsS -X POST -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" "$1" -d "@$2"; }}

# The jobs read this copy of the config.
gcloud storage cp {q(local_config)} {q(config.cloud.config_uri)}

# One machine with {config.cloud.training.accelerator_count} GPUs (MirroredStrategy):
post {q(api + "/customJobs")} vertex_mirrored.json
# {config.cloud.training.replica_count} machines (MultiWorkerMirroredStrategy; Vertex AI sets TF_CONFIG):
post {q(api + "/customJobs")} vertex_multiworker.json
# Retraining on "{config.cloud.schedule.cron}" ({config.cloud.schedule.time_zone}) into {config.cloud.runs_dir}:
post {q(scheduler_api)} scheduler_job.json
"""
        + (
            f"""# {config.cloud.tuning.max_trial_count} tuning trials of `nextword train` (cloud.tuning):
post {q(api + "/hyperparameterTuningJobs")} vertex_tuning.json
"""
            if config.cloud.tuning.max_trial_count > 0
            else ""
        )
        + (
            f"""# Batch prediction with the {config.cloud.registry.alias} version, once a run was promoted:
# post {q(api + "/batchPredictionJobs")} vertex_batch_prediction.json
"""
            if config.cloud.registry.batch_input
            else ""
        )
    )


def dataflow_script(config: Config) -> str:
    options = " ".join(cloud.dataflow_args(config, "nextword-<stage>-<UTC time>"))
    q = shlex.quote
    return f"""#!/usr/bin/env bash
# Rendered by `nextword cloud render`: preprocessing and batch prediction on Dataflow.
# With --runner DataflowRunner, the config's cloud section adds these Beam options:
#   {options}
set -euo pipefail
CONFIG={q(config.cloud.config_uri)}
nextword preprocess --config "$CONFIG" --runner DataflowRunner
# Predict with the promoted model (LATEST), unless the config names a bundle:
BUNDLE="$(nextword cloud latest --config "$CONFIG")"
nextword predict --config "$CONFIG" --runner DataflowRunner --set "predict.bundle_dir=$BUNDLE"
"""


def render(config: Config, local_config: str) -> dict[str, str]:
    """{file name: content} of every launch file."""
    jobs = {f"vertex_{strategy}.json": custom_job(config, strategy) for strategy in STRATEGIES}
    jobs["scheduler_job.json"] = scheduler_job(config)
    tuning.check_counts(config)
    if config.cloud.tuning.max_trial_count > 0:
        jobs["vertex_tuning.json"] = tuning_job(config)
    if config.cloud.registry.batch_input:
        jobs["vertex_batch_prediction.json"] = registry.batch_prediction_job(config)
    files = {name: json.dumps(body, indent=2, sort_keys=True) + "\n" for name, body in jobs.items()}
    files["vertex.sh"] = vertex_script(config, local_config)
    files["dataflow.sh"] = dataflow_script(config)
    return files
