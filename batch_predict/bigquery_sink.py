"""The BigQuery sink: a complete job's records into `predict.output_table`, beside the JSONL shards.

Once summary.json is written (every input line has its record: the job fails otherwise), the committed
shards it lists, resumed ranges' included, are read back and loaded with Beam's WriteToBigQuery in file-loads
mode (load jobs, no streaming inserts) into the table, with the schema of batch_predict/schema.json,
replacing the table's rows (WRITE_TRUNCATE). So the table holds exactly one row per input line of this job,
rejects included (as rows whose `error` says why), whatever ranges were retried or resumed: a rerun replaces
the rows instead of adding to them, and a job that fails before its summary leaves the table as it was.
"""

from __future__ import annotations

import json
import os

import apache_beam as beam
from apache_beam.io.gcp import bigquery_tools

from nextword import storage
from nextword.config import PredictConfig

SCHEMA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.json")


def schema_fields(path: str = SCHEMA_FILE) -> list[dict]:
    """batch_predict/schema.json: BigQuery's JSON schema (what `bq load` takes), a list of fields."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def table_schema(fields: list[dict]):
    """The fields as the TableSchema message WriteToBigQuery takes (names, types, modes, nesting, descriptions)."""
    return bigquery_tools.parse_table_schema_from_json(json.dumps({"fields": fields}))


def table_row(record: dict, fields: list[dict]) -> dict:
    """A JSONL record as a row: a REPEATED field the record leaves null (e.g. `next` in mode score) is [],
    since BigQuery has no null arrays."""
    repeated = {field["name"] for field in fields if field.get("mode") == "REPEATED"}
    return {name: ([] if value is None and name in repeated else value) for name, value in record.items()}


class CommittedRows(beam.PTransform):
    """summary.json's dict (one element, written only for a complete job) -> one table row per input line."""

    def __init__(self, output_dir: str, fields: list[dict]):
        super().__init__()
        self.output_dir = output_dir
        self.fields = fields

    def expand(self, summary: beam.PCollection) -> beam.PCollection:
        output_dir, fields = self.output_dir, self.fields

        def shard_paths(written: dict) -> list[str]:
            return [storage.join(output_dir, name) for name in written["output_shards"]]

        return (
            summary
            | "CommittedShards" >> beam.FlatMap(shard_paths)
            | "ReadRecords" >> beam.io.ReadAllFromText()
            | "ToRows" >> beam.Map(lambda line: table_row(json.loads(line), fields))
        )


class WriteRecordsToBigQuery(beam.PTransform):
    """summary.json's dict -> the job's records in predict.output_table (file loads, the table replaced)."""

    def __init__(self, cfg: PredictConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, summary: beam.PCollection):
        fields = schema_fields()
        return (
            summary
            | "Rows" >> CommittedRows(self.cfg.output_dir, fields)
            | "WriteBigQuery"
            >> beam.io.WriteToBigQuery(
                self.cfg.output_table,
                schema=table_schema(fields),
                method=beam.io.WriteToBigQuery.Method.FILE_LOADS,
                create_disposition=beam.io.BigQueryDisposition.CREATE_IF_NEEDED,
                write_disposition=beam.io.BigQueryDisposition.WRITE_TRUNCATE,
            )
        )
