"""Pure core of batch prediction: reading keyed lines, batching costs, output records.

Every input line becomes exactly one PreparedLine and then exactly one output
record, keyed by (file, line, offset). A line the model cannot take (too
long) carries its `error` and skips the model; the rest get their record from
`prediction_record` after inference.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import BinaryIO, NamedTuple, TypeVar

import numpy as np

from nextword.artifacts.predictions import PredictionRecord
from nextword.text import contract
from nextword.text.contract import TextSettings
from nextword.text.decode import decode_line

# A model call's fixed cost, in padded token positions, when grouping a batch by length: a larger
# value makes fewer, longer calls, and model time kept falling up to this one on the PTB-shaped
# bundle (bench/README.md, "Batch prediction").
CALL_OVERHEAD_POSITIONS = 4096
TARGET_RANGES = 64
MIN_RANGE_BYTES = 1 << 20
_SKIP_CHUNK = 1 << 16

# --- errors (why a record has no prediction) and flags (what was odd) --------
ERROR_LINE_TOO_LONG = "line_too_long"
ERROR_EMPTY = "empty_line"  # no word after normalization, and no <eos> to start from
ERROR_TOO_SHORT_TO_SCORE = "too_short_to_score"  # nothing to predict: one word and no <eos>
FLAG_EMPTY = "empty"
FLAG_ALL_UNKNOWN = "all_unknown"
FLAG_SHORT = "shorter_than_window"

T = TypeVar("T")

MODES = {"next": (True, False), "score": (False, True), "both": (True, True)}  # mode -> (next, score)


class LineScore(NamedTuple):
    """What the model says of one line's tokens (natural logs)."""

    log_prob: float  # every scored token
    tokens: int
    unknown: int  # scored tokens that are the unknown token
    known_log_prob: float  # the scored tokens that are not unknown
    token_scores: list[tuple[str, bool, float]] | None = None  # (text, unknown, log_prob) per token, in order

    @property
    def perplexity(self) -> float | None:
        """exp(-log_prob / tokens), as the records give it; None without scored tokens."""
        return perplexity(self.log_prob, self.tokens)


class FileRange(NamedTuple):
    """Bytes [start, end) of a file of `size` bytes: the lines that *start* there."""

    path: str
    start: int
    end: int
    size: int


class LineKey(NamedTuple):
    path: str
    line: int  # 1-based line number
    offset: int  # byte offset of the line's first byte


class PreparedLine(NamedTuple):
    """One decoded line, ready for the model unless `error` says why not."""

    text: str
    cost: int  # padded token positions it adds to a model call
    flags: tuple[str, ...]
    error: str | None = None


