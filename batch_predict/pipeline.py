"""The batch prediction job: text files -> one JSONL record per input line + summary.json.

    python -m batch_predict --config configs/demo.yaml --set predict.mode=score [Beam options]

The bundle is checked before any work starts. Files are read in byte ranges
(large files are shared between workers); every line is keyed by its file,
1-based line number and byte offset. Each range's records are committed as a
shard of their own (batch_predict/resume.py): a killed job rerun with the same
command scores only the ranges not yet committed. `summary.json` is written
last and proves input lines == output records. Output schema: batch_predict/schema.json.

Within a worker, a range's model calls run on their own threads
(`predict.model_calls_in_flight` at once, each on its share of the cores), so
reading and writing records overlap inference. Locally,
`--direct_running_mode=multi_processing --direct_num_workers=2` runs two
worker processes (slower to start: the runner then talks gRPC to itself, which
an https_proxy setting without no_proxy=localhost breaks).
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import apache_beam as beam

from batch_predict import core, resume
from batch_predict.bigquery_sink import WriteRecordsToBigQuery
from batch_predict.transforms import ScoreRanges
from nextword import cloud, storage
from nextword.artifacts import bundle as bundle_lib
from nextword.artifacts.predictions import SUMMARY_FILE, Summary
from nextword.beam import pipelines
from nextword.config import Config, PredictConfig

_LOG = logging.getLogger(__name__)


def list_inputs(input_glob: str) -> list[tuple[str, int]]:
    """(path, size) of every file matched by the comma-separated globs."""
    files: dict[str, int] = {}
    for glob in (g.strip() for g in input_glob.split(",") if g.strip()):
        matched = storage.match_regular(glob)
        for path in matched.not_regular:  # never opened: a FIFO would wait for a writer for ever
            storage.refuse_special(path)
        if matched.dangling_links:
            raise FileNotFoundError(
                f"predict.input_glob: {matched.dangling_links[0]}: a symbolic link to nothing; "
                "remove it or restore its target"
            )
        if not matched.files:
            raise FileNotFoundError(f"predict.input_glob: {glob} matches no file")
        files.update(matched.files)
    if not files:
        raise FileNotFoundError("predict.input_glob: empty; set it to the text files to predict")
    return sorted(files.items())


def make_summary(
    cfg: PredictConfig, bundle: bundle_lib.Bundle, files: list[tuple[str, int]], line_counts: dict,
    stats: Counter, shards: list[str], seconds: float, ranges: int, resumed: dict[int, dict],
) -> Summary:  # fmt: skip
    input_lines = sum(line_counts.values())
    return Summary(
        input_glob=cfg.input_glob,
        bundle_dir=bundle.path,
        fingerprint=bundle.fingerprint,
        model_fingerprint=bundle.model_fingerprint,
        mode=cfg.mode,
        context=cfg.context,
        files=len(files),
        bytes=sum(size for _, size in files),
        input_lines=input_lines,
        output_records=stats["records"],
        complete=input_lines == stats["records"],
        rejects_by_reason={k.split(".", 1)[1]: v for k, v in sorted(stats.items()) if k.startswith("error.")},
        flags={k.split(".", 1)[1]: v for k, v in sorted(stats.items()) if k.startswith("flag.")},
        **core.score_totals(stats),
        seconds=round(seconds, 3),
        lines_per_second=round(input_lines / seconds, 1) if seconds > 0 else None,
        ranges=ranges,
        resumed_ranges=len(resumed),
        resumed_lines=sum(marker["stats"].get("records", 0) for marker in resumed.values()),
        output_shards=sorted(shards),
    )


def _write_summary(_, cfg, bundle, files, started, ranges, resumed, line_counts, stats, scored) -> dict:
    """Writes summary.json, the commit marker, only for a complete job: one record per input line."""
    stats = pipelines.sum_counters([stats, *(Counter(marker["stats"]) for marker in resumed.values())])
    shards = scored + [resume.shard_name(i, ranges) for i in resumed]
    summary = make_summary(cfg, bundle, files, line_counts, stats, shards, time.time() - started, ranges, resumed)
    path = storage.join(cfg.output_dir, SUMMARY_FILE)
    if not summary.complete:
        raise OSError(
            f"{cfg.input_glob}: {summary.input_lines} input lines but {summary.output_records} records "
            f"(an input file changed while the job ran), so no {path}; rerun once the input files stay unchanged"
        )
    storage.write_marker(path, summary.to_dict())
    _LOG.info("wrote %s: %d input lines, %d records, %s lines/s", path, summary.input_lines,
              summary.output_records, summary.lines_per_second)  # fmt: skip
    return summary.to_dict()


def build(p: beam.Pipeline, config: Config) -> beam.PCollection:
    """Adds the job to `p`; returns the PCollection of output records (JSON lines)."""
    cfg = config.predict
    if storage.within(cfg.output_dir, cfg.bundle_dir):  # as folders: a link's spelling hides nothing
        raise ValueError(
            f"predict.output_dir: {cfg.output_dir} is in predict.bundle_dir {cfg.bundle_dir}; "
            "choose an output_dir outside the bundle"
        )
    bundle = bundle_lib.load_bundle(cfg.bundle_dir)  # one-line error before any work starts
    bundle_lib.check_scoring(bundle)
    files = list_inputs(cfg.input_glob)
    ranges = core.plan_ranges(files, core.range_bytes(sum(size for _, size in files), cfg.split_bytes))
    _LOG.info("predicting %s for %d files (%d ranges) with bundle %s into %s",
              cfg.mode, len(files), len(ranges), bundle.path, cfg.output_dir)  # fmt: skip
    job = resume.job_identity(cfg, bundle, ranges)
    resumed: dict[int, dict] = {}
    if not cloud.launch_only(p.options):  # building a template leaves the last run's output alone
        inputs = [path for path, _ in files]
        storage.check_readable(inputs)  # before anything is cleared, as the bundle above
        resumed = resume.prepare_output(cfg.output_dir, job, inputs)
    started = time.time()

    all_ranges = p | "PlanRanges" >> beam.Create(ranges)
    todo = [(i, r) for i, r in enumerate(ranges) if i not in resumed]
    todo_ranges = p | "RangesToScore" >> beam.Create(todo) | "SpreadRanges" >> beam.Reshuffle()
    inputs = (len(ranges), sum(size for _, size in files))
    scored, line_counts = (all_ranges, todo_ranges) | "Score" >> ScoreRanges(
        cfg, bundle, resume.job_digest(job), inputs
    )
    stats = (
        scored
        | "RangeStats" >> beam.Map(lambda done: Counter(done["stats"]))
        | "SumStats" >> beam.CombineGlobally(pipelines.sum_counters)
    )
    summary = pipelines.write_last(
        p,
        "WriteSummary",
        _write_summary,
        cfg=cfg,
        bundle=bundle,
        files=files,
        started=started,
        ranges=len(ranges),
        resumed=resumed,
        line_counts=beam.pvalue.AsSingleton(line_counts),
        stats=beam.pvalue.AsSingleton(stats),
        scored=beam.pvalue.AsList(scored | "ShardNames" >> beam.Map(lambda done: done["shard"])),
    )
    if cfg.output_table:
        summary | "ToBigQuery" >> WriteRecordsToBigQuery(cfg)
    return scored


def summary_path(config: Config) -> str:
    return storage.join(config.predict.output_dir, SUMMARY_FILE)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict:
    """Runs the job and returns summary.json's content ({} when Beam only builds the job)."""
    return pipelines.run_job("predict", argv, test_pipeline, build, summary_path, _output_dir)


def _output_dir(config: Config) -> tuple[str, str]:
    return config.predict.output_dir, "predict.output_dir"
