"""Progress of a long Beam stage on one worker: a log line every few seconds, and Beam counters.

Beam's counters (files, bytes, lines, tokens done) are what the Dataflow UI shows; the log
line adds rates and, where the stage knows its total input, an estimate of the time left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from apache_beam.metrics import Metrics

_LOG = logging.getLogger(__name__)
EVERY_S = 10.0
FIGURES = ("files", "bytes", "lines", "tokens")


class Progress:
    """Counts what one worker has done; `advance` is cheap enough to call every few thousand tokens."""

    def __init__(
        self,
        namespace: str,
        stage: str,
        total_bytes: int = 0,
        total_files: int = 0,
        every_s: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        unit: str = "files",
    ):
        """`unit` names what the "files" figure counts in the log line (files, or byte ranges of them)."""
        self.stage, self.total_bytes, self.total_files, self.unit = stage, total_bytes, total_files, unit
        self.every_s, self.clock = every_s, clock
        self.counters = {name: Metrics.counter(namespace, f"{stage}_{name}") for name in FIGURES}
        self.done = dict.fromkeys(FIGURES, 0)
        self.reported = dict.fromkeys(FIGURES, 0)
        self.started = self.last = clock()

    def advance(self, **figures: int) -> None:
        """Adds figures (files=, bytes=, lines=, tokens=); reports when `every_s` has passed since the last report."""
        for name, value in figures.items():
            self.done[name] += value
        if self.clock() - self.last >= self.every_s:
            self.report()

    def report(self) -> str:
        """Flushes the counters and logs one line; returns it."""
        now = self.clock()
        for name, counter in self.counters.items():
            counter.inc(self.done[name] - self.reported[name])
        self.reported = dict(self.done)
        self.last = now
        line = self.line(now - self.started)
        _LOG.info("%s", line)
        return line

    def line(self, seconds: float) -> str:
        done, rate = self.done, 1 / max(seconds, 1e-9)
        files = f"{done['files']}/{self.total_files}" if self.total_files else f"{done['files']}"
        files += f" {self.unit}"
        parts = [f"{self.stage}: {files}, {done['bytes'] / 1e6:.1f}"]
        parts[0] += f"/{self.total_bytes / 1e6:.1f} MB" if self.total_bytes else " MB"
        parts.append(f"{done['lines'] * rate:,.0f} lines/s, {done['tokens'] * rate:,.0f} tokens/s")
        if self.total_bytes and done["bytes"]:
            left = max(self.total_bytes - done["bytes"], 0) / (done["bytes"] * rate)
            parts.append(f"about {left:,.0f} s left on this worker's share")
        return ", ".join(parts)
