"""Issue 34: an output is never written through a link, a folder or marker is trusted only if nextword wrote
it, a killed prediction job resumes only on the same bytes, and only regular files are opened.

Each test places a victim outside the output (a file reached through a symbolic or a hard link, a file a
foreign marker lists, a FIFO) and checks it comes through unchanged, on real files and the local runner.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from batch_predict import __main__ as predict_main
from batch_predict import pipeline as predict_pipeline
from batch_predict import resume
from beam_preprocess import __main__ as preprocess_main
from beam_preprocess import pipeline as preprocess_pipeline
from nextword import cli, storage
from nextword.text import contract
from tests.support import trainer as trainer_support
from tests.support.predict import chain_words, job_config, predict_argv, read_records

NOT_OURS = "not written by nextword: choose an empty"


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


def link_every_file(out: Path, rels: list[str], victims: Path, kind: str) -> dict[str, tuple[bytes, int]]:
    """Replaces each output file `rel` by a `kind` ("hard" or "symbolic") link to a victim file outside `out`
    holding the same bytes; returns the victims' bytes and modification times, which a rerun must leave as
    they are (a write through the link changes the time even where it writes the same bytes)."""
    victims.mkdir(exist_ok=True)
    before = {}
    for i, rel in enumerate(rels):
        target, victim = out / rel, victims / f"{kind}-{i}-{Path(rel).name}"
        shutil.copyfile(target, victim)
        target.unlink()
        os.link(victim, target) if kind == "hard" else target.symlink_to(victim)
        os.utime(victim, ns=(0, 0))  # a time no write now can give it
        before[str(victim)] = (victim.read_bytes(), 0)
    return before


def unchanged(before: dict[str, tuple[bytes, int]]) -> bool:
    return {path: (Path(path).read_bytes(), os.stat(path).st_mtime_ns) for path in before} == before


# --- item 1: a new file renamed over the target -------------------------------------------------------
@pytest.mark.unit
def test_atomic_write_replaces_a_symlink_and_breaks_a_hard_link(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a").write_text("victim a\n")
    (outside / "b").write_text("victim b\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sym.json").symlink_to(outside / "a")
    os.link(outside / "b", out / "hard.json")
    for name in ("sym.json", "hard.json"):
        storage.write_text(str(out / name), "ours\n")
        assert not (out / name).is_symlink() and (out / name).read_text() == "ours\n"
    assert (outside / "a").read_text() == "victim a\n" and (outside / "b").read_text() == "victim b\n"


def _preprocess_argv(corpus: Path, out: Path) -> list[str]:
    settings = [f"preprocess.corpus_glob={corpus}/**/*.txt", f"preprocess.output_dir={out}",
                "preprocess.num_shards=2", "preprocess.text.min_count=0"]  # fmt: skip
    return [arg for item in settings for arg in ("--set", item)]


@pytest.mark.beam
def test_preprocess_writes_no_output_through_a_link(write_files, tmp_path, capsys):
    corpus = write_files({f"c/{i}.txt": f"tok{i} the cat sat on the mat again\n" * 40 for i in range(3)})
    out = tmp_path / "out"
    argv = _preprocess_argv(corpus, out)
    assert preprocess_main.main(argv) == 0
    manifest = json.loads((out / contract.MANIFEST_FILE).read_text())
    written = [contract.VOCAB_FILE, contract.VOCAB_COUNTS_FILE, contract.CONFIG_FILE]
    shards = [shard for split in contract.SPLITS for shard in manifest["shards"][split]]
    before = link_every_file(out, [*written, contract.MANIFEST_FILE, *shards], tmp_path / "victims", "hard")
    assert preprocess_main.main(argv) == 0 and unchanged(before)
    assert all((out / rel).stat().st_nlink == 1 for rel in [*written, contract.MANIFEST_FILE, *shards])

    # Files it only overwrites: the links are replaced. Files it deletes first: refused, nothing touched.
    before = link_every_file(out, written, tmp_path / "victims", "symbolic")
    assert preprocess_main.main(argv) == 0 and unchanged(before)
    assert not any((out / rel).is_symlink() for rel in written)
    before = link_every_file(out, [contract.MANIFEST_FILE], tmp_path / "victims", "symbolic")
    capsys.readouterr()
    assert preprocess_main.main(argv) == 1 and unchanged(before)
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: {out / contract.MANIFEST_FILE}: a symbolic link"), lines


@pytest.mark.beam
def test_predict_writes_no_output_through_a_link(tiny_bundle, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("\n".join(chain_words(tiny_bundle, i, 6) for i in range(12)) + "\n")
    out = tmp_path / "out"
    argv = predict_argv(job_config(tiny_bundle, tmp_path, str(tmp_path / "in.txt"), "predict.mode=next"))
    summary = predict_pipeline.run(argv)
    rels = [predict_pipeline.SUMMARY_FILE, resume.JOB_FILE, *summary["output_shards"]]
    rels += [resume.marker_name(i, summary["ranges"]) for i in range(summary["ranges"])]
    before = link_every_file(out, rels, tmp_path / "victims", "hard")
    assert predict_pipeline.run(argv)["output_records"] == 12 and unchanged(before)
    assert all((out / rel).stat().st_nlink == 1 for rel in rels)

    before = link_every_file(out, [predict_pipeline.SUMMARY_FILE], tmp_path / "victims", "symbolic")
    capsys.readouterr()
    assert predict_main.main(argv) == 1 and unchanged(before)
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: {out / predict_pipeline.SUMMARY_FILE}: a symbolic link")


@pytest.mark.train
def test_training_writes_no_output_through_a_link(synthetic, tmp_path):
    from trainer.main import run

    model_dir = tmp_path / "model"
    run(trainer_support.train_args(synthetic, model_dir, "train.max_steps=2"))
    bundle = ["bundle/saved_model.pb", "bundle/fingerprint.pb", "bundle/variables/variables.index",
              "bundle/variables/variables.data-00000-of-00001"]  # fmt: skip
    bundle += [f"bundle/nextword/{name}" for name in ("bundle.json", "vocab.txt", "manifest.json", "config.yaml")]
    written = ["config.yaml", "metrics.json", "history.json", "curves.png", "checkpoints/checkpoint", "best/checkpoint"]
    before = link_every_file(model_dir, [*written, *bundle], tmp_path / "victims", "hard")
    # TensorFlow's checkpoint files of the step the rerun saves (4), planted before it writes them.
    planted = {"checkpoints/ckpt-4.index": "symbolic", "checkpoints/ckpt-4.data-00000-of-00001": "hard",
               "best/ckpt-4.index": "hard", "best/ckpt-4.data-00000-of-00001": "symbolic"}  # fmt: skip
    for rel, kind in planted.items():
        (model_dir / rel).write_bytes(b"victim\n")
        before |= link_every_file(model_dir, [rel], tmp_path / "victims", kind)
    # Symbolic links on the files it overwrites (the bundle's marker and SavedModel files it deletes first,
    # where a link is refused: tests/test_data_loss.py).
    overwritten = [*written, *(f"bundle/nextword/{name}" for name in ("vocab.txt", "manifest.json", "config.yaml"))]
    before |= link_every_file(model_dir, overwritten, tmp_path / "victims", "symbolic")
    metrics = run(trainer_support.train_args(synthetic, model_dir, "train.max_steps=4"))
    assert metrics["train"]["resumed_from_step"] == 2 and unchanged(before)
    assert not any((model_dir / rel).is_symlink() for rel in overwritten)
    assert all((model_dir / rel).stat().st_nlink == 1 for rel in [*written, *bundle, *planted])
    assert not any((model_dir / rel).is_symlink() for rel in planted)


@pytest.mark.unit
def test_cloud_render_writes_no_file_through_a_link(tmp_path, capsys):
    config = str(Path(__file__).resolve().parents[1] / "configs" / "cloud.yaml")
    out = tmp_path / "build"
    assert cli.main(["cloud", "render", "--config", config, "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    before = link_every_file(out, names[: len(names) // 2], tmp_path / "victims", "symbolic")
    before |= link_every_file(out, names[len(names) // 2 :], tmp_path / "victims", "hard")
    assert cli.main(["cloud", "render", "--config", config, "--out", str(out)]) == 0 and unchanged(before)
    assert all(not (out / name).is_symlink() and (out / name).stat().st_nlink == 1 for name in names)


# --- item 2: a marker, a folder, a containment check trusted only as nextword wrote it -----------------
@pytest.mark.unit
def test_a_foreign_marker_lists_nothing_to_delete(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("a user's file\n")
    (out / contract.VOCAB_FILE).write_text("<???>\nthe\n")
    foreign = {"format_version": 1, "shards": {"train": ["precious.txt"]}}  # the right key, not a Manifest
    (out / contract.MANIFEST_FILE).write_text(json.dumps(foreign))
    trust = preprocess_pipeline._ours(str(out))
    storage.clear_owned(str(out), [], marker=contract.MANIFEST_FILE, listed_key="shards", trust=trust)
    assert (out / "precious.txt").read_text() == "a user's file\n"
    summary = {"output_shards": ["precious.txt"], "format_version": 1}
    (out / predict_pipeline.SUMMARY_FILE).write_text(json.dumps(summary))
    resume.clear(str(out), [])
    assert (out / "precious.txt").read_text() == "a user's file\n"


@pytest.mark.unit
def test_an_earlier_nextword_output_is_adopted_and_a_forged_mark_is_refused(tmp_path):
    def trust(marker: dict) -> bool:
        return marker.get("format_version") == 1

    old = tmp_path / "old"  # output of a nextword from before the mark: its marker is one nextword wrote
    old.mkdir()
    (old / "marker.json").write_text(json.dumps({"format_version": 1}))
    (old / "vocab.txt").write_text("the\n")
    storage.claim(str(old), "stage", names=["vocab.txt"], marker="marker.json", trust=trust)
    assert json.loads((old / storage.OWNER_FILE).read_text())["stage"] == "stage"
    storage.claim(str(old), "stage", names=["vocab.txt"], marker="marker.json", trust=trust)  # marked: at once

    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / storage.OWNER_FILE).write_text('{"stage": "stage"}')  # not nextword's type and format_version
    with pytest.raises(ValueError, match=f"^{forged / storage.OWNER_FILE}: {NOT_OURS} output_dir or remove it$"):
        storage.claim(str(forged), "stage")
    with pytest.raises(ValueError, match="holds the output of nextword stage; choose another output_dir$"):
        storage.claim(str(old), "another")
    newer = json.loads((old / storage.OWNER_FILE).read_text()) | {"format_version": 2}
    (old / storage.OWNER_FILE).write_text(json.dumps(newer))
    with pytest.raises(ValueError, match="format_version 2, this nextword writes 1: choose another output_dir"):
        storage.claim(str(old), "stage")


@pytest.mark.beam
def test_files_nextword_did_not_write_stop_the_run_in_one_line(write_files, tiny_bundle, tmp_path, capsys):
    corpus = write_files({"c/a.txt": "the cat sat on the mat\n" * 40})
    cases = {
        "config": (contract.CONFIG_FILE, "my: own config\n"),
        "vocab": (contract.VOCAB_FILE, "my word list\n"),
        "manifest": (contract.MANIFEST_FILE, json.dumps({"shards": {"train": ["../precious.txt"]}})),
        "shard": ("train/windows-00000-of-00002.tfrecord.gz", "not ours"),
    }
    for name, (rel, text) in cases.items():
        out = tmp_path / f"out-{name}"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
        assert preprocess_main.main(_preprocess_argv(corpus, out)) == 1
        assert error_lines(capsys) == [f"error: {out / rel}: {NOT_OURS} preprocess.output_dir or remove it"], name
        assert (out / rel).read_text() == text and sorted(p.name for p in out.iterdir()) == [rel.split("/")[0]]

    # A summary.json of someone else's, listing a file of theirs: the job stops, the file stays.
    (tmp_path / "in.txt").write_text(chain_words(tiny_bundle, 0, 6) + "\n")
    argv = predict_argv(job_config(tiny_bundle, tmp_path, str(tmp_path / "in.txt"), "predict.mode=next"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "theirs.jsonl").write_text("{}\n")
    (out / predict_pipeline.SUMMARY_FILE).write_text(json.dumps({"output_shards": ["theirs.jsonl"]}))
    assert predict_main.main(argv) == 1
    summary = out / predict_pipeline.SUMMARY_FILE
    assert error_lines(capsys) == [f"error: {summary}: {NOT_OURS} predict.output_dir or remove it"]
    assert (out / "theirs.jsonl").exists() and summary.exists()

    # A folder of another stage's: refused, not mixed.
    data = tmp_path / "out-data"
    assert preprocess_main.main(_preprocess_argv(corpus, data)) == 0
    capsys.readouterr()
    assert predict_main.main(argv + ["--set", f"predict.output_dir={data}"]) == 1
    assert error_lines(capsys) == [
        f"error: predict.output_dir: {data} holds the output of nextword preprocess; choose another predict.output_dir"
    ]


@pytest.mark.train
def test_model_dir_in_data_dir_is_refused_whatever_its_spelling(synthetic, tmp_path, capsys):
    link = tmp_path / "data-link"
    link.symlink_to(synthetic)
    data_config = (synthetic / contract.CONFIG_FILE).read_bytes()
    for model_dir in (synthetic, synthetic / "model", link, link / "model"):
        argv = ["train", *trainer_support.train_args(synthetic, model_dir, "train.max_steps=1")]
        assert cli.main(argv) == 1
        (line,) = error_lines(capsys)
        assert line.startswith(f"error: train.model_dir: {model_dir} is") and "train.data_dir" in line, line
        assert not (synthetic / "model").exists() and (synthetic / contract.CONFIG_FILE).read_bytes() == data_config

    # A model_dir holding someone's metrics.json (or any of the trainer's names) is not trained into.
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "metrics.json").write_text('{"mine": true}\n')
    assert cli.main(["train", *trainer_support.train_args(synthetic, model_dir, "train.max_steps=1")]) == 1
    assert error_lines(capsys) == [f"error: {model_dir / 'metrics.json'}: {NOT_OURS} train.model_dir or remove it"]
    assert (model_dir / "metrics.json").read_text() == '{"mine": true}\n'


@pytest.mark.beam
def test_containment_is_checked_on_files_not_spellings(write_files, tiny_bundle, tmp_path, capsys):
    # The output folder inside the corpus, named through a link: a rerun would read its own vocab.txt.
    corpus = write_files({"c/a.txt": "the cat sat on the mat\n" * 40})
    (tmp_path / "corpus-link").symlink_to(corpus / "c")
    out = tmp_path / "corpus-link" / "out"
    assert preprocess_main.main(_preprocess_argv(corpus / "c", out)) == 1
    (line,) = error_lines(capsys)
    assert line.startswith(f"error: preprocess.output_dir: {out} is inside the corpus"), line
    assert not (corpus / "c" / "out").exists()

    # A prediction input named through a link to the output folder, with a name the job deletes.
    real_out = tmp_path / "out"
    (tmp_path / "in.txt").write_text(chain_words(tiny_bundle, 0, 6) + "\n")
    argv = predict_argv(job_config(tiny_bundle, tmp_path, str(tmp_path / "in.txt"), "predict.mode=next"))
    summary = predict_pipeline.run(argv)
    (tmp_path / "out-link").symlink_to(real_out)
    own_output = tmp_path / "out-link" / summary["output_shards"][0]
    content = own_output.read_bytes()
    assert predict_main.main(argv + ["--set", f"predict.input_glob={own_output}"]) == 1
    (line,) = error_lines(capsys)
    assert line.startswith(f"error: {own_output}: an input of this job is also output it replaces"), line
    assert own_output.read_bytes() == content

    # The output inside the bundle it reads, through a link's spelling.
    (tmp_path / "bundle-link").symlink_to(tiny_bundle.bundle_dir)
    inside = tmp_path / "bundle-link" / "predictions"
    assert predict_main.main(argv + ["--set", f"predict.output_dir={inside}"]) == 1
    assert error_lines(capsys) == [f"error: predict.output_dir: {inside} is in predict.bundle_dir "
                                   f"{tiny_bundle.bundle_dir}; choose an output_dir outside the bundle"]  # fmt: skip
    assert not os.path.exists(inside)


# --- item 3: resume only on the same bytes ------------------------------------------------------------
KILLED_PREDICT = """
import sys
from tests.support.trainer import arm_kill
arm_kill("batch_predict.resume:commit_marker@2:after")
from batch_predict.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.e2e
def test_a_killed_job_rerun_on_an_input_edited_to_the_same_size_scores_the_new_bytes(tiny_bundle, tmp_path, caplog):
    source = tmp_path / "in.txt"
    lines = [chain_words(tiny_bundle, i % 10, 5 + i % 20) for i in range(5000)]
    source.write_text("\n".join(lines) + "\n")
    argv = predict_argv(job_config(tiny_bundle, tmp_path, str(source), "predict.mode=next",
                                   "predict.split_bytes=100000"))  # fmt: skip
    killed = subprocess.run([sys.executable, "-c", KILLED_PREDICT, *argv], capture_output=True, text=True,
                            env=trainer_support.child_env(), timeout=300)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    out = tmp_path / "out"
    assert len(list((out / resume.RANGES_DIR).glob("*-of-*.json"))) == 2  # two ranges of the old bytes committed

    size = source.stat().st_size
    source.write_text("\n".join(" ".join(reversed(line.split())) for line in lines) + "\n")  # other words
    assert source.stat().st_size == size
    caplog.set_level("INFO")
    summary = predict_pipeline.run(argv)
    assert summary["resumed_ranges"] == 0 and f"{source} changed (other bytes, same size)" in caplog.text

    fresh = tmp_path / "fresh"
    predict_pipeline.run(argv + ["--set", f"predict.output_dir={fresh}"])
    assert sorted(read_records(out), key=lambda r: r["line"]) == sorted(read_records(fresh), key=lambda r: r["line"])


