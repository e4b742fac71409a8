"""The preprocessing pipeline on the real local Beam runner: transforms, end to end, bad input."""

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections import Counter

import pytest
import yaml
from apache_beam.testing.util import assert_that, equal_to

from beam_preprocess import core, pipeline
from beam_preprocess.transforms import CountVocabulary
from nextword import config as config_lib
from nextword.text import contract
from tests.support.beam import local_test_pipeline
from tests.support.preprocess import read_windows

pytestmark = pytest.mark.beam

TINY = {
    "docs/a.txt": "the cat sat. the cat ran.\nthe dog sat!\n",
    "docs/b.txt": "The dog ran; the cat sat.\n",
}


def test_count_vocabulary_transform(write_files):
    import apache_beam as beam

    root = write_files(TINY)
    cfg = config_lib.from_dict(None, ["preprocess.text.min_count=2", "preprocess.split.valid_fraction=0",
                                      "preprocess.split.test_fraction=0"]).preprocess  # fmt: skip
    files = [core.CorpusFile(str(root / rel), rel) for rel in TINY]
    with local_test_pipeline() as p:
        vocab, _ = p | beam.Create(files) | CountVocabulary(cfg, "glob")
        # counts: the 5, cat 3, sat 3, dog 2, ran 2 -> kept iff > 2
        assert_that(vocab, equal_to([["<???>", "the", "cat", "sat"]]))


def _run(root, out, *overrides, beam_args=()):
    argv = [
        "--set", f"preprocess.corpus_glob={root}/**/*.txt",
        "--set", f"preprocess.output_dir={out}",
        *[arg for item in overrides for arg in ("--set", item)],
        *beam_args,
    ]  # fmt: skip
    return pipeline.run(argv)


def test_end_to_end_windows_decode_back_to_the_token_stream(write_files, tmp_path):
    text = " ".join(f"w{i % 7}" if i % 3 else "x" for i in range(300))
    root = write_files({"c/one.txt": "\n".join(text[i : i + 50] for i in range(0, len(text), 50))})
    out = tmp_path / "out"
    manifest = _run(
        root, out, "preprocess.window_length=4", "preprocess.stride=4", "preprocess.text.min_count=0",
        "preprocess.text.normalization=whitespace", "preprocess.split.valid_fraction=0",
        "preprocess.split.test_fraction=0", "preprocess.num_shards=1",
    )  # fmt: skip
    tokens = [t for line in (root / "c/one.txt").read_text().splitlines() for t in line.split()]
    vocab = contract.Vocabulary(contract.parse_vocab_text((out / "vocab.txt").read_text(), "vocab"))
    windows = read_windows(out, manifest, "train")
    # stride == window_length: consecutive records share one id; joined they are the stream.
    decoded = windows[0] + [i for w in windows[1:] for i in w[1:]]
    assert decoded[-1] == contract.PAD_ID  # the tail's window is filled with padding ...
    decoded = [i for i in decoded if i != contract.PAD_ID]
    assert [vocab.tokens[i] for i in decoded] == tokens  # ... so no token is left out
    assert manifest["counts"]["targets"]["train"] == len(tokens) - 1  # all but the first are predicted
    assert manifest["counts"]["tokens"]["train"] == len(tokens)
    assert manifest["fingerprint"] == contract.fingerprint(vocab.tokens, contract.TextSettings(
        normalization="whitespace", min_count=0))  # fmt: skip
    assert manifest["counts"]["windows"]["train"] == len(windows)
    # The job writes the resolved config beside the manifest (with the command line's settings).
    assert yaml.safe_load((out / "config.yaml").read_text())["preprocess"]["stride"] == 4


def _token_windows(out, manifest, split):
    vocab = contract.parse_vocab_text((out / "vocab.txt").read_text(), "vocab")
    vocab = {i: word for i, word in enumerate(vocab)} | {contract.PAD_ID: "<pad>"}
    return Counter(tuple(vocab[i] for i in window) for window in read_windows(out, manifest, split))


def test_hash_split_is_stable_when_a_file_is_added(write_files, tmp_path):
    settings = ["preprocess.split.block_lines=10", "preprocess.num_shards=1", "preprocess.text.min_count=0",
                "preprocess.text.normalization=whitespace"]  # fmt: skip
    root = write_files({"c/one.txt": "\n".join(f"a{i} b{i % 7} c{i % 3}" for i in range(400))})
    first = _run(root, tmp_path / "o1", *settings)
    write_files({"c/two.txt": "\n".join(f"z{i % 11} y{i}" for i in range(400))})
    second = _run(root, tmp_path / "o2", *settings)
    for split in contract.SPLITS:  # every window of one.txt keeps its split
        before = _token_windows(tmp_path / "o1", first, split)
        assert before and not before - _token_windows(tmp_path / "o2", second, split)