def range_bytes(total_bytes: int, split_bytes: int) -> int:
    """Size of the byte ranges: at most split_bytes, and small enough that even a modest input
    makes about TARGET_RANGES ranges for the workers (or threads) to share, but no smaller than
    MIN_RANGE_BYTES."""
    return min(split_bytes, max(MIN_RANGE_BYTES, -(-total_bytes // TARGET_RANGES)))


def plan_ranges(files: list[tuple[str, int]], split_bytes: int) -> list[FileRange]:
    """Byte ranges of at most `split_bytes` that tile each non-empty file."""
    return [
        FileRange(path, start, min(start + split_bytes, size), size)
        for path, size in files
        for start in range(0, size, split_bytes)
    ]


def count_line_starts(stream: BinaryIO, file_range: FileRange, chunk_bytes: int = 1 << 20) -> int:
    """How many lines start in the range: position 0, and every position after a newline.

    A newline at the very end of the file starts no line.
    """
    start, end, size = file_range.start, file_range.end, file_range.size
    count = 1 if start == 0 and size > 0 else 0
    low, high = max(start - 1, 0), min(end - 1, size - 1)  # newline positions p with p + 1 in [start, end)
    stream.seek(low)
    remaining = max(high - low, 0)
    while remaining:
        chunk = stream.read(min(chunk_bytes, remaining))
        if not chunk:
            break
        count += chunk.count(b"\n")
        remaining -= len(chunk)
    return count


def _skip_line(stream: BinaryIO, position: int) -> int:
    """Reads past the next newline (or to the end) in bounded chunks; returns the new position."""
    while True:
        chunk = stream.read(_SKIP_CHUNK)
        newline = chunk.find(b"\n")
        if newline >= 0:
            stream.seek(position + newline + 1)
            return position + newline + 1
        position += len(chunk)
        if not chunk:
            return position


def read_range(stream: BinaryIO, file_range: FileRange, max_line_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(offset, line bytes without the newline) for each line starting in the range.

    A line longer than `max_line_bytes` is never held in memory: it comes out
    as (offset, None).
    """
    if file_range.start == 0:
        position = 0
    else:  # the line that straddles the range start belongs to the previous range
        stream.seek(file_range.start - 1)
        position = _skip_line(stream, file_range.start - 1)
    stream.seek(position)
    while position < file_range.end:
        line = stream.readline(max_line_bytes + 1)
        if not line:  # the file is shorter than when it was listed
            return
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            yield position, None
            position = _skip_line(stream, position + len(line))
            continue
        yield position, line[:-1] if line.endswith(b"\n") else line
        position += len(line)


def first_line_numbers(counts: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """1-based number of the first line of each (path, range start), from lines starting per range."""
    first = {}
    running: dict[str, int] = {}
    for path, start in sorted(counts):
        first[(path, start)] = running.get(path, 0) + 1
        running[path] = running.get(path, 0) + counts[(path, start)]
    return first


def line_cost(words: int, window: int, mode: str, eos: bool) -> int:
    """Padded token positions a line adds to a model call (at least 1, so batches stay bounded).

    next_words runs the last min(ids, window) context ids; score runs the
    predicted ids, in windows of `window` when there are more. `words` may
    over-estimate (it is a whitespace count), never under-estimate.
    """
    want_next, want_score = MODES[mode]
    cost = 0
    if want_next:
        cost += min(words + (1 if eos else 0), window)
    if want_score:
        predicted = max(words + (2 if eos else 0) - 1, 0)
        cost += predicted if predicted <= window else math.ceil(predicted / window) * window
    return max(cost, 1)


def calls_in_flight(context: str, mode: str, configured: int) -> int:
    """Model calls a worker runs at once (predict.model_calls_in_flight; 0: by mode). A document is one
    stream: its calls follow each other."""
    if context == "document":
        return 1
    return configured or (2 if mode == "next" else 1)


def token_runs(items: Iterable[T], cost: Callable[[T], int], budget: int) -> Iterator[list[T]]:
    """Consecutive items in runs of about `budget` tokens, as they come (a run ends at the first item that
    reaches it; no run is empty): the blocks of a range's lines, and the model calls of a document."""
    run: list[T] = []
    total = 0
    for item in items:
        run.append(item)
        total += cost(item)
        if total >= budget:
            yield run
            run, total = [], 0
    if run:
        yield run


def length_groups(costs: list[int], budget: int, overhead: int = CALL_OVERHEAD_POSITIONS) -> list[list[int]]:
    """Indices of a batch grouped by similar cost: one model call per group.

    A call pads every line to the call's largest cost, and costs a fixed
    `overhead` (in positions) besides. The grouping of the cost-sorted lines
    that minimizes padded positions + overhead per call is found exactly by
    dynamic programming over the distinct costs; a group whose padded size
    would pass `budget` is cut into calls that fit (a line over budget alone).
    """
    if not costs:
        return []
    values = sorted(set(costs))
    count = Counter(costs)
    lines_up_to = list(itertools.accumulate((count[v] for v in values), initial=0))  # lines with cost < values[j]
    best = [0.0] + [math.inf] * len(values)  # best[j]: cheapest grouping of the first j distinct costs
    cut = [0] * (len(values) + 1)
    for j in range(1, len(values) + 1):
        for i in range(j):
            lines = lines_up_to[j] - lines_up_to[i]
            calls = -(-lines // max(1, budget // values[j - 1]))  # ceil: the group is cut into calls that fit
            total = best[i] + lines * values[j - 1] + calls * overhead
            if total < best[j]:
                best[j], cut[j] = total, i
    bounds = []
    j = len(values)
    while j:
        bounds.append((lines_up_to[cut[j]], lines_up_to[j], values[j - 1]))
        j = cut[j]
    order = sorted(range(len(costs)), key=costs.__getitem__)
    groups = []
    for start, stop, largest in reversed(bounds):
        per_call = max(1, budget // largest)
        groups += [order[i : min(i + per_call, stop)] for i in range(start, stop, per_call)]
    return groups


def prepare_line(
    raw: bytes | None, at_file_start: bool, window: int, mode: str, settings: TextSettings, max_line_tokens: int
) -> PreparedLine:
    """One raw input line (None: longer than the reader holds) -> PreparedLine."""
    if raw is None:
        return PreparedLine("", 1, (), ERROR_LINE_TOO_LONG)
    text, flags = decode_line(raw, at_file_start)
    words = contract.normalization(settings).word_bound(text)  # cheap, and never below the true count
    if words > max_line_tokens:
        return PreparedLine("", 1, flags, ERROR_LINE_TOO_LONG)
    return PreparedLine(text, line_cost(words, window, mode, settings.eos), flags)


# --- output records ----------------------------------------------------------


def _rounded(value: float) -> float:
    return float(f"{value:.6g}")


def perplexity(log_prob: float, tokens: int) -> float | None:
    """exp(-log_prob / tokens), None without tokens; capped below float overflow, so a wildly wrong
    line still gives valid JSON."""
    return _rounded(math.exp(min(-log_prob / tokens, 700.0))) if tokens else None


def round_significant(values: np.ndarray, digits: int = 6) -> np.ndarray:
    """`values` rounded to `digits` significant digits, all at once (per value, Python formatting is slow)."""
    values = values.astype(np.float64)
    scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.maximum(np.abs(values), 1e-300))))
    return np.round(values * scale) / scale


def rejected_fields(line: PreparedLine) -> dict:
    """The record fields of a line that skipped the model."""
    return {"flags": list(line.flags), "error": line.error}


def prediction_record(
    flags: tuple[str, ...],
    word_count: int,
    unknown_count: int,
    window: int,
    eos: bool,
    next_words: list[tuple[str, float]] | None = None,  # probabilities already rounded
    score: LineScore | None = None,
) -> dict:
    """The record fields a model call decides (without the key)."""
    flags = list(flags)
    if word_count == 0:
        flags.append(FLAG_EMPTY)
    elif unknown_count == word_count:
        flags.append(FLAG_ALL_UNKNOWN)
    if 0 < word_count < window:
        flags.append(FLAG_SHORT)
    record = {"words": word_count, "unknown_words": unknown_count, "flags": flags, "error": None}
    if next_words is not None:
        if word_count == 0 and not eos:
            record["error"] = ERROR_EMPTY
        else:
            record["next"] = [{"word": w, "prob": p} for w, p in next_words]
    if score is not None:
        if score.tokens == 0:
            record["error"] = record["error"] or (ERROR_EMPTY if word_count == 0 else ERROR_TOO_SHORT_TO_SCORE)
        else:
            record.update(
                log_prob=_rounded(score.log_prob),
                perplexity=perplexity(score.log_prob, score.tokens),
                scored_tokens=score.tokens,
                unknown_scored_tokens=score.unknown,
                known_log_prob=_rounded(score.known_log_prob),
                known_perplexity=perplexity(score.known_log_prob, score.tokens - score.unknown),
            )
            if score.token_scores is not None:
                record["token_scores"] = [
                    {"token": text, "unknown": unknown, "log_prob": _rounded(value)}
                    for text, unknown, value in score.token_scores
                ]
    return record


def keyed_record(key: LineKey, fields: dict, model: str) -> PredictionRecord:
    """A full output record of `model` (the bundle's model fingerprint), null where `fields` is silent."""
    return PredictionRecord(file=key.path, line=key.line, offset=key.offset, model=model, **fields)


def count_record(record: PredictionRecord, stats: Counter) -> None:
    """Adds one output record to the job's figures: records, error.<reason>, flag.<flag>, and the sums of
    scored_tokens, unknown_scored_tokens, log_prob and known_log_prob."""
    stats["records"] += 1
    if record.error:
        stats[f"error.{record.error}"] += 1
    for flag in record.flags:
        stats[f"flag.{flag}"] += 1
    for name in ("scored_tokens", "unknown_scored_tokens", "log_prob", "known_log_prob"):
        stats[name] += getattr(record, name) or 0


def score_totals(stats: Mapping[str, float]) -> dict:
    """The job's perplexity over every scored token, and over the known ones (KenLM's "excluding OOVs")."""
    tokens, unknown = int(stats["scored_tokens"]), int(stats["unknown_scored_tokens"])
    return {
        "scored_tokens": tokens,
        "unknown_scored_tokens": unknown,
        "perplexity": perplexity(stats["log_prob"], tokens),
        "known_perplexity": perplexity(stats["known_log_prob"], tokens - unknown),
    }
