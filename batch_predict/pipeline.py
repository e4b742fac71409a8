"""The batch prediction job: text files -> one JSONL record per input line + summary.json.

    python -m batch_predict --config configs/demo.yaml --set predict.mode=score [Beam options]

The bundle is checked before any work starts. Files are read in byte ranges
(large files are shared between workers); every line is keyed by its file,
1-based line number and byte offset. `summary.json` is written last and proves
input lines == output records. Output schema: batch_predict/schema.json.

Locally, `--direct_running_mode=multi_threading --direct_num_workers=2` runs
two worker threads over the one shared model (TensorFlow releases the GIL, so
one thread's reading and formatting overlaps the other's inference): faster
for large inputs, slower to start (the runner then talks gRPC to itself, which
an https_proxy setting without no_proxy=localhost breaks).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Iterable

import apache_beam as beam

from batch_predict import core
from batch_predict.transforms import FormatRecordsFn, Predict, ReadKeyedLines, ScoreDocuments
from nextword import bundle as bundle_lib
from nextword import cli_common, cloud, storage
from nextword.config import Config, PredictConfig

_LOG = logging.getLogger(__name__)
SUMMARY_FILE = "summary.json"
OUTPUT_PREFIX = "predictions"
OUTPUT_SUFFIX = ".jsonl"
# The names this job gives its files (Beam's WriteToText shards and its temporary folder, our summary's
# temporary file): all that its clearing deletes, besides the shards the previous summary lists.
OWNED = (
    storage.Owned("", re.escape(OUTPUT_PREFIX) + r"-\d{5,}-of-\d{5,}" + re.escape(OUTPUT_SUFFIX)),
    storage.Owned("", "beam-temp-" + re.escape(OUTPUT_PREFIX) + "-[0-9a-f]{32}"),
    storage.Owned("", storage.temp_names(SUMMARY_FILE)),
)


def list_inputs(input_glob: str) -> list[tuple[str, int]]:
    """(path, size) of every file matched by the comma-separated globs."""
    files: dict[str, int] = {}
    for glob in (g.strip() for g in input_glob.split(",") if g.strip()):
        matched = storage.match(glob)
        if not matched:
            raise FileNotFoundError(f"predict.input_glob: {glob} matches no file")
        files.update(matched)
    if not files:
        raise FileNotFoundError("predict.input_glob: empty; set it to the text files to predict")
    return sorted(files.items())


def clear_output(output_dir: str, inputs: Iterable[str] = ()) -> None:
    """Removes summary.json first (a failed rerun never looks complete), then this job's old files.

    Only the shards the old summary lists and files with this job's own names
    (OWNED) go, never through a symbolic link (refused with one line), never one
    of `inputs` (nextword/storage.py: clear_owned).
    """
    storage.makedirs(output_dir, "predict.output_dir")
    storage.clear_owned(output_dir, OWNED, marker=SUMMARY_FILE, listed_key="output_shards", keep=inputs)


def summary_dict(
    cfg: PredictConfig, bundle: bundle_lib.Bundle, files: list[tuple[str, int]], line_counts: dict,
    stats: Counter, shards: list[str], seconds: float,
) -> dict:  # fmt: skip
    input_lines = sum(line_counts.values())
    prefix = cfg.output_dir.rstrip("/") + "/"
    return {
        "input_glob": cfg.input_glob,
        "bundle_dir": bundle.path,
        "fingerprint": bundle.fingerprint,
        "model_fingerprint": bundle.model_fingerprint,
        "mode": cfg.mode,
        "context": cfg.context,
        "files": len(files),
        "bytes": sum(size for _, size in files),
        "input_lines": input_lines,
        "output_records": stats["records"],
        "complete": input_lines == stats["records"],
        "rejects_by_reason": {k.split(".", 1)[1]: v for k, v in sorted(stats.items()) if k.startswith("error.")},
        "flags": {k.split(".", 1)[1]: v for k, v in sorted(stats.items()) if k.startswith("flag.")},
        **core.score_totals(stats),
        "seconds": round(seconds, 3),
        "lines_per_second": round(input_lines / seconds, 1) if seconds > 0 else None,
        "output_shards": sorted(path[len(prefix) :] if path.startswith(prefix) else path for path in shards),
    }


def _write_summary(_, cfg, bundle, files, started, line_counts, stats, shards) -> dict:
    """Writes summary.json, the commit marker, only for a complete job: one record per input line."""
    summary = summary_dict(cfg, bundle, files, line_counts, stats, shards, time.time() - started)
    path = storage.join(cfg.output_dir, SUMMARY_FILE)
    if not summary["complete"]:
        raise OSError(
            f"{cfg.input_glob}: {summary['input_lines']} input lines but {summary['output_records']} records "
            f"(an input file changed while the job ran), so no {path}; rerun once the input files stay unchanged"
        )
    storage.write_marker(path, summary)
    _LOG.info("wrote %s: %d input lines, %d records, %s lines/s", path, summary["input_lines"],
              summary["output_records"], summary["lines_per_second"])  # fmt: skip
    return summary


def build(p: beam.Pipeline, config: Config) -> beam.PCollection:
    """Adds the job to `p`; returns the PCollection of output records (JSON lines)."""
    cfg = config.predict
    bundle = bundle_lib.load_bundle(cfg.bundle_dir)  # one-line error before any work starts
    bundle_lib.check_scoring(bundle)
    files = list_inputs(cfg.input_glob)
    ranges = core.plan_ranges(files, core.range_bytes(sum(size for _, size in files), cfg.split_bytes))
    _LOG.info("predicting %s for %d files (%d ranges) with bundle %s into %s",
              cfg.mode, len(files), len(ranges), bundle.path, cfg.output_dir)  # fmt: skip
    if not cloud.launch_only(p.options):  # building a template leaves the last run's output alone
        inputs = [path for path, _ in files]
        storage.check_readable(inputs)  # before anything is cleared, as the bundle above
        clear_output(cfg.output_dir, inputs)
    started = time.time()

    range_pcoll = p | "PlanRanges" >> beam.Create(ranges) | "SpreadRanges" >> beam.Reshuffle()
    # Every line, rejected ones too, takes the one path read -> infer -> write: no Flatten,
    # which the local runner would materialize, so memory stays independent of input size.
    inputs = (len(ranges), sum(size for _, size in files))
    if cfg.context == "document":  # each range's lines in order, through one carried state
        fields, line_counts = range_pcoll | "ScoreDocuments" >> ScoreDocuments(cfg, bundle, inputs)
    else:
        lines, line_counts = range_pcoll | "ReadLines" >> ReadKeyedLines(cfg, bundle, inputs)
        fields = lines | "Predict" >> Predict(cfg, bundle)
    formatted = fields | "Format" >> beam.ParDo(FormatRecordsFn(bundle.model_fingerprint)).with_outputs(
        FormatRecordsFn.STATS, main="records"
    )
    shards = formatted.records | "WriteRecords" >> beam.io.WriteToText(
        storage.join(cfg.output_dir, OUTPUT_PREFIX),
        file_name_suffix=OUTPUT_SUFFIX,
        num_shards=cfg.num_shards,
    )
    stats = formatted[FormatRecordsFn.STATS] | "SumStats" >> beam.CombineGlobally(cli_common.sum_counters)
    cli_common.write_last(
        p,
        "WriteSummary",
        _write_summary,
        cfg=cfg,
        bundle=bundle,
        files=files,
        started=started,
        line_counts=beam.pvalue.AsSingleton(line_counts),
        stats=beam.pvalue.AsSingleton(stats),
        shards=beam.pvalue.AsList(shards),
    )
    return formatted.records


def summary_path(config: Config) -> str:
    return storage.join(config.predict.output_dir, SUMMARY_FILE)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict:
    """Runs the job and returns summary.json's content ({} when Beam only builds the job)."""
    return cli_common.run_job("predict", argv, test_pipeline, build, summary_path)
