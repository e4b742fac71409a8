"""A stage deletes only what it wrote, never through a link, and commits only a job that succeeded.

Issue 15's data-loss cases (items 1, 3, 4, 5, 11), each with a victim directory
outside the output that must come through byte-identical, on the real local
Beam runner and real files (and the Cloud Storage emulator for gs://).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from batch_predict import __main__ as predict_main
from batch_predict import core as predict_core
from batch_predict import pipeline as predict_pipeline
from batch_predict import resume
from beam_preprocess import __main__ as preprocess_main
from nextword import storage
from nextword.artifacts import bundle as bundle_lib
from nextword.artifacts.predictions import Summary
from nextword.text import contract
from tests.support.predict import chain_words, job_config, predict_argv, read_records


def snapshot(root: Path) -> dict[str, object]:
    """Every entry under `root` without following links: file bytes, a link's target, or "dir"."""
    entries: dict[str, object] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                entries[rel] = f"link -> {os.readlink(path)}"
            elif path.is_dir():
                entries[rel] = "dir"
            else:
                entries[rel] = path.read_bytes()
    return entries


@pytest.fixture
def victim(tmp_path) -> Path:
    """A directory outside every output, holding files named like every stage's own."""
    root = tmp_path / "victim"
    files = {
        "notes.txt": "precious\n",
        "sub/deeper/data.bin": b"\x00\x01\x02",
        "windows-00000-of-00002.tfrecord.gz": b"\x1f\x8b someone else's shard",
        f"train-00000-{uuid.uuid4().hex}.tfrecord": b"someone else's part",
        "predictions-00000-of-00001.jsonl": '{"not": "ours"}\n',
        "saved_model.pb": b"another model",
    }
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def nextword_summary(output_shards: list[str]) -> dict:
    """A summary.json as nextword writes it (only such a summary's list is deleted), listing `output_shards`."""
    figures = ("files", "bytes", "input_lines", "output_records", "scored_tokens", "unknown_scored_tokens",
               "seconds", "ranges", "resumed_ranges", "resumed_lines")  # fmt: skip
    return Summary(input_glob="in/*", bundle_dir="bundle", fingerprint="0" * 16, model_fingerprint="1" * 16,
                   mode="next", context="line", complete=True, rejects_by_reason={}, flags={}, perplexity=None,
                   known_perplexity=None, lines_per_second=None, output_shards=output_shards,
                   **dict.fromkeys(figures, 0)).to_dict()  # fmt: skip


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


# --- the shared routine -------------------------------------------------------
@pytest.mark.unit
def test_remove_tree_never_follows_a_link(tmp_path, victim):
    before = snapshot(victim)
    tree = tmp_path / "ckpt-3_temp"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "part-00000").write_bytes(b"x")
    (tree / "dir_link").symlink_to(victim)
    (tree / "file_link").symlink_to(victim / "notes.txt")
    storage.remove_tree(str(tree))
    assert not os.path.lexists(tree) and snapshot(victim) == before

    link = tmp_path / "ckpt-4_temp"  # the temp directory itself a link: the link goes, not its target
    link.symlink_to(victim)
    storage.remove_tree(str(link))
    storage.remove_tree(str(tmp_path / "never-there"))
    assert not os.path.lexists(link) and snapshot(victim) == before


def test_clearing_on_gcs_deletes_only_owned_and_listed_objects(gcs_bucket, tmp_path):
    out, hexname = f"{gcs_bucket}/out", uuid.uuid4().hex
    ours = [f"{out}/predictions-00000-of-00002.jsonl", f"{out}/odd-listed.jsonl",
            f"{out}/beam-temp-predictions-{hexname}/{uuid.uuid4().hex}", f"{out}/summary.json"]  # fmt: skip
    theirs = [f"{out}/predictions_notes.txt", f"{out}/sub/predictions-00000-of-00001.jsonl",
              f"{out}/beam-temp-predictions-notes/a", f"{gcs_bucket}/victim/x", f"{gcs_bucket}/out2/y"]  # fmt: skip
    for path in ours[:-1] + theirs:
        storage.write_text(path, "data\n")
    storage.write_marker(f"{out}/summary.json", nextword_summary(["odd-listed.jsonl", "../victim/x", "/abs"]))
    resume.clear(out, [])
    assert [path for path, _ in storage.match(f"{gcs_bucket}/**")] == sorted(theirs)

    tree = f"{gcs_bucket}/ckpt-1_temp"
    for rel in ("a", "b/c"):
        storage.write_text(f"{tree}/{rel}", "x")
    storage.write_text(f"{gcs_bucket}/ckpt-1_temp2/keep", "x")
    storage.remove_tree(tree)
    assert not storage.match(f"{tree}/**") and storage.exists(f"{gcs_bucket}/ckpt-1_temp2/keep")

    # The bundle's checksum: Cloud Storage's own CRC32C of an object equals the one computed locally.
    (tmp_path / "local.bin").write_bytes(b"\x00variables" * 1000)
    storage.write_text(f"{gcs_bucket}/remote.bin", "\x00variables" * 1000)
    assert storage.crc32c(f"{gcs_bucket}/remote.bin") == storage.crc32c(str(tmp_path / "local.bin"))


