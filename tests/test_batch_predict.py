"""The batch prediction job on the real local Beam runner, with a tiny trained bundle."""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.testing.util import BeamAssertException, assert_that
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_predict import __main__ as predict_main
from batch_predict import core, pipeline
from batch_predict.handler import BundleModelHandler
from batch_predict.predictor import LoadedBundle
from batch_predict.transforms import LineScorer, ReadLinesFn
from nextword.artifacts import bundle as bundle_lib
from nextword.text import contract
from nextword.text.contract import TextSettings
from tests.support.beam import local_test_pipeline
from tests.support.predict import chain_words, expected_lines, job_config, predict_argv, read_records
from tests.support.tiny_bundle import corpus_lines

pytestmark = pytest.mark.beam


def bad_lines_file(tiny_bundle) -> tuple[bytes, dict[int, tuple]]:
    """Input bytes and, per line number, (error, flags, has next, has score) expected in mode both."""
    window = tiny_bundle.config.preprocess.window_length
    long_line = " ".join([chain_words(tiny_bundle, 0, 10)] * 10_000)  # 100,000 words
    lines = [
        (chain_words(tiny_bundle, 1, 8).encode(), (None, [], True, True)),
        (b"", ("empty_line", ["empty"], False, False)),
        (b"   \t ", ("empty_line", ["empty"], False, False)),
        (b"Zzzq Qqqz!", (None, ["all_unknown", "shorter_than_window"], True, True)),
        (chain_words(tiny_bundle, 2, 1).encode(), ("too_short_to_score", ["shorter_than_window"], True, False)),
        (chain_words(tiny_bundle, 3, window - 1).encode(), (None, ["shorter_than_window"], True, True)),
        (chain_words(tiny_bundle, 4, 6).encode() + b"\r", (None, ["crlf"], True, True)),
        (b"\xff\xfe " + chain_words(tiny_bundle, 5, 6).encode(), (None, ["undecodable"], True, True)),
        (b"nul\x00" + chain_words(tiny_bundle, 6, 6).encode(), (None, ["nul_bytes"], True, True)),
        (long_line.encode(), (None, [], True, True)),
        (b"x " * 150_001, ("line_too_long", [], False, False)),
        (chain_words(tiny_bundle, 7, 5).encode(), (None, [], True, True)),  # no newline at the end
    ]
    data = b"\n".join(raw for raw, _ in lines)
    return data, {i + 1: expected for i, (_, expected) in enumerate(lines)}


def test_bad_lines_each_get_exactly_one_record(tiny_bundle, tmp_path):
    data, expected = bad_lines_file(tiny_bundle)
    (tmp_path / "in.txt").write_bytes(data)
    config = job_config(tiny_bundle, tmp_path, str(tmp_path / "in.txt"), "predict.top_k=3")

    def check(scored_ranges):
        records = sum(done["stats"]["records"] for done in scored_ranges)
        if records != len(expected):
            raise BeamAssertException(f"{records} records in the scored ranges, not {len(expected)}")

    p = local_test_pipeline()
    assert_that(pipeline.build(p, config), check)
    result = p.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]
                if c.key.metric.namespace == "nextword.predict"}  # fmt: skip
    assert counters["lines_read"] == counters["records"] == len(expected)
    assert counters["error_line_too_long"] == counters["flag_crlf"] == counters["flag_undecodable"] == 1

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["input_lines"] == summary["output_records"] == len(expected) == len(read_records(tmp_path / "out"))
    assert summary["complete"] and summary["rejects_by_reason"] == {
        "empty_line": 2, "line_too_long": 1, "too_short_to_score": 1,
    }  # fmt: skip
    records = {r["line"]: r for r in read_records(tmp_path / "out")}
    got = {n: (r["error"], r["flags"], r["next"] is not None, r["log_prob"] is not None) for n, r in records.items()}
    assert got == expected
    assert records[10]["words"] == 100_000 and records[10]["scored_tokens"] == 99_999
    assert [n["word"] for n in records[1]["next"]] and len(records[1]["next"]) == 3


