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

from batch_predict import __main__ as predict_main
from batch_predict import core, pipeline
from batch_predict import handler as handler_lib
from batch_predict.handler import BundleModelHandler, LoadedBundle
from batch_predict.transforms import ReadLinesFn
from nextword import bundle as bundle_lib
from tests.support.beam import local_test_pipeline
from tests.support.predict import chain_words, expected_lines, job_config, predict_argv, read_records

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

    def check(lines):
        records = [json.loads(line) for line in lines]
        got = {r["line"]: (r["error"], r["flags"], r["next"] is not None, r["log_prob"] is not None) for r in records}
        if got != expected or len(records) != len(expected):
            raise BeamAssertException(f"records {got} != expected {expected}")

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
    assert records[10]["words"] == 100_000 and records[10]["scored_tokens"] == 99_999
    assert [n["word"] for n in records[1]["next"]] and len(records[1]["next"]) == 3


def test_records_equal_the_bundle_signatures(tiny_bundle, tmp_path):
    texts = [chain_words(tiny_bundle, i, 3 + i) for i in range(6)] + ["", "unknownword"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    config = job_config(tiny_bundle, tmp_path, str(tmp_path / "in.txt"), "predict.top_k=4")
    pipeline.run(predict_argv(config))
    model = LoadedBundle(tiny_bundle.bundle_dir)
    nxt, score = model.next_words(texts, 4), model.score(texts)
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
                        "predict.split_bytes=700", "predict.num_shards=3", "predict.max_batch_tokens=64")  # fmt: skip
    summary = pipeline.run(predict_argv(config))
    records = read_records(tmp_path / "out")
    expected = {(str(inputs / rel), n, offset) for rel, data in files.items() for n, offset, _ in expected_lines(data)}
    assert {(r["file"], r["line"], r["offset"]) for r in records} == expected
    assert summary["input_lines"] == summary["output_records"] == len(records) == len(expected)
    assert summary["files"] == 4 and len(summary["output_shards"]) == 3
    assert all(r["next"] is None for r in records) and all(r["log_prob"] is not None or r["error"] for r in records)


def test_read_lines_dofn_keys_every_line(tiny_bundle, tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"a b\n" + b"w " * 20 + b"\nc\n")
    cfg = job_config(tiny_bundle, tmp_path, str(path), "predict.max_line_bytes=30").predict
    fn = ReadLinesFn(cfg, context_tokens=4, eos=False)
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
    assert handler.batch_elements_kwargs()["max_batch_size"] == 12 * handler_lib.GATHER_BUDGETS
    model = handler.load_model()
    sizes = [9, 1, 5, 2, 9, 3]  # costs 12, 1, 8, 3, 12, 5: several calls, lines reordered by length
    lines = [core.prepare_line(chain_words(tiny_bundle, i, n).encode() + b"\r", False, 4, "both", False, 99)
             for i, n in enumerate(sizes)]  # fmt: skip
    assert len(core.length_groups([line.cost for line in lines], 12)) > 2
    too_long = core.PreparedLine("", 1, ("crlf",), "line_too_long")
    with_reject = handler.run_inference([*lines[:2], too_long, *lines[2:]], model)
    assert with_reject[2] == {"flags": ["crlf"], "error": "line_too_long"}
    records = handler.run_inference(lines, model)
    assert records == with_reject[:2] + with_reject[3:]
    single = [handler.run_inference([line], model)[0] for line in lines]
    assert [r["next"] for r in records] == [r["next"] for r in single]
    assert [r.get("log_prob", 0.0) for r in records] == pytest.approx([r.get("log_prob", 0.0) for r in single])
    assert sum("log_prob" in r for r in records) == 5  # the one-word line has nothing to score
    assert [r["words"] for r in records] == sizes and all(r["flags"][0] == "crlf" for r in records)


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
