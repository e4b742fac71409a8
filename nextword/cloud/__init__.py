"""The YAML config's `cloud` section -> Beam's Dataflow options, and its checks.

Both Beam jobs go through `pipelines.parse`, which adds `dataflow_args` when
the command line asks for `--runner DataflowRunner`, so

    nextword preprocess --config gs://BUCKET/nextword/config.yaml --runner DataflowRunner
    nextword predict    --config gs://BUCKET/nextword/config.yaml --runner DataflowRunner

launch on Dataflow with the project, region, locations, machine type, worker
counts and `setup_file` (or custom container) of the config. Options given on
the command line come later and win.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from nextword.config import Config, ConfigError, value_at

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions

DATAFLOW_RUNNER = "DataflowRunner"


def require(config: Config, *paths: str) -> None:
    """One-line ConfigError for the first of `paths` that is unset (or, for a location, not gs://)."""
    for path in paths:
        value = value_at(config, path)
        if value in ("", 0, 0.0, None):
            raise ConfigError(f"{path}: required for Google Cloud runs; set it in the config's cloud section")
        gcs_key = path.endswith(("_location", "_dir", "_uri")) and path != "cloud.training.image_uri"
        if gcs_key and not str(value).startswith("gs://"):
            raise ConfigError(f"{path}: must be a gs:// path, got {value!r}")
    if config.cloud.dataflow.max_num_workers < config.cloud.dataflow.num_workers:
        raise ConfigError(
            "cloud.dataflow.max_num_workers: must be >= cloud.dataflow.num_workers, "
            f"got {config.cloud.dataflow.max_num_workers} < {config.cloud.dataflow.num_workers}"
        )


def job_name(stage: str, now: datetime.datetime | None = None) -> str:
    """A Dataflow job name ([-a-z0-9], unique per second): nextword-preprocess-20250602-030000."""
    now = now or datetime.datetime.now(datetime.UTC)
    return f"nextword-{stage}-{now:%Y%m%d-%H%M%S}"


def dataflow_args(config: Config, name: str) -> list[str]:
    """Beam options that run a job of `config` on Dataflow, named `name`."""
    require(config, "cloud.project", "cloud.region", "cloud.temp_location", "cloud.staging_location")
    cloud, workers = config.cloud, config.cloud.dataflow
    args = [
        f"--runner={DATAFLOW_RUNNER}",
        f"--project={cloud.project}",
        f"--region={cloud.region}",
        f"--temp_location={cloud.temp_location}",
        f"--staging_location={cloud.staging_location}",
        f"--job_name={name}",
        f"--machine_type={workers.machine_type}",
        f"--num_workers={workers.num_workers}",
        f"--max_num_workers={workers.max_num_workers}",
        "--autoscaling_algorithm=THROUGHPUT_BASED",
    ]
    if workers.sdk_container_image:
        args.append(f"--sdk_container_image={workers.sdk_container_image}")
    else:
        args.append(f"--setup_file={workers.setup_file}")
    if workers.service_account:
        args.append(f"--service_account_email={workers.service_account}")
    return args


def wants_dataflow(beam_args: list[str]) -> bool:
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    return PipelineOptions(beam_args).view_as(StandardOptions).runner == DATAFLOW_RUNNER


def launch_only(options: PipelineOptions) -> bool:
    """True when Beam only builds the job (`--dry_run`, `--template_location`): nothing runs, no outputs appear.

    The job's builder then leaves the output folder alone: building a template
    must not delete (or relabel) the data of the last run.
    """
    from apache_beam.options.pipeline_options import GoogleCloudOptions, TestOptions

    return bool(options.view_as(TestOptions).dry_run or options.view_as(GoogleCloudOptions).template_location)


def promotion_bar(config: Config) -> dict[str, float]:
    """The bar a run's metrics must pass before LATEST points at it (nextword/cloud/runs.py)."""
    bar = {"max_test_perplexity": config.cloud.max_test_perplexity}
    if config.cloud.max_baseline_ratio > 0:  # checked only when set: runs without a baseline still promote
        bar["max_baseline_ratio"] = config.cloud.max_baseline_ratio
    return bar