# --- item 1: preprocessing's clearing never follows a link out of output_dir ------
def _preprocess_argv(corpus: Path, out: Path) -> list[str]:
    settings = [f"preprocess.corpus_glob={corpus}/**/*.txt", f"preprocess.output_dir={out}",
                "preprocess.num_shards=2", "preprocess.text.min_count=0"]  # fmt: skip
    return [arg for item in settings for arg in ("--set", item)]


@pytest.mark.beam
def test_preprocess_refuses_a_symlinked_parts_or_split_folder_and_the_victim_survives(
    write_files, tmp_path, victim, capsys
):
    corpus = write_files({f"c/{i}.txt": f"tok{i} the cat sat on the mat again\n" * 40 for i in range(3)})
    out = tmp_path / "out"
    argv = _preprocess_argv(corpus, out)
    assert preprocess_main.main(argv) == 0
    capsys.readouterr()
    before = snapshot(victim)

    (out / "_parts").symlink_to(victim)
    output = snapshot(out)
    assert preprocess_main.main(argv) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}/_parts: a symbolic link where this stage deletes")
    assert snapshot(victim) == before and snapshot(out) == output  # refused before anything was cleared
    (out / "_parts").unlink()

    shutil.rmtree(out / "train")
    (out / "train").symlink_to(victim)
    assert preprocess_main.main(argv) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}/train: a symbolic link"), lines
    assert snapshot(victim) == before and (out / contract.MANIFEST_FILE).exists()

    (out / "train").unlink()
    assert preprocess_main.main(argv) == 0
    manifest = json.loads((out / contract.MANIFEST_FILE).read_text())
    assert all((out / shard).is_file() for split in contract.SPLITS for shard in manifest["shards"][split])
    assert not (out / "_parts").exists() and snapshot(victim) == before


# --- item 3: batch prediction deletes only its own shards ---------------------------
@pytest.mark.beam
def test_predict_deletes_only_its_own_shards_never_notes_or_its_input(tiny_bundle, tmp_path, victim, capsys):
    out = tmp_path / "out"
    out.mkdir()
    notes, own_input = out / "predictions_notes.txt", out / "predictions-input.txt"
    notes.write_text("my notes about the predictions\n")
    own_input.write_text("\n".join(chain_words(tiny_bundle, i, 6) for i in range(12)) + "\n")
    argv = predict_argv(job_config(tiny_bundle, tmp_path, str(own_input), "predict.mode=next"))
    kept = {notes.name: notes.read_bytes(), own_input.name: own_input.read_bytes()}
    predict_pipeline.run(argv)
    stale = out / "predictions-00003-of-00004.jsonl"  # an earlier run's shard, with another shard count
    stale.write_text("{}\n")
    for _ in range(2):  # the second run clears the first run's output
        summary = predict_pipeline.run(argv)
        assert summary["input_lines"] == summary["output_records"] == len(read_records(out)) == 12
        assert {name: (out / name).read_bytes() for name in kept} == kept and not stale.exists()
    assert sorted(p.name for p in out.glob("predictions-*.jsonl")) == summary["output_shards"]
    before = snapshot(victim)

    # An input glob that catches the job's own output: refused, nothing cleared.
    output = snapshot(out)
    assert predict_main.main(argv + ["--set", f"predict.input_glob={out}/*"]) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and "an input of this job is also output it replaces" in lines[0], lines
    assert snapshot(out) == output

    # A shard name that is a link to someone else's file: refused, the target untouched.
    shard = out / summary["output_shards"][0]
    shard.unlink()
    shard.symlink_to(victim / "predictions-00000-of-00001.jsonl")
    assert predict_main.main(argv) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: {shard}: a symbolic link"), lines
    assert snapshot(victim) == before and {name: (out / name).read_bytes() for name in kept} == kept


