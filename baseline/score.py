"""Reading the window shards in order, and scoring a split with the n-gram model (pure Python)."""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator

import numpy as np

from baseline import ngrams
from baseline.kneser_ney import NgramModel
from beam_preprocess import core
from nextword import storage
from nextword.text import contract


def read_windows(paths: list[str]) -> Iterator[list[int]]:
    """Every window of the gzip TFRecord shards, in the given order, streaming."""
    for path in paths:
        with storage.open_read(path) as raw, gzip.GzipFile(fileobj=raw) as stream:
            for record in core.iter_tfrecords(stream, path):
                yield core.decode_example(record)


def _packed_ids(record: bytes) -> bytes | None:
    """The packed varints of a record laid out as encode_example lays it out; None for any other layout."""
    try:
        pos = 0
        for tag in (0x0A, 0x0A):  # Example.features, Features.feature (one entry)
            if record[pos] != tag:
                return None
            _, pos = core.read_varint(record, pos + 1)
        if record[pos : pos + len(core.FEATURE_KEY)] != core.FEATURE_KEY:
            return None
        pos += len(core.FEATURE_KEY)
        for tag in (0x12, 0x1A, 0x0A):  # the entry's Feature, its Int64List, the packed values
            if record[pos] != tag:
                return None
            size, pos = core.read_varint(record, pos + 1)
    except IndexError:
        return None
    return record[pos:] if pos + size == len(record) else None


def _decode_varints(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Every varint of `data` as int64 (two's complement, as protobuf stores negative ids), and where each ends."""
    raw = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(raw < 0x80)
    starts = np.concatenate([[0], ends[:-1] + 1])
    shift = (np.arange(len(raw)) - np.repeat(starts, ends - starts + 1)).astype(np.uint64) * np.uint64(7)
    parts = (raw & 0x7F).astype(np.uint64) << shift
    return np.add.reduceat(parts, starts).view(np.int64), ends  # disjoint bits: the sum is the bitwise or


def read_window_arrays(paths: list[str], batch: int = 8192) -> Iterator[np.ndarray]:
    """read_windows' windows as int64 arrays, the varints of `batch` records decoded at once (numpy)."""

    def decoded(records: list[bytes]) -> Iterator[np.ndarray]:
        packed = [_packed_ids(record) for record in records]
        if not packed:
            return
        if any(p is None for p in packed):  # not our writer's layout: the general decoder, record by record
            yield from (np.asarray(core.decode_example(record), dtype=np.int64) for record in records)
            return
        ids, ends = _decode_varints(b"".join(packed))
        bounds = np.cumsum([len(p) for p in packed])
        yield from np.split(ids, np.searchsorted(ends, bounds[:-1]))

    for path in paths:
        with storage.open_read(path) as raw, gzip.GzipFile(fileobj=raw) as stream:
            records: list[bytes] = []
            for record in core.iter_tfrecords(stream, path):
                records.append(record)
                if len(records) == batch:
                    yield from decoded(records)
                    records = []
            yield from decoded(records)


def evaluate(model: NgramModel, windows: Iterator[list[int]], overlap: int, carried: bool) -> dict:
    """Perplexity over every token the LSTM predicts under the same protocol (ngrams.targets)."""
    loss = 0.0
    tokens = unknown = 0
    for context, token in ngrams.targets(windows, model.order, overlap, carried):
        loss -= model.log_prob(context, token)
        tokens += 1
        unknown += token == contract.UNK_ID
    mean = loss / tokens if tokens else float("nan")
    return {
        "loss": mean,
        "perplexity": math.exp(mean) if tokens else None,
        "tokens": tokens,
        "unknown_tokens": unknown,
        "unknown_rate": unknown / tokens if tokens else None,
    }
