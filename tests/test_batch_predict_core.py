"""Pure core of batch prediction: exact outputs for keyed reading, costs and records."""

from __future__ import annotations

import io
import json
import types
import typing
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_predict import core
from batch_predict.__main__ import split_texts
from nextword.artifacts.predictions import RECORD_FIELDS, PredictionRecord
from nextword.text.contract import TextSettings
from nextword.text.decode import decode_line
from tests.support.predict import expected_lines

pytestmark = pytest.mark.unit


def read_all(data: bytes, split_bytes: int, max_line_bytes: int = 1 << 20) -> list[tuple[int, int, bytes | None]]:
    """(line number, offset, bytes) of every line, reading range by range as the job does."""
    ranges = core.plan_ranges([("f", len(data))], split_bytes)
    counts = {(r.path, r.start): core.count_line_starts(io.BytesIO(data), r, chunk_bytes=3) for r in ranges}
    first = core.first_line_numbers(counts)
    out = []
    for r in ranges:
        lines = list(core.read_range(io.BytesIO(data), r, max_line_bytes))
        assert len(lines) == counts[(r.path, r.start)]  # the count pass and the read pass agree per range
        out += [(first[(r.path, r.start)] + i, offset, raw) for i, (offset, raw) in enumerate(lines)]
    return out


def test_plan_ranges_tiles_each_file_and_skips_empty_files():
    assert core.plan_ranges([("a", 10), ("b", 0), ("c", 4)], 4) == [
        core.FileRange("a", 0, 4, 10), core.FileRange("a", 4, 8, 10), core.FileRange("a", 8, 10, 10),
        core.FileRange("c", 0, 4, 4),
    ]  # fmt: skip


def test_range_bytes_spreads_small_inputs_and_caps_large_ones():
    mib = 1 << 20
    assert core.range_bytes(5 * mib, 64 * mib) == mib  # a 5 MiB input still makes 5 ranges
    assert core.range_bytes(640 * mib, 64 * mib) == 10 * mib
    assert core.range_bytes(100_000 * mib, 64 * mib) == 64 * mib
    assert core.range_bytes(3000, 700) == 700  # the configured maximum always holds


def test_read_ranges_exact_lines_offsets_and_numbers():
    data = b"ab\n\ncd\r\nlast-no-newline"
    assert read_all(data, split_bytes=3) == [(1, 0, b"ab"), (2, 3, b""), (3, 4, b"cd\r"), (4, 8, b"last-no-newline")]
    assert read_all(b"", split_bytes=3) == []
    assert read_all(b"\n\n", split_bytes=1) == [(1, 0, b""), (2, 1, b"")]


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=80).map(lambda b: b.replace(b"x", b"\n")), split_bytes=st.integers(1, 30))
def test_every_line_read_once_whatever_the_split(data, split_bytes):
    assert read_all(data, split_bytes) == expected_lines(data)


def test_overlong_line_is_skipped_without_being_held():
    data = b"short\n" + b"w " * 50 + b"\nafter\n" + b"z" * 40
    got = read_all(data, split_bytes=7, max_line_bytes=20)
    assert got == [(1, 0, b"short"), (2, 6, None), (3, 107, b"after"), (4, 113, None)]


def test_decode_line_flags():
    assert decode_line(b"\xef\xbb\xbfhi\r", at_file_start=True) == ("hi", ("bom", "crlf"))
    assert decode_line(b"\xef\xbb\xbfhi", at_file_start=False) == ("\ufeffhi", ())
    assert decode_line(b"a\x00b", at_file_start=False) == ("a\x00b", ("nul_bytes",))
    assert decode_line(b"caf\xe9 \xff", at_file_start=False) == ("caf\ufffd \ufffd", ("undecodable",))


@pytest.mark.parametrize(
    ("words", "mode", "eos", "cost"),
    [(0, "next", False, 1), (2, "next", False, 2), (3, "next", True, 4), (100000, "next", False, 4),
     (0, "score", False, 1), (1, "score", False, 1), (3, "score", False, 2), (5, "score", False, 4),
     (9, "score", False, 8), (9, "score", True, 12), (9, "both", False, 12)],
)  # fmt: skip
def test_line_cost_is_padded_positions(words, mode, eos, cost):
    assert core.line_cost(words, window=4, mode=mode, eos=eos) == cost


def test_length_groups_minimize_padding_plus_call_overhead():
    costs = [5, 35, 5, 6, 30, 1]
    assert core.length_groups(costs, 8192, overhead=0) == [[5], [0, 2], [3], [4], [1]]
    assert core.length_groups(costs, 8192, overhead=10) == [[5, 0, 2, 3], [4, 1]]  # 4*6 + 2*35 + 2*10
    assert core.length_groups(costs, 8192, overhead=1000) == [[5, 0, 2, 3, 4, 1]]
    assert core.length_groups([10] * 7 + [50], 35, overhead=0) == [[0, 1, 2], [3, 4, 5], [6], [7]]
    assert core.length_groups([], 35) == []
    # A group is paid per call it is cut into: four lines padded to 6 would be four calls of one line.
    assert core.length_groups([5, 5, 5, 6], 10, overhead=4) == [[0, 1], [2], [3]]