# --- item 4: a broken bundle is refused before anything is cleared ------------------
def _broken_bundles(tiny_bundle, root: Path) -> dict[str, tuple[Path, str]]:
    """Copies of the bundle, each broken one way, with the start of the one line that refuses it."""
    cases = {}
    for name in ("no_variables", "short_saved_model", "short_variables", "no_checksums"):
        path = root / name
        shutil.copytree(tiny_bundle.bundle_dir, path)
        cases[name] = path
    shutil.rmtree(cases["no_variables"] / "variables")
    for file in (cases["short_saved_model"] / "saved_model.pb",
                 next((cases["short_variables"] / "variables").glob("variables.data-*"))):  # fmt: skip
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    info_path = cases["no_checksums"] / "nextword" / "bundle.json"
    info = json.loads(info_path.read_text())
    del info["checksums"]  # as an export before checksums wrote it
    info_path.write_text(json.dumps(info))
    data = next((cases["short_variables"] / "variables").glob("variables.data-*"))
    return {
        "no_variables": (cases["no_variables"], f"{cases['no_variables']}: not a nextword bundle: missing "
                         "variables/variables.index; point predict.bundle_dir at the bundle"),
        "short_saved_model": (cases["short_saved_model"], f"{cases['short_saved_model']}/saved_model.pb: checksum "
                              "mismatch"),
        "short_variables": (cases["short_variables"], f"{data}: checksum mismatch"),
        "no_checksums": (cases["no_checksums"], f"{info_path}: no checksums of saved_model.pb and variables/"),
    }  # fmt: skip


@pytest.mark.beam
def test_broken_bundle_is_refused_in_one_line_before_the_previous_output_is_cleared(
    tiny_bundle, tmp_path, victim, capsys
):
    (tmp_path / "in.txt").write_text("\n".join(chain_words(tiny_bundle, i, 6) for i in range(8)) + "\n")
    argv = predict_argv(job_config(tiny_bundle, tmp_path, str(tmp_path / "in.txt"), "predict.mode=next"))
    assert predict_main.main(argv) == 0
    capsys.readouterr()
    good, before = snapshot(tmp_path / "out"), snapshot(victim)
    for name, (path, message) in _broken_bundles(tiny_bundle, tmp_path / "broken").items():
        with pytest.raises((OSError, ValueError)):
            bundle_lib.load_bundle(str(path))
        assert predict_main.main(argv + ["--set", f"predict.bundle_dir={path}"]) == 1, name
        lines = error_lines(capsys)
        assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), (name, lines)
        assert snapshot(tmp_path / "out") == good and snapshot(victim) == before, name
    assert bundle_lib.load_bundle(tiny_bundle.bundle_dir).info.checksums.keys() == {
        "saved_model.pb", "variables/variables.index", "variables/variables.data-00000-of-00001",
    }  # fmt: skip


@pytest.mark.beam
def test_unreadable_input_is_refused_before_the_previous_output_is_cleared(
    tiny_bundle, gcs_bucket, gcs_emulator, tmp_path, capsys
):
    for name in ("a", "b"):
        storage.write_text(f"{gcs_bucket}/in/{name}.txt", chain_words(tiny_bundle, 0, 7) + "\n")
    argv = predict_argv(job_config(tiny_bundle, tmp_path, f"{gcs_bucket}/in/*.txt", "predict.mode=next"))
    assert predict_main.main(argv) == 0
    capsys.readouterr()
    good = snapshot(tmp_path / "out")
    gcs_emulator.proxy.fail(("GET", "^/download/.*/o/in/b.txt", 403, None))  # listed, but not readable
    assert predict_main.main(argv) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: {gcs_bucket}/in/b.txt: permission denied to read")
    assert snapshot(tmp_path / "out") == good


