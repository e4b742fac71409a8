"""Beam shell of batch prediction: reading byte ranges, scoring them, committing each range's records."""

from __future__ import annotations

import functools
import json
from collections import Counter, deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils import multi_process_shared, shared

from batch_predict import core, resume
from batch_predict.handler import GATHER_BUDGETS, BundleModelHandler, share_cores
from batch_predict.predictor import Document, LoadedBundle, Predictor
from nextword import storage
from nextword.artifacts.bundle import Bundle
from nextword.beam import progress
from nextword.config import PredictConfig
from nextword.text import contract
from nextword.text.contract import TextSettings
from nextword.text.decode import decode_line

NAMESPACE = "nextword.predict"


class CountLinesFn(beam.DoFn):
    """FileRange -> ((path, start), lines starting in the range): a cheap newline count."""

    def process(self, file_range: core.FileRange):
        with storage.open_read(file_range.path) as stream:  # byte ranges: no compressed input
            yield (file_range.path, file_range.start), core.count_line_starts(stream, file_range)


class ReadLinesFn(beam.DoFn):
    """FileRange -> (LineKey, PreparedLine) for every line that starts in the range (and `read`, for the
    DoFns that score what they read)."""

    LINES_PER_CHECK = 256  # how often the reader looks at the clock for its progress line

    def __init__(
        self, cfg: PredictConfig, context_tokens: int, settings: TextSettings, inputs: tuple[int, int] = (0, 0)
    ):
        self._cfg = cfg
        self._window = context_tokens  # what a line costs in a model call
        self._settings = settings
        self._inputs = inputs  # (ranges, bytes) of the whole job, for progress

    def setup(self):
        self._lines = Metrics.counter(NAMESPACE, "lines_read")
        ranges, size = self._inputs
        # Lines are scored as they are read (one fused stage), so reading's pace is the job's.
        self.progress = progress.Progress(NAMESPACE, "reading", total_bytes=size, total_files=ranges, unit="ranges")

    def process(self, file_range: core.FileRange, first_lines: dict):
        yield from self.read(file_range, first_lines)

    def read(self, file_range: core.FileRange, first_lines: dict):
        cfg = self._cfg
        first = first_lines[(file_range.path, file_range.start)]
        number = first - 1
        reported = file_range.start  # bytes up to here are in the progress figures
        with storage.open_read(file_range.path) as stream:  # byte ranges: no compressed input
            for number, (offset, raw) in enumerate(core.read_range(stream, file_range, cfg.max_line_bytes), first):
                key = core.LineKey(file_range.path, number, offset)
                yield (
                    key,
                    core.prepare_line(raw, offset == 0, self._window, cfg.mode, self._settings, cfg.max_line_tokens),
                )
                if (number - first + 1) % self.LINES_PER_CHECK == 0:
                    self.progress.advance(bytes=offset - reported, lines=self.LINES_PER_CHECK)
                    reported = offset
        lines = number - first + 1
        self._lines.inc(lines)
        self.progress.advance(files=1, bytes=file_range.end - reported, lines=lines % self.LINES_PER_CHECK)


class LineScorer:
    """Lines scored each on its own (predict.context line): blocks of a range's lines, in order, go to the
    handler, which sorts each block by length into model calls of at most predict.max_batch_tokens.

    Up to `calls_in_flight` model calls run at once, and the next block's calls are already running while
    this block's records are written: one call of a small model leaves TensorFlow's threads idle part of
    the time: two calls at once make more lines/s than one after another (bench/README.md, "Batch
    prediction").
    """

    def __init__(self, handler: BundleModelHandler, model: Predictor, block_tokens: int, calls_in_flight: int):
        self._handler = handler
        self._model = model
        self._block_tokens = block_tokens
        self._calls_in_flight = calls_in_flight

    def score(self, file_range: core.FileRange, keyed_lines: Iterable[tuple[core.LineKey, core.PreparedLine]]):
        with ThreadPoolExecutor(self._calls_in_flight, thread_name_prefix="nextword-model-call") as calls:
            started: deque = deque()  # (keys, finish) of the blocks whose calls were submitted
            for block in core.token_runs(keyed_lines, lambda item: item[1].cost, self._block_tokens):
                finish = self._handler.start_inference([line for _, line in block], self._model, calls)
                started.append(([key for key, _ in block], finish))
                if len(started) > 1:
                    yield from self._finished(*started.popleft())
            while started:
                yield from self._finished(*started.popleft())

    @staticmethod
    def _finished(keys: list[core.LineKey], finish):
        yield from zip(keys, finish(), strict=True)


