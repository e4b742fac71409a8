"""The baseline stage: an interpolated modified Kneser-Ney n-gram model of the training split.

    nextword baseline --config configs/demo.yaml [Beam options]      (also: python -m baseline)

It reads train.data_dir (the manifest, vocabulary and shards the LSTM trains
on) and estimates the model as keyed steps (the pure cores are in
baseline/tables.py), each holding one chunk of tokens or one bucket's n-grams:

1. CountShards: one reader per training shard counts its n-grams, chunk by
   chunk, and files each chunk's counts by bucket (the hash of an n-gram's last
   two words).
2. MergeBuckets: per bucket, the counts merged, the adjusted counts, and this
   bucket's share of the global figures (count-of-counts, unigram continuation
   counts, bigram contexts' sums); each n-gram is sent on to its context's bucket.
3. Discounts: the global figures summed (small: a side input).
4. SumContexts: per bucket, the contexts' sums and backoffs, sent back to the n-grams.
5. Interpolate: per bucket, the probabilities down the orders; a model shard
   and the bucket's ARPA lines per order.
6. Scoring: each valid/test position asks the bucket of its last context word
   and token for its n-grams, and the bucket of its last two context words for
   its contexts' backoffs (keyed joins); the answers give the perplexity.
7. WriteModel: model.arpa streamed from the shards, then baseline.json, the commit marker.

Steps exchange numpy files in a work folder under baseline.output_dir (Beam
carries only their names), removed at the end.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from baseline import arpa, ngrams, score, tables
from nextword import cloud, storage
from nextword.artifacts import baseline_report, data_dir
from nextword.artifacts.baseline_report import BaselineReport
from nextword.artifacts.data_dir import Manifest
from nextword.beam import pipelines
from nextword.config import Config
from nextword.text import contract

_LOG = logging.getLogger(__name__)
_NAMESPACE = "nextword.baseline"
WORK_DIR = "work"
# Bytes per token of a counting chunk and per n-gram of a bucket's tables, measured with room to spare:
# with them the budget sizes the chunks and the number of buckets.
_CHUNK_BYTES_PER_TOKEN = 240
_BUCKET_BYTES_PER_NGRAM = 160
_BUCKET_SKEW = 2  # the largest bucket against the mean (frequent word pairs gather in one bucket)
# Bytes per scored position while its queries are made (a Python (context, token) pair, then its rows):
# the budget sizes the parts a split is scored in, so scoring's memory does not grow with the split.
_QUERY_BYTES_PER_POSITION = 1024


# What a run writes in its folder (WRITTEN: replaced whole, the work folder with everything in it) and the
# temporary names of its atomic writes (OWNED): in a folder nextword did not mark, any of them stops the run.
WRITTEN = (baseline_report.REPORT_FILE, baseline_report.ARPA_FILE, WORK_DIR)
OWNED = (storage.Owned("", storage.temp_names(baseline_report.REPORT_FILE, baseline_report.ARPA_FILE)),)


def _ours(content: dict) -> bool:
    """Whether a baseline.json is one nextword wrote (a folder from before the ownership mark is adopted)."""
    try:
        BaselineReport.from_dict(content, baseline_report.REPORT_FILE)
    except ValueError:
        return False
    return True


def baseline_dir(config: Config) -> str:
    return config.baseline.output_dir  # <train.data_dir>/baseline unless set (nextword/config.py)


def sizing(config: Config, train_tokens: int) -> tuple[int, int, int]:
    """(tokens per counting chunk, buckets, positions per scored part): what keeps every step within
    baseline.memory_budget_mb.

    A bucket holds at most its share of train_tokens * order distinct n-grams.
    """
    budget = config.baseline.memory_budget_mb << 20
    order = config.baseline.order
    chunk_tokens = max(budget // _CHUNK_BYTES_PER_TOKEN, 4 * order)
    needed = math.ceil(train_tokens * order * _BUCKET_BYTES_PER_NGRAM * _BUCKET_SKEW / budget)
    part_positions = max(budget // _QUERY_BYTES_PER_POSITION, 1024)
    return chunk_tokens, max(config.baseline.buckets, needed), part_positions


def _save(path: str, **arrays: np.ndarray) -> str:
    """A work file: written once, read by a later step (no rename: the job's commit marker is what commits).

    A JSON line naming each array's dtype and shape, then their bytes: no zip and CRC as in .npz
    (the step that reads it is the check), and nothing that unpickles.
    """
    arrays = {name: np.require(a, requirements="C") for name, a in arrays.items()}
    head = {name: [a.dtype.str, list(a.shape)] for name, a in arrays.items()}
    with _open_write(path) as out:
        out.write(json.dumps(head).encode("utf-8") + b"\n")
        for a in arrays.values():
            out.write(memoryview(a.reshape(-1).view(np.uint8)))
    return path


def _load(path: str) -> dict[str, np.ndarray]:
    with storage.open_read(path) as raw:
        data = raw.read()
    end = data.index(b"\n")
    offset = end + 1
    arrays = {}
    for name, (dtype, shape) in json.loads(data[:end]).items():
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        arrays[name] = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=offset).reshape(tuple(shape))
        offset += size
    return arrays


class CountShardFn(beam.DoFn):
    """(shard number, path) -> (bucket, counts file) per chunk and bucket; unigram counts tagged 'stats'."""

    def __init__(self, order: int, radix: int, overlap: int, buckets: int, chunk_tokens: int, work: str):
        self._order, self._radix, self._overlap = order, radix, overlap
        self._buckets, self._chunk_tokens, self._work = buckets, chunk_tokens, work

    def process(self, shard: tuple[int, str]):
        number, path = shard
        started = time.monotonic()
        chunks = tables.code_chunks(score.read_window_arrays([path]), self._overlap, self._order, self._chunk_tokens)
        for chunk, (codes, first) in enumerate(chunks):
            unigrams, counted = tables.count_chunk(codes, first, self._order, self._radix)
            yield beam.pvalue.TaggedOutput("stats", {"unigram_raw": unigrams})
            for b, part in enumerate(tables.split_chunk(counted, self._buckets)):  # every bucket gets a file,
                arrays = {}  # so every bucket's steps run
                for n, (first_words, suffixes, counts) in enumerate(part, start=2):
                    arrays[f"first{n}"], arrays[f"suffix{n}"], arrays[f"counts{n}"] = first_words, suffixes, counts
                yield b, _save(storage.join(self._work, f"count-{number:05d}-{chunk:05d}-{b:05d}.arrays"), **arrays)
            Metrics.counter(_NAMESPACE, "chunks").inc()
            Metrics.counter(_NAMESPACE, "tokens").inc(len(codes) - first)
        _LOG.info("counted %s in %.1f s", path, time.monotonic() - started)


class MergeBucketFn(beam.DoFn):
    """(bucket, counts files) -> the bucket's tables (a work file), its n-grams sent to their contexts' buckets
    ((bucket, file) per destination), and its share of the global figures (tagged 'stats')."""

    def __init__(self, order: int, radix: int, buckets: int, prune: tuple[int, ...], work: str):
        self._order, self._radix, self._buckets, self._work = order, radix, buckets, work
        self._thresholds = [0, *prune, *[prune[-1] if prune else 0] * order][: order + 1]

    def process(self, element: tuple[int, list[str]]):
        b, paths = element
        order, radix = self._order, self._radix
        pieces = []
        for path in sorted(paths):
            arrays = _load(path)
            pieces.append([tuple(arrays[f"{name}{n}"] for name in ("first", "suffix", "counts"))
                           for n in range(2, order + 1)])  # fmt: skip
        keys, raw = tables.merge_counts(pieces, order, radix)
        del pieces
        adjusted, continuation = tables.adjusted_counts(keys, raw, order, radix)
        keep = [None, None] + [tables.kept(raw[n], self._thresholds[n]) for n in range(2, order + 1)]
        coc = np.zeros((order + 1, 4), np.int64)
        for n in range(2, order + 1):
            coc[n] = tables.count_of_counts(adjusted[n])
        stats = {"unigram_continuation": continuation, "coc": coc, "counted_at": np.array([time.time()])}
        if order >= 2:
            stats["bigram_parts"] = tables.context_parts(adjusted[2], keep[2], keys[2] % radix, radix)
        yield beam.pvalue.TaggedOutput("stats", stats)
        own = {}
        for n in range(2, order + 1):
            own[f"keys{n}"], own[f"adjusted{n}"], own[f"keep{n}"] = keys[n], adjusted[n], keep[n]
        _save(_own_path(self._work, b), **own)
        words = tables.words_of(keys, order, radix)
        sent = {n: tables.rows_by(tables.table_buckets(words[n][:, :-1], self._buckets), self._buckets)
                for n in range(3, order + 1)}  # fmt: skip
        back = {f"sent{n}": np.argsort(np.concatenate(sent[n]), kind="stable") for n in range(3, order + 1)}
        _save(_sent_path(self._work, b), **back)  # where each row's sums will be among those coming back
        for d in range(self._buckets):
            arrays = {}
            for n in range(3, order + 1):
                rows = sent[n][d]
                arrays[f"words{n}"], arrays[f"adjusted{n}"] = words[n][rows, :-1], adjusted[n][rows]
                arrays[f"keep{n}"] = keep[n][rows]
            yield d, _save(storage.join(self._work, f"context-{b:05d}-{d:05d}.arrays"), **arrays)
        Metrics.counter(_NAMESPACE, "ngrams").inc(sum(len(k) for k in keys[2:]))


def _own_path(work: str, bucket: int) -> str:
    return storage.join(work, f"own-{bucket:05d}.arrays")


def _sent_path(work: str, bucket: int) -> str:
    return storage.join(work, f"sent-{bucket:05d}.arrays")


def _backoff_path(work: str, bucket: int) -> str:
    return storage.join(work, f"backoff-{bucket:05d}.arrays")


def _model_path(work: str, bucket: int) -> str:
    return storage.join(work, f"model-{bucket:05d}.arrays")


def _arpa_path(work: str, n: int, bucket: int) -> str:
    return storage.join(work, f"arpa-{n}-{bucket:05d}.txt")


class SumArraysFn(beam.CombineFn):
    """The global figures: each bucket's and chunk's shares added up ('counted_at': the latest)."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, element):
        for name, value in element.items():
            if name not in acc:
                acc[name] = value.copy()
            elif name == "counted_at":
                acc[name] = np.maximum(acc[name], value)
            else:
                acc[name] += value
        return acc

    def merge_accumulators(self, accumulators):
        merged: dict = {}
        for acc in accumulators:
            self.add_input(merged, acc)
        return merged

    def extract_output(self, acc):
        return acc


def _global_model(stats: dict, order: int, vocab_size: int) -> dict:
    radix = tables.radix_of(vocab_size)
    model = tables.global_model(
        stats.get("unigram_raw", np.zeros(radix, np.int64)),
        stats.get("unigram_continuation", np.zeros(radix, np.int64)),
        stats.get("coc", np.zeros((order + 1, 4), np.int64)),
        stats.get("bigram_parts"),
        order,
        vocab_size,
    )
    model["counted_at"] = stats.get("counted_at", np.array([time.time()]))
    return model


class SumContextsFn(beam.DoFn):
    """(bucket, n-grams whose contexts it holds) -> per source bucket, (source, file of their contexts' sums)."""

    def __init__(self, order: int, radix: int, work: str):
        self._order, self._radix, self._work = order, radix, work

    def process(self, element: tuple[int, list[str]], model: dict):
        d, paths = element
        order = self._order
        own = _load(_own_path(self._work, d))
        keys = [None, None] + [own[f"keys{n}"] for n in range(2, order + 1)]
        arrivals = [_load(path) for path in sorted(paths)]  # named by source bucket: source order
        contexts: list = [None] * (order + 1)
        for n in range(3, order + 1):
            contexts[n] = tuple(
                np.concatenate([a[f"{name}{n}"] for a in arrivals]) for name in ("words", "adjusted", "keep")
            )
        answers, backoffs = tables.context_sums(keys, contexts, order, self._radix, model["discounts"])
        _save(_backoff_path(self._work, d), **{f"backoff{n}": backoffs[n] for n in range(2, order)})
        start = {n: 0 for n in range(3, order + 1)}
        for s, arrived in enumerate(arrivals):
            arrays = {}
            for n in range(3, order + 1):
                size = len(arrived[f"adjusted{n}"])
                arrays[f"total{n}"], arrays[f"gamma{n}"] = (a[start[n] : start[n] + size] for a in answers[n])
                start[n] += size
            yield s, _save(storage.join(self._work, f"sums-{d:05d}-{s:05d}.arrays"), **arrays)


class InterpolateFn(beam.DoFn):
    """(bucket, its n-grams' context sums) -> (bucket, model shard); ARPA lines per order; kept sizes tagged."""

    def __init__(self, order: int, radix: int, buckets: int, vocab: list[str], work: str):
        self._order, self._radix, self._buckets, self._work = order, radix, buckets, work
        self._spelled = arpa.spelled_codes(vocab)

    def process(self, element: tuple[int, list[str]], model: dict):
        s, paths = element
        order, radix = self._order, self._radix
        own = _load(_own_path(self._work, s))
        keys = [None, None] + [own[f"keys{n}"] for n in range(2, order + 1)]
        adjusted = [None, None] + [own[f"adjusted{n}"] for n in range(2, order + 1)]
        keep = [None, None] + [own[f"keep{n}"] for n in range(2, order + 1)]
        arriving: list = [None] * (order + 1)
        sums = [_load(path) for path in sorted(paths)]  # named by context bucket: the order they were sent in
        sent = _load(_sent_path(self._work, s))
        for n in range(3, order + 1):
            back = [np.concatenate([part[f"{name}{n}"] for part in sums]) for name in ("total", "gamma")]
            arriving[n] = tuple(values[sent[f"sent{n}"]] for values in back)
        probs = tables.interpolate(keys, adjusted, arriving, model, order, radix)
        bucket_backoffs = _load(_backoff_path(self._work, s))
        backoffs = [None, None] + [bucket_backoffs[f"backoff{n}"] for n in range(2, order)] + [None]
        shard = {}
        for n in range(2, order + 1):
            shard[f"keys{n}"], shard[f"probs{n}"], shard[f"keep{n}"] = keys[n], probs[n], keep[n]
            if n < order:
                shard[f"backoff{n}"] = backoffs[n]
        lines = tables.arpa_orders(keys, probs, keep, backoffs, order, radix, self._spelled)
        for n, text in enumerate(lines, start=2):
            with _open_write(_arpa_path(self._work, n, s)) as out:
                out.write(text.encode("utf-8"))
        sizes = [int(np.count_nonzero(keep[n])) for n in range(2, order + 1)]
        yield beam.pvalue.TaggedOutput("sizes", sizes)
        yield s, _save(_model_path(self._work, s), **shard)


def _open_write(path: str):
    if storage.is_remote(path):
        return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return open(path, "wb")


def _model_tables(shard: dict, order: int) -> tuple[list, list, list, list]:
    keys = [None, None] + [shard[f"keys{n}"] for n in range(2, order + 1)]
    probs = [None, None] + [shard[f"probs{n}"] for n in range(2, order + 1)]
    keep = [None, None] + [shard[f"keep{n}"] for n in range(2, order + 1)]
    backoffs = [None, None] + [shard[f"backoff{n}"] for n in range(2, order)] + [None]
    return keys, probs, keep, backoffs


class QueriesFn(beam.DoFn):
    """(split, protocol) -> per part of at most `part_positions` positions: the positions it scores (tagged
    'positions') and, per bucket, what it asks of it. Parts are keyed (split, protocol, part)."""

    def __init__(self, source: str, manifest: Manifest, order: int, buckets: int, part_positions: int, work: str):
        self._source, self._manifest, self._order, self._buckets, self._work = source, manifest, order, buckets, work
        self._part_positions = part_positions

    def process(self, evaluation: tuple[str, str]):
        split, protocol = evaluation
        overlap = ngrams.overlap_of(self._manifest.record_length, self._manifest.stride)
        windows = score.read_windows(data_dir.shard_paths(self._source, self._manifest, split))
        targets = ngrams.targets(windows, self._order, overlap, protocol == "carried")  # streams: history carried on
        for part in itertools.count():
            pairs = list(itertools.islice(targets, self._part_positions))
            if pairs or part == 0:  # an empty split still has its one (empty) part
                yield from self._part(split, protocol, part, pairs)
            if len(pairs) < self._part_positions:
                return

    def _part(self, split: str, protocol: str, part: int, pairs: list):
        contexts, lengths, tokens = tables.query_arrays(pairs, self._order)
        name = f"{split}-{protocol}-{part:05d}"
        positions = _save(storage.join(self._work, f"positions-{name}.arrays"), contexts=contexts, lengths=lengths,
                          tokens=tokens)  # fmt: skip
        yield beam.pvalue.TaggedOutput("positions", ((split, protocol, part), positions))
        token_bucket, context_bucket = tables.query_buckets(contexts, lengths, tokens, self._buckets)
        by_token, by_context = (
            tables.rows_by(token_bucket + 1, self._buckets + 1),
            tables.rows_by(context_bucket + 1, self._buckets + 1),
        )
        for b in range(self._buckets):
            t, c = by_token[b + 1], by_context[b + 1]  # index 0: positions the global unigrams answer alone
            path = storage.join(self._work, f"queries-{name}-{b:05d}.arrays")
            yield b, _save(path, split=np.array(split), protocol=np.array(protocol), part=np.array(part), token_rows=t,
                           contexts=contexts[t], lengths=lengths[t], tokens=tokens[t], context_rows=c,
                           context_contexts=contexts[c], context_lengths=lengths[c])  # fmt: skip


class AnswerFn(beam.DoFn):
    """(bucket, {model shard, queries}) -> ((split, protocol), answers file) per query file: the keyed join."""

    def __init__(self, order: int, radix: int, work: str):
        self._order, self._radix, self._work = order, radix, work

    def process(self, element):
        b, joined = element
        (model_path,) = joined["model"]
        keys, probs, keep, backoffs = _model_tables(_load(model_path), self._order)
        for path in joined["queries"]:
            q = _load(path)
            longest, p = tables.answer_tokens(keys, probs, keep, q["contexts"], q["lengths"], q["tokens"], self._radix)
            log_backoff = tables.answer_contexts(keys, backoffs, q["context_contexts"], q["context_lengths"],
                                                 self._radix)  # fmt: skip
            key = (str(q["split"]), str(q["protocol"]), int(q["part"]))
            answers = storage.join(self._work, f"answers-{key[0]}-{key[1]}-{key[2]:05d}-{b:05d}.arrays")
            yield key, _save(answers, token_rows=q["token_rows"], longest=longest, p=p,
                                    context_rows=q["context_rows"], log_backoff=log_backoff)  # fmt: skip


def _part_sums(element, model: dict) -> tuple[tuple[str, str], tuple[float, int, int]]:
    """((split, protocol, part), {positions, answers}) -> ((split, protocol), (log-prob sum, tokens, unknown))."""
    (split, protocol, _), joined = element
    (positions,) = joined["positions"]
    pos = _load(positions)
    contexts, lengths, tokens = pos["contexts"], pos["lengths"], pos["tokens"]
    longest = np.ones(len(tokens), np.int64)
    p = np.full(len(tokens), np.nan)
    log_backoff = np.zeros((len(tokens), max(contexts.shape[1] - 1, 0)))
    for path in joined["answers"]:
        a = _load(path)
        longest[a["token_rows"]], p[a["token_rows"]] = a["longest"], a["p"]
        log_backoff[a["context_rows"]] = a["log_backoff"]
    log_probs = tables.log_probs(model, contexts, lengths, tokens, longest, p, log_backoff)
    unknown = np.count_nonzero(tokens == contract.UNK_ID + 1)
    return (split, protocol), (float(log_probs.sum()), len(tokens), int(unknown))


def _add_sums(parts) -> tuple[float, int, int]:
    """The parts' (log-prob sum, tokens, unknown), added up."""
    log_prob_sum, count, unknown = zip(*parts, strict=True)
    return math.fsum(log_prob_sum), sum(count), sum(unknown)


def _figures(element) -> tuple[tuple[str, str], dict]:
    """((split, protocol), summed part sums) -> the split's figures under the protocol (score.evaluate's)."""
    evaluation, (log_prob_sum, count, unknown) = element
    mean = float(-log_prob_sum / count) if count else float("nan")
    return evaluation, {
        "loss": mean,
        "perplexity": math.exp(mean) if count else None,
        "tokens": count,
        "unknown_tokens": unknown,
        "unknown_rate": unknown / count if count else None,
    }


def _write_model(_, config: Config, manifest: Manifest, vocab: list[str], model: dict, sizes: list, evaluations: list,
                 work: str, buckets: int, started: float) -> str:  # fmt: skip
    """The last step: model.arpa from the shards, then baseline.json; the work folder goes."""
    folder, source, order = baseline_dir(config), config.train.data_dir, config.baseline.order
    kept = [int(sum(s[n] for s in sizes)) for n in range(order - 1)]

    def shards(n: int) -> list[str]:
        return [_arpa_path(work, n, b) for b in range(buckets)]

    with storage.atomic_write(storage.join(folder, baseline_report.ARPA_FILE)) as out:
        arpa.write_from_shards(model, kept, vocab, shards, out)
    evaluation: dict = {protocol: {} for protocol in baseline_report.PROTOCOLS}
    for (split, protocol), figures in evaluations:
        evaluation[protocol][split] = figures
    counted_at = float(model["counted_at"][0])
    report = BaselineReport(
        order=order,
        data_dir=source,
        data_fingerprint=manifest.fingerprint,
        manifest_sha256=data_dir.manifest_sha256(source),
        train_tokens=manifest.count("tokens", "train"),
        ngrams=[len(vocab) + 1, *kept],
        discounts=[list(map(float, d)) for d in model["discounts"]],
        fallback_orders=[int(n) for n in model["fallback_orders"]],
        evaluation=evaluation,
        count_seconds=round(counted_at - started, 2),
        estimate_seconds=round(time.time() - counted_at, 2),
    )
    storage.remove_tree(work)
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
    work = storage.join(folder, WORK_DIR)
    if not cloud.launch_only(p.options):  # the old marker goes first: a failed rerun never looks complete
        storage.makedirs(folder, "baseline.output_dir")
        storage.claim(folder, "baseline", OWNED, WRITTEN, marker=baseline_report.REPORT_FILE, trust=_ours,
                      key="baseline.output_dir")  # fmt: skip
        storage.clear_owned(folder, OWNED, marker=baseline_report.REPORT_FILE)  # and a killed write's temp files
        storage.remove_tree(work)
        storage.makedirs(work, "baseline.output_dir")
    order, radix = config.baseline.order, tables.radix_of(len(vocab))
    overlap = ngrams.overlap_of(manifest.record_length, manifest.stride)
    chunk_tokens, buckets, part_positions = sizing(config, manifest.count("tokens", "train"))
    _LOG.info("%d-gram baseline of %s (%d training shards, %d buckets) into %s", order, source, len(shards), buckets,
              folder)  # fmt: skip
    counted = (
        p
        | "ListShards" >> beam.Create(list(enumerate(shards)))
        | "SpreadShards" >> beam.Reshuffle()
        | "CountShards"
        >> beam.ParDo(CountShardFn(order, radix, overlap, buckets, chunk_tokens, work)).with_outputs(
            "stats", main="counts"
        )
    )
    merged = (
        counted.counts
        | "GroupCounts" >> beam.GroupByKey()
        | "MergeBuckets"
        >> beam.ParDo(MergeBucketFn(order, radix, buckets, config.baseline.prune, work)).with_outputs(
            "stats", main="sent"
        )
    )
    model = beam.pvalue.AsSingleton(
        (counted.stats, merged.stats)
        | "AllShares" >> beam.Flatten()
        | "SumShares" >> beam.CombineGlobally(SumArraysFn())
        | "Discounts" >> beam.Map(_global_model, order, len(vocab))
    )
    interpolated = (
        merged.sent
        | "GroupContexts" >> beam.GroupByKey()
        | "SumContexts" >> beam.ParDo(SumContextsFn(order, radix, work), model)
        | "GroupSums" >> beam.GroupByKey()
        | "Interpolate"
        >> beam.ParDo(InterpolateFn(order, radix, buckets, vocab, work), model).with_outputs("sizes", main="shards")
    )
    evaluations = [(split, protocol) for protocol in baseline_report.PROTOCOLS for split in ("valid", "test")]
    queries = (
        p
        | "ListEvaluations" >> beam.Create(evaluations)
        | "MakeQueries"
        >> beam.ParDo(QueriesFn(source, manifest, order, buckets, part_positions, work)).with_outputs(
            "positions", main="asks"
        )
    )
    answers = {"model": interpolated.shards, "queries": queries.asks} | "JoinModel" >> beam.CoGroupByKey()
    scored = (
        {"positions": queries.positions, "answers": answers | "Answer" >> beam.ParDo(AnswerFn(order, radix, work))}
        | "JoinAnswers" >> beam.CoGroupByKey()
        | "ScoreParts" >> beam.Map(_part_sums, model)
        | "SumParts" >> beam.CombinePerKey(_add_sums)
        | "Perplexity" >> beam.Map(_figures)
    )
    pipelines.write_last(
        p,
        "WriteModel",
        _write_model,
        config=config,
        manifest=manifest,
        vocab=vocab,
        model=model,
        sizes=beam.pvalue.AsList(interpolated.sizes),
        evaluations=beam.pvalue.AsList(scored),
        work=work,
        buckets=buckets,
        started=time.time(),
    )


def report_path(config: Config) -> str:
    return storage.join(baseline_dir(config), baseline_report.REPORT_FILE)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict:
    """Runs the baseline stage and returns baseline.json ({} when Beam only builds the job)."""
    return pipelines.run_job("baseline", argv, test_pipeline, build, report_path, _output_dir)


def _output_dir(config: Config) -> tuple[str, str]:
    return baseline_dir(config), "baseline.output_dir"
