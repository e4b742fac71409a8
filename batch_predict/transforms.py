"""Beam shell of batch prediction: DoFns, a CombineFn and composite PTransforms."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference
from apache_beam.transforms.window import GlobalWindows

from batch_predict import core
from batch_predict.handler import BundleModelHandler, KeyedBundleModelHandler, LoadedBundle, line_scores
from nextword import contract, progress, storage
from nextword.bundle import Bundle
from nextword.config import PredictConfig

_LOG = logging.getLogger(__name__)
NAMESPACE = "nextword.predict"
_PROGRESS_EVERY_S = 30.0


class CountLinesFn(beam.DoFn):
    """FileRange -> ((path, start), lines starting in the range): a cheap newline count."""

    def process(self, file_range: core.FileRange):
        with storage.open_read(file_range.path) as stream:  # byte ranges: no compressed input
            yield (file_range.path, file_range.start), core.count_line_starts(stream, file_range)


class ReadLinesFn(beam.DoFn):
    """FileRange -> (LineKey, PreparedLine) for every line that starts in the range."""

    LINES_PER_CHECK = 256  # how often the reader looks at the clock for its progress line

    def __init__(self, cfg: PredictConfig, context_tokens: int, eos: bool, inputs: tuple[int, int] = (0, 0)):
        self._cfg = cfg
        self._window = context_tokens  # what a line costs in a model call
        self._eos = eos
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
                yield key, core.prepare_line(raw, offset == 0, self._window, cfg.mode, self._eos, cfg.max_line_tokens)
                if (number - first + 1) % self.LINES_PER_CHECK == 0:
                    self.progress.advance(bytes=offset - reported, lines=self.LINES_PER_CHECK)
                    reported = offset
        lines = number - first + 1
        self._lines.inc(lines)
        self.progress.advance(files=1, bytes=file_range.end - reported, lines=lines % self.LINES_PER_CHECK)


class ScoreDocumentsFn(ReadLinesFn):
    """FileRange -> (LineKey, record fields) for every line that starts in the range, scored in order
    with the model's state carried from line to line (predict.context: document).

    The state starts from the text before the range: up to predict.warmup_bytes of whole lines are run
    through the model first (advance_stream, no output layer). A state that starts from nothing (a
    file's start, or the warm-up's) starts after `<eos>` when the bundle has it, so that every line's
    tokens are predicted; without `<eos>`, its first token is context only.
    """

    def __init__(self, cfg: PredictConfig, bundle: Bundle, inputs: tuple[int, int] = (0, 0)):
        super().__init__(cfg, bundle.context_tokens, bundle.settings.eos, inputs)
        self._path = bundle.path
        self._state_size = bundle.state_size

    def setup(self):
        super().setup()
        self._model = LoadedBundle(self._path)

    def _start(self) -> tuple[np.ndarray, int]:
        return np.zeros([self._state_size], np.float32), contract.EOS_ID if self._eos else -1

    def _warm_up(self, file_range: core.FileRange) -> tuple[np.ndarray, int]:
        state, last_id = self._start()
        begin = max(0, file_range.start - self._cfg.warmup_bytes)
        if begin == file_range.start:
            return state, last_id
        before = core.FileRange(file_range.path, begin, file_range.start, file_range.size)
        with storage.open_read(file_range.path) as stream:
            lines = core.read_range(stream, before, self._cfg.max_line_bytes)
            texts = [core.decode_line(raw, offset == 0)[0] for offset, raw in lines if raw is not None]
        for chunk in core.token_chunks([len(text.split()) + 1 for text in texts], self._cfg.max_batch_tokens):
            state, last_id = self._model.advance_stream([texts[i] for i in chunk], state, last_id)
        return state, last_id

    def process(self, file_range: core.FileRange, first_lines: dict):
        state, last_id = self._warm_up(file_range)
        pending: list[tuple[core.LineKey, core.PreparedLine]] = []
        pending_tokens = 0
        for key, line in self.read(file_range, first_lines):
            if line.error:  # not sent to the model: the document goes on without it
                yield key, core.rejected_fields(line)
                continue
            pending.append((key, line))
            pending_tokens += line.cost
            if pending_tokens >= self._cfg.max_batch_tokens:
                state, last_id = yield from self._score(pending, state, last_id)
                pending, pending_tokens = [], 0
        if pending:
            yield from self._score(pending, state, last_id)

    def _score(self, lines: list, state: np.ndarray, last_id: int):
        out = self._model.score_stream([line.text for _, line in lines], state, last_id)
        state, last_id = out.pop("state"), int(out.pop("last_id"))
        out = {name: value.tolist() for name, value in out.items()}
        for i, ((key, line), score) in enumerate(zip(lines, line_scores(out, self._cfg.per_token), strict=True)):
            # window 0: in a document no line is short of context.
            fields = core.prediction_record(line.flags, out["word_count"][i], out["unknown_count"][i], 0, self._eos,
                                            score=score)  # fmt: skip
            yield key, fields
        return state, last_id


class ReadKeyedLines(beam.PTransform):
    """FileRanges -> (keyed lines, lines starting per range)."""

    def __init__(self, cfg: PredictConfig, bundle: Bundle, inputs: tuple[int, int] = (0, 0)):
        super().__init__()
        self._cfg = cfg
        self._bundle = bundle
        self._inputs = inputs  # (ranges, bytes), for progress

    def reader(self) -> beam.DoFn:
        return ReadLinesFn(self._cfg, self._bundle.context_tokens, self._bundle.settings.eos, self._inputs)

    def expand(self, ranges):
        line_counts = ranges | "CountLines" >> beam.ParDo(CountLinesFn()) | "CollectCounts" >> beam.combiners.ToDict()
        first_lines = line_counts | "FirstLineNumbers" >> beam.Map(core.first_line_numbers)
        lines = ranges | "Read" >> beam.ParDo(self.reader(), beam.pvalue.AsSingleton(first_lines))
        return lines, line_counts


class ScoreDocuments(ReadKeyedLines):
    """FileRanges -> ((LineKey, record fields), lines starting per range): predict.context document."""

    def reader(self) -> beam.DoFn:
        return ScoreDocumentsFn(self._cfg, self._bundle, self._inputs)


class Predict(beam.PTransform):
    """(LineKey, PreparedLine) -> (LineKey, record fields), with RunInference over the bundle, one per line."""

    def __init__(self, cfg: PredictConfig, bundle: Bundle):
        super().__init__()
        self._handler = KeyedBundleModelHandler(BundleModelHandler(
            bundle, cfg.mode, cfg.top_k, cfg.max_batch_tokens, cfg.share_model_across_processes, cfg.per_token
        ))  # fmt: skip

    def expand(self, keyed_lines):
        return keyed_lines | "RunInference" >> RunInference(self._handler)


class FormatRecordsFn(beam.DoFn):
    """(LineKey, record fields) -> one JSON line per record.

    Also counts records, errors and flags: one Counter per bundle on the STATS
    output (for summary.json), Beam counters every REPORT_EVERY records, and a
    progress line in the log every 30 s.
    """

    STATS = "stats"
    REPORT_EVERY = 1000

    def __init__(self, model_fingerprint: str):
        self._model = model_fingerprint  # in every record: scores of two models are never mixed silently

    def start_bundle(self):
        self._stats: Counter = Counter()
        self._reported: Counter = Counter()
        self._started = self._last_log = time.monotonic()

    def process(self, element: tuple[core.LineKey, dict]):
        record = core.keyed_record(*element)
        record["model"] = self._model
        core.count_record(record, self._stats)
        if self._stats["records"] % self.REPORT_EVERY == 0:
            self._report()
        yield json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def finish_bundle(self):
        self._report()
        yield beam.pvalue.TaggedOutput(self.STATS, GlobalWindows.windowed_value(self._stats))

    def _report(self) -> None:
        for name, value in self._stats.items():
            if value != self._reported[name]:
                Metrics.counter(NAMESPACE, name.replace(".", "_")).inc(value - self._reported[name])
        self._reported = self._stats.copy()
        now = time.monotonic()
        if now - self._last_log >= _PROGRESS_EVERY_S:
            self._last_log = now
            records = self._stats["records"]
            rate = records / (now - self._started)
            _LOG.info("batch_predict: %d records in this bundle so far, %.0f lines/s", records, rate)