def test_bad_inputs_complete_and_are_counted(write_files, tmp_path):
    root = write_files({
        "c/latin1.txt": "caf\xe9 ole ole ole ole\n".encode("latin-1"),
        "c/bom.txt": "\ufeffole ole ole ole\r\nole\r\n".encode(),
        "c/empty.txt": b"",
        "c/blank.txt": b"   \n\t\n",
        "c/binary.txt": bytes(range(256)) * 40,
        # one 20 MB line: mostly digits (deleted by the seed normalization), a word every 11 kB
        "c/deep/er/long.txt": (("1234567890 " * 1000 + "ole ") * 1900).encode(),
        "c/word.txt": ("a" * 10_000 + " ole\n").encode(),
        "c/notes.md": b"ignored: not .txt",
        "c/odd.txt": "---- -- --- \u2014\nDON\u2019T Ole OLE\n",  # all-dash words, curly apostrophe, uppercase
        "c/late_nul.txt": "ole " * 2500 + "x\x00y\n",  # a NUL past the first 8000 bytes: read as text
    })  # fmt: skip
    os.mkfifo(root / "c" / "fifo.txt")  # opened, it would wait for a writer for ever
    (root / "c" / "device.txt").symlink_to("/dev/zero")  # opened, it would never end
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "c" / "socket.txt"))
    (root / "c" / "dangling.txt").symlink_to(root / "gone.txt")
    with contextlib.closing(sock):
        manifest = _run(root, tmp_path / "out", "preprocess.read_chunk_bytes=65536")
    counts = manifest["counts"]
    assert counts["files"] == 8 and counts["ignored_files"] == 1
    assert counts["empty_files"] == 2  # empty.txt and blank.txt
    assert counts["bom_files"] == 1 and counts["crlf_lines"] == 2
    assert counts["undecodable_lines"] >= 1  # the latin-1 line
    assert counts["bytes"] > 20_000_000 and counts["lines"] >= 1 + 2 + 1 + 2 + 1 + 1
    assert sum(counts["tokens"].values()) >= 1900 + 4 + 5 + 1 + 3
    # Binary (a NUL in the head), special and dangling entries are skipped, counted and named, never read.
    assert counts["binary_files"] == counts["dangling_links"] == counts["nul_files"] == 1
    assert counts["not_regular_files"] == 3
    assert manifest["skipped"] == {"binary": [str(root / "c" / "binary.txt")],
                                   "not_regular": [str(root / "c" / name) for name in
                                                   ("device.txt", "fifo.txt", "socket.txt")],
                                   "dangling_links": [str(root / "c" / "dangling.txt")]}  # fmt: skip
    vocab = (tmp_path / "out" / "vocab.txt").read_text().split()
    assert "ole" in vocab and not any(word.startswith("-") or word != word.lower() for word in vocab)
    assert not any("abcdefghijklmnopqrstuvwxyz" in word for word in vocab)  # the binary file's junk word
    assert (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.e2e
def test_glob_matching_nothing_and_no_tokens_are_one_line_errors(write_files, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    missing = subprocess.run(
        [sys.executable, "-m", "beam_preprocess", "--set", f"preprocess.corpus_glob={tmp_path}/none/*.txt"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == f"error: {tmp_path}/none/*.txt: the corpus glob matches no file"

    root = write_files({"c/digits.txt": "123 456 !!!\n"})
    empty = subprocess.run(
        [sys.executable, "-m", "beam_preprocess", "--set", f"preprocess.corpus_glob={root}/c/*.txt",
         "--set", f"preprocess.output_dir={tmp_path}/out"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert empty.returncode == 1
    last = empty.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {root}/c/*.txt: no token left in the training split")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_failed_rerun_never_leaves_an_old_manifest(write_files, tmp_path):
    root = write_files({"c/a.txt": "one two three four five six seven\n" * 20})
    out = tmp_path / "out"
    _run(root, out, "preprocess.text.min_count=0")
    assert (out / "manifest.json").exists()
    (root / "c/a.txt").write_text("12345\n")  # the rerun now fails in the pipeline
    with pytest.raises(Exception, match="no token left"):
        _run(root, out)
    assert not (out / "manifest.json").exists()


@pytest.mark.multiprocess
def test_multi_processing_mode_matches_in_memory(write_files, tmp_path):
    root = write_files({f"c/{i}.txt": f"tok{i} common words here and there\n" * 30 for i in range(4)})
    base = ["preprocess.text.min_count=0", "preprocess.num_shards=2"]
    in_memory = _run(root, tmp_path / "a", *base)
    multi = _run(root, tmp_path / "b", *base,
                 beam_args=["--direct_running_mode=multi_processing", "--direct_num_workers=2"])  # fmt: skip
    assert multi["counts"] == in_memory["counts"] and multi["fingerprint"] == in_memory["fingerprint"]
    for split in contract.SPLITS:
        windows = read_windows(tmp_path / "b", multi, split)
        assert sorted(windows) == sorted(read_windows(tmp_path / "a", in_memory, split))
    shard = tmp_path / "b" / multi["shards"]["train"][0]
    assert shard.read_bytes()[:2] == b"\x1f\x8b"  # shards are gzip files
    assert json.loads((tmp_path / "b" / "manifest.json").read_text()) == multi


def test_an_output_dir_inside_the_corpus_is_refused_and_degenerate_data_is_named(write_files, tmp_path, caplog):
    root = write_files({"c/one.txt": "alpha beta gamma\n" * 50})
    with pytest.raises(ValueError, match=r"preprocess.output_dir: .* is inside the corpus: .*vocab.txt"):
        _run(root, root / "c" / "out")
    caplog.set_level("WARNING")
    _run(root, tmp_path / "out", "preprocess.text.min_count=1000", "preprocess.num_shards=64")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("the vocabulary holds only <???>" in w and "min_count=1000" in w for w in warnings), warnings
    assert any("preprocess.num_shards=64 but only" in w for w in warnings), warnings
