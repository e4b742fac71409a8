"""`nextword cloud train`: what the Vertex AI job runs. Trains into this job's dated run directory under
cloud.runs_dir, then (chief) promotes the run to LATEST if it passes the config's bar."""

from __future__ import annotations

import datetime
import os
import sys

from nextword import cli, cloud
from nextword import config as config_lib
from nextword.cli import cli_parsers
from nextword.cloud import cloud_cli, runs
from trainer import __main__ as trainer_cli
from trainer.strategy import LOCAL_WORKER, worker_from_tf_config


def train(config_path: str | None, overrides: list[str]) -> int:
    """The trainer's command line with train.model_dir set to the run directory; its exit code."""
    config = config_lib.load(config_path, overrides)
    cloud.require(config, "cloud.runs_dir")
    tf_config = os.environ.get("TF_CONFIG", "")
    worker = worker_from_tf_config(tf_config) if config.train.strategy == "multiworker" and tf_config else LOCAL_WORKER
    now = datetime.datetime.now(datetime.UTC)
    # Vertex AI sets CLOUD_ML_JOB_ID on every replica of a job; a local run gets its own id.
    job_id = os.environ.get("CLOUD_ML_JOB_ID") or now.strftime("local%H%M%S")
    run_dir = runs.resolve_run_dir(config.cloud.runs_dir, job_id, worker.is_chief, today=now.date())
    args = (["--config", config_path] if config_path else []) + [a for o in overrides for a in ("--set", o)]
    code = trainer_cli.main(args + ["--set", f"train.model_dir={run_dir}"])
    if code == 0 and worker.is_chief:
        cloud_cli.promote(config, run_dir)
    return code


def main(argv: list[str] | None = None) -> int:
    codes: list[int] = []  # the trainer's exit code unless guarded() caught an error

    def run(args: list[str]) -> None:  # the arguments after `nextword cloud train`
        parsed = cli_parsers.cloud("train").parse_args(args)
        codes.append(train(parsed.config, parsed.overrides))

    return cli.run_stage(run, argv) or codes[0]


if __name__ == "__main__":
    sys.exit(main())
