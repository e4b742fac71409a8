"""Batch prediction's output: one PredictionRecord per input line (JSON lines in shards) and summary.json.

Written by `nextword predict` (batch_predict/); read by its one-liner, by resumed jobs and by users'
tables (batch_predict/schema.json is the BigQuery schema of a record, tested field by field against
PredictionRecord). summary.json is the job's commit marker: it exists only for a complete job.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, TypedDict

from nextword.artifacts import versioned

SUMMARY_FILE = "summary.json"
SUMMARY_FORMAT_VERSION = 1
RERUN = "rerun `nextword predict` into it"


class NextWord(TypedDict):
    word: str
    prob: float


class TokenScore(TypedDict):
    token: str  # as the model saw it (<eos> where the text settings add it)
    unknown: bool  # not in the vocabulary: scored as the unknown token
    log_prob: float  # natural log, given the context


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One input line's output, keyed by (file, line, offset); None where the mode or an error leaves a field out."""

    # One more when a field is added, removed or changes meaning: a resumed job (batch_predict/resume.py)
    # keeps the committed ranges only when they were written in this format.
    FORMAT: ClassVar[int] = 1

    file: str
    line: int  # 1-based
    offset: int  # of the line's first byte
    words: int | None = None  # after normalization; None for a line the model did not take
    unknown_words: int | None = None
    next: list[NextWord] | None = None  # most likely first (mode next or both)
    log_prob: float | None = None  # natural logs, over the scored tokens (mode score or both)
    perplexity: float | None = None
    scored_tokens: int | None = None
    unknown_scored_tokens: int | None = None
    known_log_prob: float | None = None  # over the scored tokens that are not unknown
    known_perplexity: float | None = None
    token_scores: list[TokenScore] | None = None  # every scored token in order (predict.per_token)
    flags: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None  # why a requested output is missing
    model: str = ""  # the bundle's model fingerprint

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in RECORD_FIELDS}

    @classmethod
    def from_dict(cls, data: dict, source: str) -> PredictionRecord:
        unknown = sorted(data.keys() - set(RECORD_FIELDS))
        missing = [name for name in RECORD_FIELDS if name not in data]
        if unknown or missing:
            raise ValueError(
                f"{source}: not a prediction record of this nextword (missing {missing}, unknown {unknown}); {RERUN}"
            )
        return cls(**data)


RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(PredictionRecord))


@dataclass(frozen=True)
class Summary(versioned.Versioned):
    """summary.json: the job's figures, written last and only when every input line has its record."""

    input_glob: str
    bundle_dir: str
    fingerprint: str  # vocabulary + text settings
    model_fingerprint: str  # + context and weights: what every record's `model` says
    mode: str
    context: str
    files: int
    bytes: int
    input_lines: int
    output_records: int
    complete: bool
    rejects_by_reason: dict[str, int]
    flags: dict[str, int]
    scored_tokens: int
    unknown_scored_tokens: int
    perplexity: float | None  # over every scored token
    known_perplexity: float | None  # excluding unknown tokens (KenLM's "excluding OOVs")
    seconds: float
    lines_per_second: float | None
    ranges: int
    resumed_ranges: int
    resumed_lines: int
    output_shards: list[str]
    format_version: int = SUMMARY_FORMAT_VERSION

    READS: ClassVar[int] = SUMMARY_FORMAT_VERSION
    RERUN: ClassVar[str] = RERUN