class DocumentScorer:
    """A range's lines scored in order with the model's state carried from line to line
    (predict.context document).

    The state starts from the text before the range: up to predict.warmup_bytes of whole lines are run
    through the model first (advance_stream, no output layer). A state that starts from nothing (a
    file's start, or the warm-up's) starts after `<eos>` when the bundle has it, so that every line's
    tokens are predicted; without `<eos>`, its first token is context only.
    """

    def __init__(self, cfg: PredictConfig, bundle: Bundle, model: Predictor):
        self._cfg = cfg
        self._eos = bundle.settings.eos
        self._word_bound = contract.normalization(bundle.settings).word_bound
        self._budget = cfg.max_batch_tokens
        self._model = model

    def _warm_up(self, file_range: core.FileRange) -> Document:
        document = self._model.document()
        begin = max(0, file_range.start - self._cfg.warmup_bytes)
        if begin == file_range.start:
            return document
        before = core.FileRange(file_range.path, begin, file_range.start, file_range.size)
        with storage.open_read(file_range.path) as stream:
            lines = core.read_range(stream, before, self._cfg.max_line_bytes)
            texts = [decode_line(raw, offset == 0)[0] for offset, raw in lines if raw is not None]
        for chunk in core.token_runs(texts, lambda text: self._word_bound(text) + 1, self._cfg.max_batch_tokens):
            document.advance(chunk)
        return document

    def score(self, file_range: core.FileRange, keyed_lines: Iterable[tuple[core.LineKey, core.PreparedLine]]):
        document = self._warm_up(file_range)
        # A rejected line costs nothing: it is not sent to the model, and the document goes on without it.
        for run in core.token_runs(keyed_lines, lambda item: 0 if item[1].error else item[1].cost, self._budget):
            yield from self._score(run, document)

    def _score(self, run: list, document: Document):
        lines = [(key, line) for key, line in run if not line.error]
        scores, out = document.score([line.text for _, line in lines], self._cfg.per_token)
        scored = {}
        for i, ((key, line), score) in enumerate(zip(lines, scores, strict=True)):
            # window 0: in a document no line is short of context.
            scored[key] = core.prediction_record(
                line.flags, out["word_count"][i], out["unknown_count"][i], 0, self._eos, score=score
            )
        for key, line in run:
            yield key, core.rejected_fields(line) if line.error else scored[key]


def _load_bundle(path: str, calls_in_flight: int) -> LoadedBundle:
    if calls_in_flight > 1:  # in the process that loads the model, before TensorFlow starts there
        share_cores(calls_in_flight)
    return LoadedBundle(path)


class ScoreRangesFn(ReadLinesFn):
    """(index, FileRange) -> {"shard", "stats"}: reads the range, scores every line, and commits the
    range's records as its own shard (batch_predict/resume.py), so that a killed job resumes.

    The bundle is loaded once per worker process and shared by its threads (once per machine with
    predict.share_model_across_processes). Records, errors and flags also go to Beam counters, per range.
    """

    def __init__(self, cfg: PredictConfig, bundle: Bundle, job_digest: str, inputs: tuple[int, int]):
        super().__init__(cfg, bundle.context_tokens, bundle.settings, inputs)
        self._bundle = bundle
        self._model_fingerprint = bundle.model_fingerprint  # a hash: once, not per record
        self._job = job_digest
        self._ranges = inputs[0]  # the job's, for the shard names
        self._shared = shared.Shared()

    def setup(self):
        super().setup()
        cfg, bundle = self._cfg, self._bundle
        calls_in_flight = core.calls_in_flight(cfg.context, cfg.mode, cfg.model_calls_in_flight)
        load = functools.partial(_load_bundle, bundle.path, calls_in_flight)
        if cfg.share_model_across_processes:
            model = multi_process_shared.MultiProcessShared(load, tag=f"nextword-{bundle.model_fingerprint}").acquire()
        else:
            model = self._shared.acquire(load)
        model = Predictor(bundle, model, cfg.max_batch_tokens)
        if cfg.context == "document":
            self._scorer = DocumentScorer(cfg, bundle, model)
        else:
            handler = BundleModelHandler(bundle, cfg.mode, cfg.top_k, cfg.max_batch_tokens, cfg.per_token)
            self._scorer = LineScorer(handler, model, GATHER_BUDGETS * cfg.max_batch_tokens, calls_in_flight)

    def process(self, element: tuple[int, core.FileRange], first_lines: dict, line_counts: dict):
        index, file_range = element
        stats: Counter = Counter()
        name = resume.shard_name(index, self._ranges)
        # Records are written as they come (memory does not grow with the range); the shard appears only
        # if the whole range was scored.
        with storage.atomic_write(storage.join(self._cfg.output_dir, name)) as shard:
            for key, fields in self._scorer.score(file_range, self.read(file_range, first_lines)):
                # The model fingerprint in every record: scores of two models are never mixed silently.
                record = core.keyed_record(key, fields, self._model_fingerprint)
                core.count_record(record, stats)
                shard.write(
                    json.dumps(record.to_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
                )
                shard.write(b"\n")
            counted = line_counts[(file_range.path, file_range.start)]
            if stats["records"] != counted:  # never commit a range read from a file that changed since counted
                raise OSError(
                    f"{file_range.path}: {counted} lines counted in bytes {file_range.start}-{file_range.end} but "
                    f"{stats['records']} read (the file changed while the job ran), so that range was not "
                    "committed; rerun once the input files stay unchanged"
                )
        resume.commit_marker(self._cfg.output_dir, index, self._ranges, self._job, dict(stats))
        for figure, value in stats.items():
            if isinstance(value, int):
                Metrics.counter(NAMESPACE, figure.replace(".", "_")).inc(value)
        yield {"shard": name, "stats": dict(stats)}


class ScoreRanges(beam.PTransform):
    """(all FileRanges, (index, FileRange) to score) -> ({"shard", "stats"} per range scored, lines starting
    per range of the job)."""

    def __init__(self, cfg: PredictConfig, bundle: Bundle, job_digest: str, inputs: tuple[int, int]):
        super().__init__()
        self._cfg = cfg
        self._bundle = bundle
        self._job = job_digest
        self._inputs = inputs  # (ranges, bytes): for progress and the shard names

    def expand(self, pcolls):
        ranges, todo = pcolls
        line_counts = ranges | "CountLines" >> beam.ParDo(CountLinesFn()) | "CollectCounts" >> beam.combiners.ToDict()
        first_lines = line_counts | "FirstLineNumbers" >> beam.Map(core.first_line_numbers)
        scorer = ScoreRangesFn(self._cfg, self._bundle, self._job, self._inputs)
        done = todo | "ScoreRanges" >> beam.ParDo(
            scorer, beam.pvalue.AsSingleton(first_lines), beam.pvalue.AsSingleton(line_counts)
        )
        return done, line_counts