def test_records_equal_the_bundle_signatures(tiny_bundle, tmp_path):
    texts = [chain_words(tiny_bundle, i, 3 + i) for i in range(6)]
    texts += ["", "unknownword", f"{chain_words(tiny_bundle, 0, 3)} zzz"]  # the last scores one unknown token
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    config = job_config(tiny_bundle, tmp_path, str(tmp_path / "in.txt"), "predict.top_k=4")
    pipeline.run(predict_argv(config))
    model = LoadedBundle(tiny_bundle.bundle_dir)
    nxt, score = model.next_words(texts, 4), model.score(texts, per_token=False)
    records = sorted(read_records(tmp_path / "out"), key=lambda r: r["line"])
    assert [r["line"] for r in records] == list(range(1, len(texts) + 1))
    for i, record in enumerate(records):
        if texts[i]:
            words = [w.decode() for w in nxt["words"][i]]
            assert [n["word"] for n in record["next"]] == words
            assert [n["prob"] for n in record["next"]] == pytest.approx(nxt["probs"][i].tolist(), rel=1e-5)
        if score["tokens"][i]:
            assert record["log_prob"] == pytest.approx(float(score["log_prob"][i]), rel=1e-5)
            perplexity = math.exp(-float(score["log_prob"][i]) / int(score["tokens"][i]))
            assert record["perplexity"] == pytest.approx(perplexity, rel=1e-5)
            assert record["known_log_prob"] == pytest.approx(float(score["known_log_prob"][i]), rel=1e-5)
    assert records[-1]["unknown_scored_tokens"] == 1 and records[-1]["known_log_prob"] > records[-1]["log_prob"]


def document_reference(tiny_bundle, lines: list[str]) -> dict:
    """The bundle's score_stream over the whole document in one call (test_export checks it against the
    trainer's carried evaluation), from the state a file's start gets."""
    import numpy as np

    model, loaded = LoadedBundle(tiny_bundle.bundle_dir), bundle_lib.load_bundle(tiny_bundle.bundle_dir)
    last_id = contract.EOS_ID if loaded.settings.eos else -1
    return model.score_stream(lines, np.zeros([loaded.state_size], np.float32), last_id)