def test_prepare_line():
    line = core.prepare_line(b"The cat\r", False, window=4, mode="both", settings=TextSettings(), max_line_tokens=5)
    assert line == core.PreparedLine("The cat", 3, ("crlf",), None)
    assert core.prepare_line(b"a b c d e\xff f", False, 4, "next", TextSettings(), 5) == core.PreparedLine(
        "", 1, ("undecodable",), "line_too_long"
    )
    assert core.prepare_line(None, False, 4, "next", TextSettings(), 5) == core.PreparedLine("", 1, (), "line_too_long")


def test_prediction_records():
    nxt = [("the", 0.512346), ("a", 0.25)]
    tokens = [("a", False, -1.5), ("<unk>", True, -0.5)]
    score = core.LineScore(-2.0, 2, 1, -1.5, tokens)
    record = core.prediction_record(("crlf",), 3, 1, window=4, eos=False, next_words=nxt, score=score)
    assert record == {
        "words": 3, "unknown_words": 1, "flags": ["crlf", "shorter_than_window"], "error": None,
        "next": [{"word": "the", "prob": 0.512346}, {"word": "a", "prob": 0.25}],
        "log_prob": -2.0, "perplexity": 2.71828, "scored_tokens": 2, "unknown_scored_tokens": 1,
        # Excluding the unknown token: one token at -1.5 (KenLM's "perplexity excluding OOVs").
        "known_log_prob": -1.5, "known_perplexity": 4.48169,
        "token_scores": [{"token": "a", "unknown": False, "log_prob": -1.5},
                         {"token": "<unk>", "unknown": True, "log_prob": -0.5}],
    }  # fmt: skip
    only_unknown = core.prediction_record((), 1, 1, window=4, eos=True, score=core.LineScore(-3.0, 1, 1, 0.0))
    assert only_unknown["perplexity"] == 20.0855 and only_unknown["known_perplexity"] is None
    assert "token_scores" not in only_unknown  # only when predict.per_token asks
    empty = core.prediction_record(
        (), 0, 0, window=4, eos=False, next_words=[("", 0.0)], score=core.LineScore(0.0, 0, 0, 0.0)
    )
    assert empty == {"words": 0, "unknown_words": 0, "flags": ["empty"], "error": "empty_line"}
    # With <eos>, an empty line still has a context (the previous line's end) and one token to score.
    eos_empty = core.prediction_record(
        (), 0, 0, window=4, eos=True, next_words=[("x", 0.5)], score=core.LineScore(-1.0, 1, 0, -1.0)
    )
    assert eos_empty["error"] is None and eos_empty["flags"] == ["empty"] and eos_empty["scored_tokens"] == 1
    one_word = core.prediction_record((), 1, 1, window=4, eos=False, score=core.LineScore(0.0, 0, 0, 0.0))
    assert one_word["error"] == "too_short_to_score" and one_word["flags"] == ["all_unknown", "shorter_than_window"]
    keyed = core.keyed_record(core.LineKey("f.txt", 7, 70), one_word, "m").to_dict()
    assert list(keyed) == list(RECORD_FIELDS) and keyed["file"] == "f.txt" and keyed["next"] is None
    rejected = core.rejected_fields(core.PreparedLine("", 1, ("crlf",), "line_too_long"))
    assert core.keyed_record(core.LineKey("f", 2, 5), rejected, "m").to_dict() == {
        **dict.fromkeys(RECORD_FIELDS), "file": "f", "line": 2, "offset": 5, "flags": ["crlf"],
        "error": "line_too_long", "model": "m",
    }  # fmt: skip


_BIGQUERY_TYPES = {str: "STRING", int: "INTEGER", float: "FLOAT", bool: "BOOLEAN"}


def _bigquery_fields(typed: type) -> list[dict]:
    """(name, type, mode) of every field of a dataclass or TypedDict, nested records included, from its hints."""
    fields = []
    for name, hint in typing.get_type_hints(typed).items():
        if typing.get_origin(hint) is typing.ClassVar:  # a constant of the type, not a column
            continue
        args = (
            [a for a in typing.get_args(hint) if a is not type(None)]
            if typing.get_origin(hint) is types.UnionType
            else [hint]
        )
        (inner,) = args
        mode = "NULLABLE" if len(typing.get_args(hint)) > len(args) else "REQUIRED"
        if typing.get_origin(inner) is list:
            (inner,), mode = typing.get_args(inner), "REPEATED"
        if typing.is_typeddict(inner):
            fields.append({"name": name, "type": "RECORD", "mode": mode, "fields": _bigquery_fields(inner)})
        else:
            fields.append({"name": name, "type": _BIGQUERY_TYPES[inner], "mode": mode})
    return fields


def _without_descriptions(fields: list[dict]) -> list[dict]:
    return [
        {k: _without_descriptions(v) if k == "fields" else v for k, v in field.items() if k != "description"}
        for field in fields
    ]


