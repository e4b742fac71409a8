"""The baseline stage: an interpolated modified Kneser-Ney n-gram model of the training split.

    nextword baseline --config configs/demo.yaml [Beam options]      (also: python -m baseline)

It reads train.data_dir (the manifest, vocabulary and shards the LSTM trains
on). Beam counts the n-grams: one reader per training shard (shards keep
running text in order), each shard's counts split into `baseline.buckets` by a
hash of the n-gram and merged per bucket, so the merge spreads over workers on
Dataflow. The last step estimates the model, scores valid and test exactly as
the trainer does (both of its protocols) and writes `model.arpa` and then
`baseline.json`, the commit marker, to baseline.output_dir.
"""

from __future__ import annotations

import io
import logging
import time
from collections import Counter

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from baseline import arpa, kneser_ney, ngrams, score
from nextword import cloud, storage
from nextword.artifacts import baseline_report, data_dir
from nextword.artifacts.baseline_report import BaselineReport
from nextword.artifacts.data_dir import Manifest
from nextword.beam import pipelines
from nextword.config import Config
from nextword.text import contract

_LOG = logging.getLogger(__name__)
_NAMESPACE = "nextword.baseline"


class CountShardFn(beam.DoFn):
    """One training shard -> (bucket, raw n-gram counts) for each of `buckets` buckets."""

    def __init__(self, order: int, overlap: int, buckets: int):
        self._order = order
        self._overlap = overlap
        self._buckets = buckets

    def process(self, path: str):
        started = time.monotonic()
        counts = ngrams.count_ngrams(score.read_windows([path]), self._order, self._overlap)
        parts: list[dict] = [{} for _ in range(self._buckets)]
        for gram, count in counts.items():
            parts[hash(gram) % self._buckets][gram] = count  # tuples of ints hash the same in every process
        Metrics.counter(_NAMESPACE, "shards").inc()
        Metrics.counter(_NAMESPACE, "ngrams").inc(len(counts))
        _LOG.info("counted %s: %d distinct n-grams in %.1f s", path, len(counts), time.monotonic() - started)
        yield from ((bucket, part) for bucket, part in enumerate(parts) if part)


class MergeCountsFn(beam.CombineFn):
    """Adds up n-gram count dicts in place (memory: one bucket's distinct n-grams)."""

    def create_accumulator(self):
        return Counter()

    def add_input(self, acc, element):
        acc.update(element)
        return acc

    def merge_accumulators(self, accumulators):
        merged = Counter()
        for acc in accumulators:
            merged.update(acc)
        return merged

    def extract_output(self, acc):
        return dict(acc)


def baseline_dir(config: Config) -> str:
    return baseline_report.output_dir(config.baseline.output_dir, config.train.data_dir)


def _write_arpa(model: kneser_ney.NgramModel, vocab: list[str], path: str) -> None:
    """Streams the ARPA text (tens of MB for a Penn Treebank 5-gram) to a local or gs:// file."""
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        out = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
        arpa.write_arpa(model, vocab, out)
        out.flush()
        out.detach()


def _estimate_and_score(_, config: Config, manifest: Manifest, vocab: list[str], buckets: list, started: float) -> str:
    """The last step: model, ARPA file, evaluation on valid and test, then baseline.json."""
    counted = time.monotonic()
    folder, source = baseline_dir(config), config.train.data_dir
    raw: dict = {}
    for _, part in buckets:  # buckets hold disjoint n-grams
        raw.update(part)
    order = config.baseline.order
    model = kneser_ney.estimate(raw, order, len(vocab))
    del raw
    overlap = ngrams.overlap_of(manifest.record_length, manifest.stride)
    evaluation = {
        protocol: {
            split: score.evaluate(
                model, score.read_windows(data_dir.shard_paths(source, manifest, split)), overlap, protocol == "carried"
            )
            for split in ("valid", "test")
        }
        for protocol in baseline_report.PROTOCOLS
    }
    estimated = time.monotonic()
    _write_arpa(model, vocab, storage.join(folder, baseline_report.ARPA_FILE))
    report = BaselineReport(
        order=order,
        data_dir=source,
        data_fingerprint=manifest.fingerprint,
        manifest_sha256=data_dir.manifest_sha256(source),
        train_tokens=manifest.count("tokens", "train"),
        ngrams=model.ngram_counts(),
        discounts=[list(d) for d in model.discounts],
        fallback_orders=list(model.fallback_orders),
        evaluation=evaluation,
        count_seconds=round(counted - started, 2),
        estimate_seconds=round(estimated - counted, 2),
    )
    path = baseline_report.write(report, folder)
    for protocol, splits in evaluation.items():
        _LOG.info(
            "%d-gram baseline (%s context): valid perplexity %.2f, test %.2f over %d test tokens",
            order,
            protocol,
            splits["valid"]["perplexity"],
            splits["test"]["perplexity"],
            splits["test"]["tokens"],
        )
    return path


def build(p: beam.Pipeline, config: Config) -> None:
    """Adds the baseline's transforms to `p`."""
    source = config.train.data_dir
    manifest, vocab = data_dir.read_manifest_and_vocab(source)
    shards = data_dir.shard_paths(source, manifest, "train")
    if not shards:
        raise ValueError(f"{storage.join(source, contract.MANIFEST_FILE)}: the train split has no shard")
    folder = baseline_dir(config)
    if not cloud.launch_only(p.options):  # the old marker goes first: a failed rerun never looks complete
        storage.makedirs(folder, "baseline.output_dir")
        storage.delete(storage.join(folder, baseline_report.REPORT_FILE))
    overlap = ngrams.overlap_of(manifest.record_length, manifest.stride)
    _LOG.info("%d-gram baseline of %s (%d training shards) into %s", config.baseline.order, source, len(shards), folder)
    counts = (
        p
        | "ListShards" >> beam.Create(shards)
        | "SpreadShards" >> beam.Reshuffle()
        | "CountShards" >> beam.ParDo(CountShardFn(config.baseline.order, overlap, config.baseline.buckets))
        | "MergeBuckets" >> beam.CombinePerKey(MergeCountsFn())
    )
    pipelines.write_last(
        p,
        "EstimateAndScore",
        _estimate_and_score,
        config=config,
        manifest=manifest,
        vocab=vocab,
        buckets=beam.pvalue.AsList(counts),
        started=time.monotonic(),
    )


def report_path(config: Config) -> str:
    return storage.join(baseline_dir(config), baseline_report.REPORT_FILE)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict:
    """Runs the baseline stage and returns baseline.json ({} when Beam only builds the job)."""
    return pipelines.run_job("baseline", argv, test_pipeline, build, report_path)