# --- item 5: summary.json only for a job that succeeded -----------------------------
@pytest.mark.beam
def test_summary_is_written_only_for_a_complete_job(tiny_bundle, tmp_path, monkeypatch, capsys):
    source = tmp_path / "in.txt"
    text = "\n".join(chain_words(tiny_bundle, i % 10, 6) for i in range(40)) + "\n"
    source.write_text(text)
    argv = predict_argv(job_config(tiny_bundle, tmp_path, str(source), "predict.mode=next"))
    summary_path = tmp_path / "out" / predict_pipeline.SUMMARY_FILE
    assert predict_main.main(argv) == 0 and json.loads(summary_path.read_text())["complete"]

    count_line_starts = predict_core.count_line_starts

    def count_then_truncate(stream, file_range, *args):
        """The input is cut in half once its lines are counted: a file changing under a running job."""
        count = count_line_starts(stream, file_range, *args)
        os.truncate(file_range.path, file_range.size // 2)
        return count

    monkeypatch.setattr(predict_core, "count_line_starts", count_then_truncate)
    capsys.readouterr()
    assert predict_main.main(argv) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: {source}: 40 lines counted in bytes 0-"), lines
    assert "20 read (the file changed while the job ran), so that range was not committed" in lines[0]
    assert not summary_path.exists() and not list(summary_path.parent.glob("summary.json*"))

    monkeypatch.undo()
    source.write_text(text)
    assert predict_main.main(argv) == 0 and json.loads(summary_path.read_text())["output_records"] == 40


@pytest.mark.unit
def test_commit_marker_is_atomic(tmp_path, monkeypatch):
    marker = tmp_path / "manifest.json"
    storage.write_marker(str(marker), {"run": 1})

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        storage.write_marker(str(marker), {"run": 2})
    assert json.loads(marker.read_text()) == {"run": 1} and os.listdir(tmp_path) == ["manifest.json"]


# --- item 11: a successful rerun removes a failed run's leftovers --------------------
@pytest.mark.beam
def test_rerun_removes_beam_temp_and_saved_model_tmp_leftovers(tiny_bundle, tmp_path, victim):
    from trainer.export import export_bundle

    before = snapshot(victim)
    (tmp_path / "in.txt").write_text("\n".join(chain_words(tiny_bundle, i, 6) for i in range(8)) + "\n")
    out = tmp_path / "out"
    argv = predict_argv(job_config(tiny_bundle, tmp_path, str(tmp_path / "in.txt"), "predict.mode=next"))
    predict_pipeline.run(argv)  # the folder is nextword's: the leftovers below are a failed run's
    beam_temp = out / f"beam-temp-predictions-{uuid.uuid1().hex}"
    (beam_temp / "nested").mkdir(parents=True)
    (beam_temp / uuid.uuid4().hex).write_text("{}\n")
    (beam_temp / "link_to_victim").symlink_to(victim)  # inside a leftover the stage owns: unlinked, not followed
    summary_tmp = out / f"summary.json.tmp-{uuid.uuid4().hex}"
    summary_tmp.write_text("{")
    near_misses = [out / "beam-temp-predictions-notes.txt", out / "summary.json.tmp-mine"]
    for path in near_misses:
        path.write_text("the user's\n")
    predict_pipeline.run(argv)
    assert not beam_temp.exists() and not summary_tmp.exists() and all(p.exists() for p in near_misses)

    bundle_dir = tmp_path / "bundle"
    export_bundle(tiny_bundle.model, tiny_bundle.data_dir, tiny_bundle.config, str(bundle_dir))
    (bundle_dir / "nextword" / "bundle.json").unlink()  # an export killed midway leaves no marker
    leftovers = [bundle_dir / f"saved_model.pb.tmp{uuid.uuid4().hex}",
                 bundle_dir / f"fingerprint.pb.tmp{uuid.uuid4().hex}",
                 bundle_dir / "variables" / "variables_temp" / "part-00000-of-00001.data-00000-of-00001",
                 bundle_dir / "nextword" / f"bundle.json.tmp-{uuid.uuid4().hex}"]  # fmt: skip
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
    mine = bundle_dir / "saved_model.pb.tmp-notes"
    mine.write_text("the user's\n")
    export_bundle(tiny_bundle.model, tiny_bundle.data_dir, tiny_bundle.config, str(bundle_dir))
    assert not any(os.path.lexists(p) for p in leftovers) and not (bundle_dir / "variables" / "variables_temp").exists()
    assert mine.exists() and bundle_lib.load_bundle(str(bundle_dir)).info.checksums
    assert snapshot(victim) == before
