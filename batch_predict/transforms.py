"""Beam shell of batch prediction: DoFns, a CombineFn and composite PTransforms."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference
from apache_beam.transforms.window import GlobalWindows

from batch_predict import core
from batch_predict.handler import BundleModelHandler, KeyedBundleModelHandler
from nextword import progress, storage
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


class ReadKeyedLines(beam.PTransform):
    """FileRanges -> (keyed lines, lines starting per range)."""

    def __init__(self, cfg: PredictConfig, bundle: Bundle, inputs: tuple[int, int] = (0, 0)):
        super().__init__()
        self._cfg = cfg
        self._bundle = bundle
        self._inputs = inputs  # (ranges, bytes), for progress

    def expand(self, ranges):
        line_counts = ranges | "CountLines" >> beam.ParDo(CountLinesFn()) | "CollectCounts" >> beam.combiners.ToDict()
        first_lines = line_counts | "FirstLineNumbers" >> beam.Map(core.first_line_numbers)
        lines = ranges | "Read" >> beam.ParDo(
            ReadLinesFn(self._cfg, self._bundle.context_tokens, self._bundle.settings.eos, self._inputs),
            beam.pvalue.AsSingleton(first_lines),
        )
        return lines, line_counts


class Predict(beam.PTransform):
    """(LineKey, PreparedLine) -> (LineKey, record fields), with RunInference over the bundle, one per line."""

    def __init__(self, cfg: PredictConfig, bundle: Bundle):
        super().__init__()
        self._handler = KeyedBundleModelHandler(
            BundleModelHandler(bundle, cfg.mode, cfg.top_k, cfg.max_batch_tokens, cfg.share_model_across_processes)
        )

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

    def start_bundle(self):
        self._stats: Counter = Counter()
        self._reported: Counter = Counter()
        self._started = self._last_log = time.monotonic()

    def process(self, element: tuple[core.LineKey, dict]):
        record = core.keyed_record(*element)
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