def test_document_context_carries_the_state_across_lines_and_ranges(tiny_bundle, tmp_path):
    lines = corpus_lines(tiny_bundle)[:40] + ["", "zzz unknownword " + chain_words(tiny_bundle, 0, 4)]
    lines += corpus_lines(tiny_bundle)[40:60]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    reference = document_reference(tiny_bundle, lines)
    common = ("predict.mode=score", "predict.context=document", "predict.per_token=true",
              "predict.split_bytes=400", "predict.max_batch_tokens=16")  # fmt: skip
    # Warm-up longer than the file: every range starts from the state the whole text before it gives.
    summary = pipeline.run(predict_argv(job_config(
        tiny_bundle, tmp_path, str(tmp_path / "in.txt"), *common, "predict.warmup_bytes=100000"
    )))  # fmt: skip
    records = sorted(read_records(tmp_path / "out"), key=lambda r: r["line"])
    ranges = -(-(tmp_path / "in.txt").stat().st_size // 400)
    assert ranges >= 5 and [r["line"] for r in records] == list(range(1, len(lines) + 1))
    scored = [(i, r) for i, r in enumerate(records) if r["scored_tokens"]]
    assert [r["log_prob"] for _, r in scored] == pytest.approx([reference["log_prob"][i] for i, _ in scored], abs=2e-4)
    assert [r["scored_tokens"] for r in records] == [t or None for t in reference["tokens"].tolist()]
    tokens = [t for r in records for t in r["token_scores"] or []]
    assert [t["log_prob"] for t in tokens] == pytest.approx(reference["token_log_prob"].tolist(), abs=2e-4)
    assert [t["token"] for t in tokens] == [t.decode() for t in reference["token_text"]]
    for record in (r for _, r in scored):  # per-token values add up to the line's, with and without unknowns
        values = record["token_scores"]
        assert sum(t["log_prob"] for t in values) == pytest.approx(record["log_prob"], abs=1e-4)
        known = [t["log_prob"] for t in values if not t["unknown"]]
        assert sum(known) == pytest.approx(record["known_log_prob"], abs=1e-4)
    odd = records[41]  # "zzz unknownword ...": two unknown tokens, left out of known_perplexity
    assert odd["unknown_scored_tokens"] == 2 and odd["known_perplexity"] < odd["perplexity"]
    model = bundle_lib.load_bundle(tiny_bundle.bundle_dir).model_fingerprint
    assert {r["model"] for r in records} == {model} and summary["model_fingerprint"] == model
    total = float(reference["log_prob"].astype("float64").sum())
    assert summary["context"] == "document" and summary["scored_tokens"] == int(reference["tokens"].sum())
    assert summary["perplexity"] == pytest.approx(math.exp(-total / summary["scored_tokens"]), rel=1e-4)
    assert summary["known_perplexity"] < summary["perplexity"]

    # Without warm-up, each range after the first starts from a zero state: its first lines score otherwise.
    pipeline.run(predict_argv(job_config(
        tiny_bundle, tmp_path, str(tmp_path / "in.txt"), *common, "predict.warmup_bytes=0"
    )))  # fmt: skip
    cold = sorted(read_records(tmp_path / "out"), key=lambda r: r["line"])
    changed = [
        r["line"] for r, c in zip(records, cold, strict=True) if abs((r["log_prob"] or 0) - (c["log_prob"] or 0)) > 1e-3
    ]
    assert 0 < len(changed) < len(lines) and 1 not in changed


def test_per_token_scores_in_line_context_add_up_to_each_line(tiny_bundle, tmp_path):
    texts = [chain_words(tiny_bundle, i, 3 + i) for i in range(5)] + [
        chain_words(tiny_bundle, 1, 2) + " qqq " + chain_words(tiny_bundle, 2, 3)
    ]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    config = job_config(tiny_bundle, tmp_path, str(tmp_path / "in.txt"), "predict.mode=score", "predict.per_token=true")
    summary = pipeline.run(predict_argv(config))
    for record in read_records(tmp_path / "out"):
        values = record["token_scores"]
        assert len(values) == record["scored_tokens"]
        assert sum(t["log_prob"] for t in values) == pytest.approx(record["log_prob"], abs=1e-4)
        assert [t["unknown"] for t in values].count(True) == record["unknown_scored_tokens"]
        expected = texts[record["line"] - 1].split()[1 - int(tiny_bundle.settings.eos) :]
        assert [t["token"] for t in values if t["token"] != "<eos>"] == expected
    assert summary["unknown_scored_tokens"] == 1


def test_multi_file_glob_input_lines_equal_output_records(tiny_bundle, tmp_path):
    corpus = sorted(glob.glob(tiny_bundle.corpus_glob, recursive=True))
    inputs = tmp_path / "in"
    files = {
        "a/one.txt": Path(corpus[0]).read_bytes()[:3000],
        "a/two.txt": b"\n\nlast line without newline",
        "b/three.txt": Path(corpus[1]).read_bytes()[:2000] + b"\r\n\xff\n",
        "b/empty.txt": b"",
    }
    for rel, data in files.items():
        (inputs / rel).parent.mkdir(parents=True, exist_ok=True)
        (inputs / rel).write_bytes(data)
    config = job_config(tiny_bundle, tmp_path, f"{inputs}/a/*.txt,{inputs}/b/*.txt", "predict.mode=score",
                        "predict.split_bytes=700", "predict.max_batch_tokens=64")  # fmt: skip
    summary = pipeline.run(predict_argv(config))
    records = read_records(tmp_path / "out")
    expected = {(str(inputs / rel), n, offset) for rel, data in files.items() for n, offset, _ in expected_lines(data)}
    assert {(r["file"], r["line"], r["offset"]) for r in records} == expected
    assert summary["input_lines"] == summary["output_records"] == len(records) == len(expected)
    ranges = sum(-(-len(data) // 700) for data in files.values())  # one shard per byte range
    assert summary["files"] == 4 and len(summary["output_shards"]) == summary["ranges"] == ranges
    assert all(r["next"] is None for r in records) and all(r["log_prob"] is not None or r["error"] for r in records)


def test_read_lines_dofn_keys_every_line(tiny_bundle, tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"a b\n" + b"w " * 20 + b"\nc\n")
    cfg = job_config(tiny_bundle, tmp_path, str(path), "predict.max_line_bytes=30").predict
    fn = ReadLinesFn(cfg, context_tokens=4, settings=TextSettings())
    fn.setup()
    file_range = core.FileRange(str(path), 0, path.stat().st_size, path.stat().st_size)
    out = list(fn.process(file_range, {(str(path), 0): 10}))
    assert out == [
        (core.LineKey(str(path), 10, 0), core.PreparedLine("a b", 3, ())),
        (core.LineKey(str(path), 11, 4), core.PreparedLine("", 1, (), "line_too_long")),
        (core.LineKey(str(path), 12, 45), core.PreparedLine("c", 1, ())),
    ]
    # Progress: every byte of the range, every line, the range itself.
    assert fn.progress.done == {"files": 1, "bytes": path.stat().st_size, "lines": 3, "tokens": 0}


def test_handler_loads_once_and_answers_in_batch_order(tiny_bundle):
    bundle = bundle_lib.load_bundle(tiny_bundle.bundle_dir)
    handler = BundleModelHandler(bundle, "both", top_k=2, max_batch_tokens=12)
    model = handler.load_model()
    sizes = [9, 1, 5, 2, 9, 3]  # costs 12, 1, 8, 3, 12, 5: several calls, lines reordered by length
    lines = [core.prepare_line(chain_words(tiny_bundle, i, n).encode() + b"\r", False, 4, "both", TextSettings(), 99)
             for i, n in enumerate(sizes)]  # fmt: skip
    assert len(core.length_groups([line.cost for line in lines], 12)) > 2
    too_long = core.PreparedLine("", 1, ("crlf",), "line_too_long")
    with_reject = handler.run_inference([*lines[:2], too_long, *lines[2:]], model)
    assert with_reject[2] == {"flags": ["crlf"], "error": "line_too_long"}
    records = handler.run_inference(lines, model)
    _assert_records_agree(records, with_reject[:2] + with_reject[3:])
    _assert_records_agree(records, [handler.run_inference([line], model)[0] for line in lines])
    assert sum("log_prob" in r for r in records) == 5  # the one-word line has nothing to score
    assert [r["words"] for r in records] == sizes and all(r["flags"][0] == "crlf" for r in records)


@pytest.fixture(scope="module")
def loaded_tiny(tiny_bundle):
    bundle = bundle_lib.load_bundle(tiny_bundle.bundle_dir)
    return bundle, BundleModelHandler(bundle, "both", top_k=3, max_batch_tokens=8, per_token=True).load_model()


def _numbers(record: dict) -> list[float]:
    """Every number a model call puts in a record: next-word probabilities, line and per-token scores."""
    values = [n["prob"] for n in record.get("next") or []]
    values += [record.get(k) or 0.0 for k in ("log_prob", "known_log_prob")]
    return values + [t["log_prob"] for t in record.get("token_scores") or []]


def _assert_scores_agree(got: list[float], want: list[float]) -> None:
    """Within 1e-5, or one unit of the 6th significant digit: records round every number to 6 digits, so
    two equal scores either side of a rounding boundary differ by that unit (-1.57342 against -1.57341)."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        unit = 10.0 ** (math.floor(math.log10(max(abs(g), abs(w), 1e-30))) - 5)
        assert abs(g - w) <= max(1e-5, unit) * (1 + 1e-9), (g, w)


def _assert_records_agree(got: list[dict], want: list[dict]) -> None:
    """The same records but for the numbers' last rounded digit (a different batch rounds differently)."""

    def without_numbers(record: dict) -> dict:
        numbers = ("next", "log_prob", "known_log_prob", "perplexity", "known_perplexity", "token_scores")
        kept = {key: value for key, value in record.items() if key not in numbers}
        kept["next"] = [n["word"] for n in record.get("next") or []]
        kept["token_scores"] = [t["token"] for t in record.get("token_scores") or []]
        return kept

    assert [without_numbers(r) for r in got] == [without_numbers(r) for r in want]
    for g, w in zip(got, want, strict=True):
        _assert_scores_agree(_numbers(g), _numbers(w))


@settings(max_examples=12, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 30), min_size=1, max_size=12),
    budget=st.sampled_from([4, 16, 64, 4096]),
    order=st.randoms(use_true_random=False),
)
def test_scores_do_not_depend_on_batching_or_order(tiny_bundle, loaded_tiny, sizes, budget, order):
    """No padding position is ever scored: any budget, batch composition or order gives each line the
    records it gets alone."""
    bundle, model = loaded_tiny
    handler = BundleModelHandler(bundle, "both", top_k=3, max_batch_tokens=budget, per_token=True)
    window = bundle.context_tokens
    lines = [core.prepare_line(chain_words(tiny_bundle, i % 7, n).encode(), False, window, "both", TextSettings(), 99)
             for i, n in enumerate(sizes)]  # fmt: skip
    shuffled = list(range(len(lines)))
    order.shuffle(shuffled)
    together = handler.run_inference([lines[i] for i in shuffled], model)
    for line, record in zip((lines[i] for i in shuffled), together, strict=True):
        alone = handler.run_inference([line], model)[0]
        assert [t["token"] for t in record.get("token_scores") or []] == [
            t["token"] for t in alone.get("token_scores") or []
        ]
        _assert_scores_agree(_numbers(record), _numbers(alone))


def test_calls_in_flight_keep_every_line_in_order_with_the_same_records(tiny_bundle, loaded_tiny):
    """Several blocks, each of several model calls, with up to 3 calls at once: the records come out in
    the lines' order, each the record the line gets when the calls run one after another."""
    bundle, model = loaded_tiny
    handler = BundleModelHandler(bundle, "both", top_k=3, max_batch_tokens=8, per_token=True)
    window = bundle.context_tokens
    lines = [core.prepare_line(chain_words(tiny_bundle, i % 7, 1 + i % 9).encode(), False, window, "both",
                               TextSettings(), 99) for i in range(40)]  # fmt: skip
    lines[5] = core.PreparedLine("", 1, (), "line_too_long")  # a reject between scored lines
    keyed = [(core.LineKey("in.txt", i + 1, i), line) for i, line in enumerate(lines)]
    file_range = core.FileRange("in.txt", 0, 40, 40)
    one_by_one = list(LineScorer(handler, model, block_tokens=24, calls_in_flight=1).score(file_range, keyed))
    in_flight = list(LineScorer(handler, model, block_tokens=24, calls_in_flight=3).score(file_range, keyed))
    assert [key for key, _ in in_flight] == [key for key, _ in keyed]
    assert in_flight == one_by_one
    assert in_flight[5][1] == {"flags": [], "error": "line_too_long"}
    assert [fields.get("words") for _, fields in in_flight] == [None if i == 5 else 1 + i % 9 for i in range(40)]


@pytest.mark.e2e
def test_share_cores_sets_one_share_of_the_cores_per_call_before_tensorflow_starts():
    """In a fresh process the intra-op threads become cores // calls; once TensorFlow has started, they stay."""
    script = (
        "import os, tensorflow as tf\n"
        "from batch_predict.handler import share_cores\n"
        "share_cores(2)\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads(), max(1, len(os.sched_getaffinity(0)) // 2))\n"
        "tf.constant(1.0) + 1.0\n"
        "share_cores(1)\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads())\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    set_threads, share, kept = done.stdout.split()
    assert set_threads == share
    assert kept == share


@pytest.mark.multiprocess
@pytest.mark.parametrize(("context", "mode"), [("line", "both"), ("document", "score")])
def test_scores_do_not_depend_on_the_runner_mode_or_the_batch_budget(tiny_bundle, tmp_path, context, mode):
    """The same per-line and per-token scores in_memory with small model calls and on two worker processes
    with large ones (a range's lines are batched differently, and ranges run in another order)."""
    lines = corpus_lines(tiny_bundle)[:60] + ["", "zzz " + chain_words(tiny_bundle, 3, 9)]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    common = (f"predict.mode={mode}", f"predict.context={context}", "predict.per_token=true",
              "predict.split_bytes=500", "predict.warmup_bytes=300")  # fmt: skip
    runs = {}
    for name, budget, beam_args in [
        ("in_memory", 16, []),
        ("multi_processing", 4096, ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]),
    ]:
        config = job_config(tiny_bundle, tmp_path / name, str(tmp_path / "in.txt"), *common,
                            f"predict.max_batch_tokens={budget}")  # fmt: skip
        pipeline.run(predict_argv(config) + beam_args)
        runs[name] = sorted(read_records(tmp_path / name / "out"), key=lambda r: r["line"])
    one, other = runs["in_memory"], runs["multi_processing"]
    assert [r["line"] for r in one] == [r["line"] for r in other] == list(range(1, len(lines) + 1))
    assert sum(bool(r["token_scores"]) for r in one) > 50
    for a, b in zip(one, other, strict=True):
        assert [t["token"] for t in a["token_scores"] or []] == [t["token"] for t in b["token_scores"] or []]
        _assert_scores_agree(_numbers(a), _numbers(b))
        assert (a["error"], a["flags"], a["scored_tokens"]) == (b["error"], b["flags"], b["scored_tokens"])


def test_shared_model_across_processes_gives_the_same_records(tiny_bundle, tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(chain_words(tiny_bundle, i, 6) for i in range(5)))
    config = job_config(tiny_bundle, tmp_path, str(tmp_path / "in.txt"), "predict.mode=next")
    pipeline.run(predict_argv(config))
    plain = sorted(read_records(tmp_path / "out"), key=lambda r: r["line"])
    pipeline.run(predict_argv(config) + ["--set", "predict.share_model_across_processes=true"])
    assert sorted(read_records(tmp_path / "out"), key=lambda r: r["line"]) == plain


def test_missing_or_modified_bundle_is_one_line_error_before_any_work(tiny_bundle, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("a b c\n")
    argv = predict_argv(job_config(tiny_bundle, tmp_path, str(tmp_path / "in.txt")))
    missing = argv + ["--set", f"predict.bundle_dir={tmp_path / 'nowhere'}"]
    assert predict_main.main(missing) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path / 'nowhere'}: not a nextword bundle: missing saved_model.pb; " + (
        "point predict.bundle_dir at the bundle that `nextword train` exported"
    )
    modified = tmp_path / "modified"
    shutil.copytree(tiny_bundle.bundle_dir, modified)
    vocab = modified / "nextword" / "vocab.txt"
    vocab.write_text(vocab.read_text() + "extra\n")
    assert predict_main.main(argv + ["--set", f"predict.bundle_dir={modified}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {modified}: fingerprint mismatch")
    older = tmp_path / "older"  # a bundle exported before model fingerprints (bundle.json without them)
    shutil.copytree(tiny_bundle.bundle_dir, older)
    info_path = older / "nextword" / "bundle.json"
    info = json.loads(info_path.read_text())
    del info["weights_sha256"]
    info_path.write_text(json.dumps(info))
    assert predict_main.main(argv + ["--set", f"predict.bundle_dir={older}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {older}: exported before document scoring")
    assert predict_main.main(argv + ["--set", f"predict.input_glob={tmp_path}/none/*.txt"]) == 1
    assert capsys.readouterr().err.strip() == f"error: predict.input_glob: {tmp_path}/none/*.txt matches no file"
    assert not (tmp_path / "out").exists()  # nothing started


@pytest.mark.e2e
def test_cli_one_liner_prints_top_k_and_the_prediction(tiny_bundle):
    context = chain_words(tiny_bundle, 0, 4)
    done = subprocess.run(
        [sys.executable, "-m", "nextword.cli", "predict", context,
         "--set", f"predict.bundle_dir={tiny_bundle.bundle_dir}", "--set", "predict.top_k=3"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == context and len(lines) == 5
    words = [line.split()[0] for line in lines[1:4]]
    probs = [float(line.split()[1]) for line in lines[1:4]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert lines[4] == f"Prediction: {context} {words[0]}"
    chain = tiny_bundle.chain
    last = chain.words.index(context.split()[-1])
    assert words[0] in {chain.words[j] for j in chain.successors[last]}

    bundle_arg = f"predict.bundle_dir={tiny_bundle.bundle_dir}"
    empty = subprocess.run(
        [sys.executable, "-m", "nextword.cli", "predict", "?!", "--set", bundle_arg],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert empty.returncode == 1 and empty.stdout == ""
    assert empty.stderr.strip().splitlines()[-1] == "error: '?!': no word left after normalization to predict from"


@pytest.mark.e2e
def test_cli_one_liner_on_a_file_prints_every_lines_perplexity_in_the_context_asked(tiny_bundle, tmp_path):
    lines = corpus_lines(tiny_bundle)[:6] + ["", "zzz unknownword"]
    path = tmp_path / "notes.txt"
    path.write_text("\n".join(lines) + "\n")

    def one_liner(*options: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-m", "nextword.cli", "predict", str(path), *options,
             "--set", f"predict.bundle_dir={tiny_bundle.bundle_dir}"],
            capture_output=True, text=True, timeout=180, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    out = one_liner("--context", "document")
    assert len(out) == len(lines) + 1  # one row per input line, then the file's figures
    texts = [row.split(None, 2)[2] if len(row.split()) > 2 else "" for row in out[: len(lines)]]
    assert texts == [*lines[:6], "empty_line", "zzz unknownword"]
    document = job_summary(tiny_bundle, tmp_path / "document", path, "document")
    assert out[-1] == (
        f"{path}: perplexity {document['perplexity']} over {document['scored_tokens']} tokens, "
        f"{document['known_perplexity']} without the {document['unknown_scored_tokens']} unknown ones "
        "(document context)"
    )
    line = job_summary(tiny_bundle, tmp_path / "line", path, "line")
    assert line["perplexity"] != document["perplexity"]  # --context reached the job: the context was carried


def job_summary(tiny_bundle, out: Path, path: Path, context: str) -> dict:
    """summary.json of the Beam job over `path` alone, in `context`."""
    config = job_config(tiny_bundle, out, str(path), "predict.mode=score", f"predict.context={context}")
    return pipeline.run(predict_argv(config))


def test_bundle_input_and_output_on_gcs(tiny_bundle, gcs_bucket, tmp_path):
    from nextword import storage
    from trainer.export import export_bundle

    bundle_dir = f"{gcs_bucket}/bundle"
    export_bundle(tiny_bundle.model, tiny_bundle.data_dir, tiny_bundle.config, bundle_dir)
    texts = {"in/a.txt": "\n".join(chain_words(tiny_bundle, i, 7) for i in range(30)) + "\n", "in/b.txt": "\n\nx y"}
    for rel, text in texts.items():
        storage.write_text(f"{gcs_bucket}/{rel}", text)
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    settings = ["--set", "predict.split_bytes=200", "--set", "predict.max_batch_tokens=50"]
    summary = pipeline.run(predict_argv(job_config(tiny_bundle, tmp_path, f"{gcs_bucket}/in/*.txt",
                                            f"predict.bundle_dir={bundle_dir}",
                                            f"predict.output_dir={gcs_bucket}/out")) + settings)  # fmt: skip
    assert summary["input_lines"] == summary["output_records"] == 33 and summary["bundle_dir"] == bundle_dir
    remote = [json.loads(line) for shard in summary["output_shards"]
              for line in storage.read_text(f"{gcs_bucket}/out/{shard}").splitlines()]  # fmt: skip
    pipeline.run(predict_argv(job_config(tiny_bundle, tmp_path, f"{tmp_path}/in/*.txt")) + settings)
    local = read_records(tmp_path / "out")
    key = lambda r: (r["file"].rsplit("/", 1)[1], r["line"])  # noqa: E731
    strip = lambda r: {k: v for k, v in r.items() if k != "file"}  # noqa: E731
    assert [strip(r) for r in sorted(remote, key=key)] == [strip(r) for r in sorted(local, key=key)]


def test_denied_gcs_input_read_fails_the_job_with_one_line(tiny_bundle, gcs_bucket, gcs_emulator, tmp_path, capsys):
    from nextword import storage

    for name in ("a", "b"):
        storage.write_text(f"{gcs_bucket}/in/{name}.txt", chain_words(tiny_bundle, 0, 7) + "\n")
    # Listing and opening work; downloading b.txt is refused (e.g. an object with a stricter ACL).
    gcs_emulator.proxy.fail(("GET", "^/download/.*/o/in/b.txt", 403, None))
    argv = predict_argv(job_config(tiny_bundle, tmp_path, f"{gcs_bucket}/in/*.txt"))
    assert predict_main.main(argv) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith(
        f"error: {gcs_bucket}/in/b.txt: permission denied to read (HTTP 403); grant the job's service account"
    ), lines
    assert gcs_emulator.proxy.hits()[0] >= 1 and not (tmp_path / "out" / pipeline.SUMMARY_FILE).exists()
