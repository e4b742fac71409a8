"""Vertex AI Model Registry and batch prediction, from the config's `cloud.registry` section.

- Every run promoted to LATEST (`nextword cloud train` after the bar, or `nextword cloud promote`) becomes a
  version of one registry model, `cloud.registry.model_id`: its bundle uploaded with Vertex AI's prebuilt
  TensorFlow serving container (which calls the bundle's batched `serving_default`), the run named in the
  version's `run` label, and the alias `cloud.registry.alias` moved to it, so the alias follows LATEST. A run
  promoted again (a rollback) gets the alias back on its existing version, not a new upload.
- `nextword cloud render` writes vertex_batch_prediction.json: a BatchPredictionJob of the aliased version over
  JSONL files (`{"text": "..."}` per line) or a BigQuery table with a `text` column, into JSONL files or
  BigQuery.

The request bodies here are what is sent; the tests parse them into the official message types.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re

from nextword import cloud
from nextword.config import Config, ConfigError

_LOG = logging.getLogger(__name__)

_ALIAS = re.compile(r"[a-z][a-zA-Z0-9-]{0,126}[a-z0-9-]")  # MergeVersionAliasesRequest's rule
_LABEL_VALUE = re.compile(r"[^a-z0-9_-]")  # label values: lowercase letters, digits, _ and -, at most 63
INPUT_FIELD = "text"  # serving_default's input: each instance is {"text": line}


def _parent(config: Config) -> str:
    return f"projects/{config.cloud.project}/locations/{config.cloud.region}"


def model_name(config: Config) -> str:
    return f"{_parent(config)}/models/{config.cloud.registry.model_id}"


def check(config: Config) -> None:
    cloud.require(config, "cloud.project", "cloud.region", "cloud.registry.model_id", "cloud.registry.serving_image")
    alias = config.cloud.registry.alias
    if not _ALIAS.fullmatch(alias) or alias == "default":
        raise ConfigError(
            f"cloud.registry.alias: {alias!r} is not a version alias ([a-z][a-zA-Z0-9-]*[a-z0-9-], not 'default')"
        )


def run_label(run_dir: str) -> str:
    """The run's folder name as a label value (a run promoted again is found by it)."""
    return _LABEL_VALUE.sub("-", posixpath.basename(run_dir.rstrip("/")).lower())[:63]


def upload_request(config: Config, run_dir: str, bundle_dir: str, test_perplexity: float, first: bool) -> dict:
    """The UploadModelRequest body: the first version creates the model (modelId), later ones name it
    (parentModel), so every promoted run is a version of the same model."""
    check(config)
    registry = config.cloud.registry
    body: dict = {
        "parent": _parent(config),
        "model": {
            "displayName": registry.model_id,
            "artifactUri": bundle_dir,
            "containerSpec": {"imageUri": registry.serving_image},
            "versionDescription": f"{run_dir}: test perplexity {test_perplexity:.4g}",
            "labels": {"app": "nextword", "run": run_label(run_dir)},
        },
    }
    body.update({"modelId": registry.model_id} if first else {"parentModel": model_name(config)})
    return body


def _source(uri: str) -> dict:
    if uri.startswith("gs://"):
        return {"instancesFormat": "jsonl", "gcsSource": {"uris": [uri]}}
    if uri.startswith("bq://"):
        return {"instancesFormat": "bigquery", "bigquerySource": {"inputUri": uri}}
    raise ConfigError(f"cloud.registry.batch_input: {uri!r} is neither gs://…jsonl nor bq://PROJECT.DATASET.TABLE")


def _destination(uri: str) -> dict:
    if uri.startswith("gs://"):
        return {"predictionsFormat": "jsonl", "gcsDestination": {"outputUriPrefix": uri}}
    if uri.startswith("bq://"):
        return {"predictionsFormat": "bigquery", "bigqueryDestination": {"outputUri": uri}}
    raise ConfigError(f"cloud.registry.batch_output: {uri!r} is neither gs://… nor bq://PROJECT[.DATASET]")


def batch_prediction_job(config: Config) -> dict:
    """The BatchPredictionJob body: the aliased version (the promoted run) over the configured input."""
    check(config)
    registry = config.cloud.registry
    cloud.require(config, "cloud.registry.batch_input", "cloud.registry.batch_output")
    source = _source(registry.batch_input)
    # A BigQuery row becomes {"text": ...}, serving_default's one input; a JSONL line already is one.
    source_fields = {"instanceConfig": {"includedFields": [INPUT_FIELD]}} if "bigquerySource" in source else {}
    return {
        "displayName": f"nextword-batch-{registry.model_id}",
        "model": f"{model_name(config)}@{registry.alias}",
        "inputConfig": source,
        **source_fields,
        "outputConfig": _destination(registry.batch_output),
        "dedicatedResources": {
            "machineSpec": {"machineType": registry.batch_machine_type},
            "startingReplicaCount": 1,
            "maxReplicaCount": registry.batch_max_replica_count,
        },
        "labels": {"app": "nextword"},
    }


def publish(config: Config, run_dir: str, bundle_dir: str, test_perplexity: float) -> str:
    """The promoted run as the model's aliased version (uploaded unless the model has it); its name@version."""
    check(config)
    try:
        from google.api_core import exceptions
        from google.cloud.aiplatform_v1 import ModelServiceClient, UploadModelRequest
    except ImportError:  # a test extra, and in the trainer image (infra/Dockerfile.trainer), not a dependency
        raise ConfigError(
            "cloud.registry.model_id: uploading to the Model Registry needs google-cloud-aiplatform; "
            "pip install 'google-cloud-aiplatform>=1.60', or set cloud.registry.model_id to \"\""
        ) from None
    client = ModelServiceClient(client_options={"api_endpoint": f"{config.cloud.region}-aiplatform.googleapis.com"})
    name = model_name(config)
    try:
        found = list(client.list_model_versions(name=name, filter=f'labels.run="{run_label(run_dir)}"'))
        first = False
    except exceptions.NotFound:  # no model yet: this upload creates it
        found, first = [], True
    if found:
        version = found[0].version_id
    else:
        body = upload_request(config, run_dir, bundle_dir, test_perplexity, first)
        uploaded = client.upload_model(request=UploadModelRequest.from_json(json.dumps(body))).result()
        version = uploaded.model_version_id
    # An alias names one version of a model: merging it onto this version moves it from the one that had it.
    client.merge_version_aliases(name=f"{name}@{version}", version_aliases=[config.cloud.registry.alias])
    _LOG.info("%s@%s is now %s@%s", name, version, name, config.cloud.registry.alias)
    return f"{name}@{version}"
