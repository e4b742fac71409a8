"""The BigQuery sink of batch prediction: schema conversion, rows of a complete job, the Dataflow wiring."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from batch_predict import bigquery_sink, pipeline
from nextword.artifacts.predictions import RECORD_FIELDS
from tests.support.predict import chain_words, job_config, predict_argv


def _as_dicts(fields) -> list[dict]:
    """TableFieldSchema messages back to schema.json's form (description included, nested fields)."""
    out = []
    for field in fields:
        item = {"name": field.name, "type": field.type, "mode": field.mode}
        if field.description:
            item["description"] = field.description
        if field.fields:
            item["fields"] = _as_dicts(field.fields)
        out.append(item)
    return out


@pytest.mark.unit
def test_schema_json_converts_to_the_table_schema_write_to_bigquery_takes():
    fields = bigquery_sink.schema_fields()
    converted = bigquery_sink.table_schema(fields)
    assert _as_dicts(converted.fields) == fields  # names, types, modes, descriptions and nested records
    assert [f.name for f in converted.fields] == list(RECORD_FIELDS)  # every record field is a column, in order
    next_field = next(f for f in converted.fields if f.name == "next")
    assert (next_field.type, next_field.mode, [f.name for f in next_field.fields]) == (
        "RECORD",
        "REPEATED",
        ["word", "prob"],
    )


@pytest.mark.unit
def test_a_null_repeated_field_becomes_an_empty_array_and_nothing_else_changes():
    fields = bigquery_sink.schema_fields()
    record = {"file": "a.txt", "line": 1, "offset": 0, "next": None, "token_scores": None, "flags": [],
              "log_prob": None, "error": "empty_line", "model": "m"}  # fmt: skip
    assert bigquery_sink.table_row(record, fields) == record | {"next": [], "token_scores": []}


@pytest.mark.beam
def test_the_table_gets_one_row_per_input_line_of_the_complete_job_rejects_included(tiny_bundle, tmp_path):
    lines = [chain_words(tiny_bundle, 0, 5), "", chain_words(tiny_bundle, 2, 3), "?!", chain_words(tiny_bundle, 4, 8)]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    config = job_config(tiny_bundle, tmp_path, str(tmp_path / "in.txt"), "predict.mode=both", "predict.split_bytes=1")
    summary = pipeline.run(predict_argv(config))
    assert summary["input_lines"] == len(lines) and summary["complete"]
    fields = bigquery_sink.schema_fields()
    expected = [
        bigquery_sink.table_row(json.loads(line), fields)
        for shard in summary["output_shards"]
        for line in (tmp_path / "out" / shard).read_text().splitlines()
    ]
    assert len(expected) == summary["input_lines"]
    assert sum(1 for row in expected if row["error"]) == sum(summary["rejects_by_reason"].values())
    with beam.Pipeline() as p:
        rows = p | beam.Create([summary]) | bigquery_sink.CommittedRows(str(tmp_path / "out"), fields)
        assert_that(
            rows | beam.Map(json.dumps, sort_keys=True), equal_to([json.dumps(r, sort_keys=True) for r in expected])
        )


@pytest.mark.beam
def test_batch_prediction_for_dataflow_wires_the_bigquery_file_loads(gcs_bucket, tiny_bundle, tmp_path):
    from apache_beam.portability.api import beam_runner_api_pb2

    from nextword import storage
    from nextword.beam import pipelines
    from tests.support.dataflow import check_job, cloud_args, upload_dir

    upload_dir(tiny_bundle.bundle_dir, f"{gcs_bucket}/bundle")
    storage.write_text(f"{gcs_bucket}/in/lines.txt", "w1 w2 w3\n")
    job_file = str(tmp_path / "predict-job.json")
    config, beam_args = pipelines.parse("predict", cloud_args(
        gcs_bucket, job_file, f"predict.bundle_dir={gcs_bucket}/bundle", f"predict.input_glob={gcs_bucket}/in/*.txt",
        f"predict.output_dir={gcs_bucket}/out", "predict.output_table=my-project:nextword.predictions"))  # fmt: skip
    with beam.Pipeline(options=pipelines.pipeline_options(beam_args)) as p:
        pipeline.build(p, config)
    job = json.load(open(job_file))
    labels = {"WriteSummary", "ToBigQuery/Rows/ReadRecords", "ToBigQuery/WriteBigQuery"}
    check_job(job, "predict", labels)
    proto = beam_runner_api_pb2.Pipeline.FromString(
        storage.read_bytes(job["environment"]["sdkPipelineOptions"]["options"]["pipelineUrl"])
    )
    names = {t.unique_name for t in proto.components.transforms.values()}
    # File loads (load jobs from files), not streaming inserts.
    assert any(name.startswith("ToBigQuery/WriteBigQuery/BigQueryBatchFileLoads") for name in names), sorted(names)
    assert not any("StreamInsertRows" in name for name in names)
