"""Preprocessing's pure core and its DoFns called directly."""

import io
from collections import Counter

import pytest

from beam_preprocess import core
from beam_preprocess.transforms import CorpusCountsFn, CountFileWordsFn, WriteShardPartsFn
from nextword import config as config_lib
from nextword.text.contract import TextSettings

pytestmark = pytest.mark.unit


def read_all(data: bytes, chunk: int = 1 << 20):
    stats = Counter()
    pieces = list(core.read_lines(io.BytesIO(data), chunk, stats))
    return pieces, stats


def test_read_lines_counts_bom_crlf_and_bad_bytes():
    pieces, stats = read_all(b"\xef\xbb\xbfone\r\ntwo \xff\xfe\nthree")
    assert pieces == [(0, "one"), (1, "two \ufffd\ufffd"), (2, "three")]
    assert (stats["lines"], stats["bom_files"], stats["crlf_lines"], stats["undecodable_lines"]) == (3, 1, 1, 1)


def test_read_lines_cuts_long_lines_at_spaces_without_splitting_words():
    line = " ".join(f"w{i}" for i in range(1000)).encode()
    pieces, stats = read_all(line + b"\nnext\n", chunk=64)
    assert all(len(text.encode()) <= 64 for _, text in pieces)
    first_line = "".join(text for index, text in pieces if index == 0)
    assert first_line.split() == line.decode().split()
    assert stats["lines"] == 2 and pieces[-1] == (1, "next")


def test_read_lines_cuts_a_giant_word_on_a_character_boundary():
    word = ("é" * 100).encode()
    pieces, stats = read_all(word, chunk=33)
    assert "".join(text for _, text in pieces) == "é" * 100
    assert stats["undecodable_lines"] == 0


def test_empty_file_has_no_lines():
    assert read_all(b"") == ([], Counter())


def test_iter_split_tokens_puts_eos_after_each_line_in_that_lines_split():
    lines = [(0, "a b"), (0, "c"), (1, "d"), (2, "")]
    split_of = {0: "train", 1: "test", 2: "train"}.__getitem__
    tokens = list(core.iter_split_tokens(lines, TextSettings(eos=True), split_of))
    assert tokens == [
        ("train", "a"), ("train", "b"), ("train", "c"), ("train", "<eos>"),
        ("test", "d"), ("test", "<eos>"), ("train", "<eos>"),
    ]  # fmt: skip


def test_split_windows_never_cross_a_change_of_split():
    stream = [("train", i) for i in range(5)] + [("test", i) for i in range(5, 8)] + [("train", 8), ("train", 9)]
    assert list(core.split_windows(stream, 3, 1)) == [
        ("train", [0, 1, 2]), ("train", [1, 2, 3]), ("train", [2, 3, 4]), ("test", [5, 6, 7]),
    ]  # fmt: skip


def test_line_splitter_keeps_blocks_together():
    splitter = core.line_splitter(core.CorpusFile("p", "k"), 10, 0.3, 0.3)
    assert len({splitter(i) for i in range(10)}) == 1
    assert core.line_splitter(core.CorpusFile("p", "k", "valid"), 10, 0.3, 0.3)(123) == "valid"


def test_encoded_examples_in_tfrecord_frames_parse_with_tensorflow(tmp_path):
    import tensorflow as tf

    windows = [[0, 1, 127, 128, 300000, 2**40], [5, 4, 3, 2, 1, 0]]
    (tmp_path / "r.tfrecord").write_bytes(b"".join(core.tfrecord_frame(core.encode_example(w)) for w in windows))
    parsed = [
        tf.io.parse_single_example(record, {"ids": tf.io.FixedLenFeature([6], tf.int64)})["ids"].numpy().tolist()
        for record in tf.data.TFRecordDataset(str(tmp_path / "r.tfrecord"))  # checks both CRCs
    ]
    assert parsed == windows


def test_assign_shards_keeps_runs_together_and_balances_splits():
    windows = [("train", [i]) for i in range(3 * core.SHARD_RUN)] + [("test", [0])]
    assigned = list(core.assign_shards(windows, "file.txt", 4))
    shards = [shard for split, shard, _ in assigned if split == "train"]
    assert [len(set(shards[i : i + core.SHARD_RUN])) for i in range(0, len(shards), core.SHARD_RUN)] == [1, 1, 1]
    assert len(set(shards)) == 3 and assigned[-1][1] == shards[0]  # runs rotate; each split starts at the offset