def test_the_bigquery_schema_matches_the_record_type_field_by_field():
    schema = json.loads((Path(core.__file__).parent / "schema.json").read_text())
    assert _without_descriptions(schema) == _bigquery_fields(PredictionRecord)
    assert all(field.get("description") for field in schema)  # what each column means, for the table's users
    assert [field["name"] for field in schema] == list(RECORD_FIELDS)
    token_fields = next(field for field in schema if field["name"] == "token_scores")["fields"]
    record = core.prediction_record((), 2, 0, 0, True, score=core.LineScore(-1.0, 1, 0, -1.0, [("a", False, -1.0)]))
    assert [field["name"] for field in token_fields] == list(record["token_scores"][0])
    next_fields = next(field for field in schema if field["name"] == "next")["fields"]
    record = core.prediction_record((), 2, 0, 0, True, next_words=[("a", 0.5)])
    assert [field["name"] for field in next_fields] == list(record["next"][0])


def test_a_record_reads_back_as_written_and_a_foreign_one_is_refused():
    record = core.keyed_record(core.LineKey("f", 3, 12), core.prediction_record(("crlf",), 2, 0, 0, True,
                               next_words=[("a", 0.5)]), "abc")  # fmt: skip
    text = json.dumps(record.to_dict())
    assert PredictionRecord.from_dict(json.loads(text), "shard-1") == record
    with pytest.raises(ValueError, match=r"^shard-1: not a prediction record of this nextword \(missing \['model'\]"):
        PredictionRecord.from_dict({k: v for k, v in json.loads(text).items() if k != "model"}, "shard-1")


def test_split_texts_takes_the_arguments_before_the_first_option():
    assert split_texts(["some of them", "x", "--set", "a=1"]) == (["some of them", "x"], ["--set", "a=1"])
    assert split_texts(["--runner", "DataflowRunner"]) == ([], ["--runner", "DataflowRunner"])


def test_count_record_adds_up_errors_flags_and_tokens():
    stats = Counter()
    scored = {"scored_tokens": 7, "unknown_scored_tokens": 2, "log_prob": -14.0, "known_log_prob": -5.0}
    core.count_record(PredictionRecord("f", 1, 0, error=None, flags=["crlf"], **scored), stats)
    unscored = dict.fromkeys(scored)
    core.count_record(PredictionRecord("f", 2, 9, error="empty_line", flags=["empty", "crlf"], **unscored), stats)
    assert stats == Counter({"records": 2, "flag.crlf": 2, "flag.empty": 1, "error.empty_line": 1, **scored})
    assert core.score_totals(stats) == {
        "scored_tokens": 7, "unknown_scored_tokens": 2, "perplexity": 7.38906, "known_perplexity": 2.71828,
    }  # fmt: skip
    assert core.score_totals(Counter())["perplexity"] is None


def test_round_significant_keeps_six_digits_at_every_scale():
    values = np.array([[0.123456789, 1.23456789e-9, 0.0, 0.25], [-2.5e-5, 123456789.0, 1.0, 0.999999949]], np.float32)
    rounded = core.round_significant(values).tolist()
    assert rounded == [[0.123457, 1.23457e-9, 0.0, 0.25], [-2.5e-5, 123457000.0, 1.0, 1.0]]


def test_token_runs_cut_where_a_run_reaches_the_budget_and_keep_the_order():
    assert list(core.token_runs([3, 1, 5, 2, 9, 0], int, 4)) == [[3, 1], [5], [2, 9], [0]]
    assert list(core.token_runs(iter(["a b", "c"]), lambda text: len(text.split()), 10)) == [["a b", "c"]]
    assert list(core.token_runs([], int, 4)) == []


def test_calls_in_flight_by_context_and_mode():
    assert core.calls_in_flight("line", "next", 0) == 2  # small calls: two at once
    assert core.calls_in_flight("line", "score", 0) == 1  # a score call holds batch x vocabulary floats
    assert core.calls_in_flight("line", "both", 0) == 1
    assert core.calls_in_flight("line", "score", 3) == 3  # the configured number wins
    assert core.calls_in_flight("document", "score", 3) == 1  # one stream: its calls follow each other


def test_ranges_committed_in_another_record_format_are_scored_again(tmp_path, caplog):
    from batch_predict import resume

    out = str(tmp_path / "out")
    job = {"model_fingerprint": "m1", "record_format": PredictionRecord.FORMAT, "settings": {}, "ranges": [["a", 0, 9]],
           "checksums": {"a": 1}}  # fmt: skip
    older = {**job, "record_format": PredictionRecord.FORMAT - 1}
    for written in (older, job):
        assert resume.prepare_output(out, written, []) == {}
        Path(out, resume.shard_name(0, 1)).write_text("{}\n")
        resume.commit_marker(out, 0, 1, resume.job_digest(written), {"records": 1})
        kept = resume.prepare_output(out, written, [])  # the same job: its committed range is kept
        assert kept == {0: {"job": resume.job_digest(written), "stats": {"records": 1}}}
        caplog.clear()
        with caplog.at_level("INFO", logger="batch_predict.resume"):
            assert resume.prepare_output(out, job if written is older else older, []) == {}
        assert "the record format changed" in caplog.text
