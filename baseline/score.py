"""Reading the window shards in order, and scoring a split with the n-gram model (pure Python)."""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator

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