@pytest.fixture
def cfg():
    return config_lib.from_dict(
        None, ["preprocess.text.min_count=0", "preprocess.window_length=2", "preprocess.stride=1",
               "preprocess.split.valid_fraction=0",
               "preprocess.split.test_fraction=0", "preprocess.num_shards=1"]
    ).preprocess  # fmt: skip


def test_count_and_window_dofns_process_one_file(cfg, write_files):
    root = write_files({"a.txt": "The cat.\nThe dog!\n"})
    corpus_file = core.CorpusFile(str(root / "a.txt"), "a.txt")
    ((words, figures),) = list(CountFileWordsFn(cfg).process(corpus_file))
    assert words == Counter({"the": 2, "cat": 1, "dog": 1})
    assert figures["lines"] == 2 and figures["tokens.train"] == 4 and figures["files"] == 1

    vocab = ["<???>", "the", "cat"]  # "dog" unknown
    fn = WriteShardPartsFn(cfg, str(root / "parts"))
    fn.start_bundle()
    figures = Counter({"windows.train": 2, "targets.train": 4, "unknown_tokens.train": 1})
    assert list(fn.process(corpus_file, vocab)) == [figures]
    ((tag, value),) = [(out.tag, out.value.value) for out in fn.finish_bundle()]
    (key, part_path) = value
    assert tag == "parts" and key == ("train", 0)  # one shard: every window in shard 0
    # ids: the=1 cat=2 the=1 dog=0 -> windows of 3 with stride 1, framed as TFRecords
    expected = b"".join(core.tfrecord_frame(core.encode_example(w)) for w in ([1, 2, 1], [2, 1, 0]))
    assert open(part_path, "rb").read() == expected


def test_corpus_counts_combiner_merges_partials():
    fn = CorpusCountsFn()
    a = fn.add_input(fn.create_accumulator(), (Counter(x=1), Counter(lines=2)))
    b = fn.add_input(fn.create_accumulator(), (Counter(x=2, y=1), Counter(lines=3)))
    assert fn.extract_output(fn.merge_accumulators([a, b])) == (Counter(x=3, y=1), Counter(lines=5))


def test_progress_lines_count_files_bytes_lines_and_tokens_against_the_corpus(cfg, write_files, caplog):
    from nextword.beam import progress

    text = "the cat sat\n" * 3000  # 12,000 tokens: the stream checks the clock every 4,096
    root = write_files({"a.txt": text, "b.txt": text})
    size = 2 * len(text)
    fn = CountFileWordsFn(cfg, corpus=(2, size))
    fn.setup()
    fn.progress.every_s = 0.0  # a line at every check
    with caplog.at_level("INFO", logger=progress.__name__):
        list(fn.process(core.CorpusFile(str(root / "a.txt"), "a.txt", size=len(text))))
    assert fn.progress.done == {"files": 1, "bytes": len(text), "lines": 3000, "tokens": 9000}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3  # after 4,096 and 8,192 tokens, and at the end of the file
    assert lines[-1].startswith(f"counting: 1/2 files, {len(text) / 1e6:.1f}/{size / 1e6:.1f} MB, ")
    assert "tokens/s" in lines[-1] and "s left" in lines[-1]


def test_progress_reports_only_after_its_interval():
    from nextword.beam import progress

    now = [0.0]
    tracker = progress.Progress("test", "scoring", total_bytes=1000, clock=lambda: now[0], every_s=10)
    tracker.advance(bytes=100, lines=10, tokens=50)
    assert tracker.reported["bytes"] == 0  # 0 s since the start: nothing reported yet
    now[0] = 10.0
    tracker.advance(bytes=100, lines=10, tokens=50)
    assert tracker.reported == {"files": 0, "bytes": 200, "lines": 20, "tokens": 100}
    assert tracker.line(10.0) == (
        "scoring: 0 files, 0.0/0.0 MB, 2 lines/s, 10 tokens/s, about 40 s left on this worker's share"
    )
