"""Helpers of the tests that build Dataflow jobs offline (`--template_location` against the storage emulator)."""

import io
import os
import tarfile

import apache_beam as beam
from apache_beam.portability.api import beam_runner_api_pb2

from nextword import storage

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLOUD_YAML = os.path.join(REPO, "configs", "cloud.yaml")


def cloud_args(bucket: str, job_file: str, *overrides: str) -> list[str]:
    items = [
        f"cloud.temp_location={bucket}/dataflow/tmp",
        f"cloud.staging_location={bucket}/dataflow/staging",
        f"cloud.dataflow.setup_file={REPO}/setup.py",
        *overrides,
    ]
    return ["--config", CLOUD_YAML, *[a for item in items for a in ("--set", item)],
            "--runner", "DataflowRunner", "--template_location", job_file]  # fmt: skip


def read_gcs(path: str) -> bytes:
    return storage.read_bytes(path)


def check_job(job: dict, stage: str, labels: set[str]) -> None:
    options = job["environment"]["sdkPipelineOptions"]["options"]
    assert options["project"] == "my-project" and options["region"] == "us-central1"
    assert options["job_name"].startswith(f"nextword-{stage}-")
    assert options["setup_file"] == f"{REPO}/setup.py"
    assert (options["machine_type"], options["num_workers"], options["max_num_workers"]) == ("n2-standard-4", 2, 20)
    assert options["autoscaling_algorithm"] == "THROUGHPUT_BASED"
    # The transforms are in the staged pipeline proto (runner v2 keeps no steps in the job itself).
    proto = beam_runner_api_pb2.Pipeline.FromString(read_gcs(options["pipelineUrl"]))
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert labels <= names, labels - names
    # setup_file: our package, built as an sdist and staged for the workers to install.
    (package,) = [p for p in job["environment"]["workerPools"][0]["packages"] if p["name"] == "workflow.tar.gz"]
    staged = package["location"].replace("storage.googleapis.com/", "gs://", 1)
    with tarfile.open(fileobj=io.BytesIO(read_gcs(staged))) as sdist:
        files = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {
        "nextword/storage/__init__.py",
        "nextword/text/contract.py",
        "beam_preprocess/pipeline.py",
        "batch_predict/pipeline.py",
        "setup.py",
    } <= files


def upload_dir(local_dir: str, gs_dir: str) -> None:
    for root, _, names in os.walk(local_dir):
        for name in names:
            path = os.path.join(root, name)
            with (
                open(path, "rb") as src,
                beam.io.filesystems.FileSystems.create(storage.join(gs_dir, os.path.relpath(path, local_dir))) as dst,
            ):
                dst.write(src.read())