# --- item 7: only regular files are opened ------------------------------------------------------------
@pytest.mark.e2e
def test_a_fifo_as_prediction_input_or_config_is_refused_not_opened(tiny_bundle, tmp_path):
    fifo = tmp_path / "input.txt"
    os.mkfifo(fifo)  # opened, it would wait for a writer for ever
    config = tmp_path / "config.yaml"
    os.mkfifo(config)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.txt"))
    argv = predict_argv(job_config(tiny_bundle, tmp_path, str(fifo), "predict.mode=next"))
    commands = {
        str(fifo): ["predict", *argv],
        str(tmp_path / "sock.txt"): ["predict", *argv, "--set", f"predict.input_glob={tmp_path}/sock.txt"],
        str(config): ["preprocess", "--config", str(config)],
    }
    try:
        for path, command in commands.items():
            done = subprocess.run([sys.executable, "-m", "nextword.cli", *command], capture_output=True, text=True,
                                  env=trainer_support.child_env(), timeout=120)  # fmt: skip
            assert done.returncode == 1, done.stderr[-2000:]
            (line,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
            assert line.startswith(f"error: {path}: a ") and "not a regular file" in line, line
    finally:
        sock.close()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.beam
def test_a_dangling_link_among_the_prediction_inputs_is_one_line(tiny_bundle, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text(chain_words(tiny_bundle, 0, 6) + "\n")
    (tmp_path / "in" / "b.txt").symlink_to(tmp_path / "moved-away.txt")
    argv = predict_argv(job_config(tiny_bundle, tmp_path, f"{tmp_path}/in/*.txt", "predict.mode=next"))
    assert predict_main.main(argv) == 1
    assert error_lines(capsys) == [f"error: predict.input_glob: {tmp_path}/in/b.txt: a symbolic link to nothing; "
                                   "remove it or restore its target"]  # fmt: skip
    assert not (tmp_path / "out").exists()
