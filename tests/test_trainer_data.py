"""The trainer's input pipelines over real preprocessing output (TFRecord shards written by the Beam pipeline)."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from tests.support import trainer as trainer_support
from trainer import data, streams


def batches(dataset, count: int) -> list[np.ndarray]:
    return [ids.numpy() for ids in dataset.take(count)]


def test_spec_comes_from_the_manifest(synthetic):
    spec = data.load_data_spec(str(synthetic))
    assert spec.window_length == 20 and spec.record_length == 21
    assert spec.vocab_size == len((synthetic / "vocab.txt").read_text().splitlines())
    assert len(spec.shard_paths("train")) == 4


@pytest.mark.unit
def test_missing_manifest_is_one_line_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json: not found; preprocessing has not finished") as err:
        data.load_data_spec(str(tmp_path))
    assert "\n" not in str(err.value)


def test_vocabulary_from_another_run_is_refused(synthetic, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(synthetic, copy)
    tokens = (copy / "vocab.txt").read_text().splitlines()
    tokens[2], tokens[3] = tokens[3], tokens[2]  # same words, different ids
    (copy / "vocab.txt").write_text("\n".join(tokens) + "\n")
    with pytest.raises(ValueError, match=r"vocab.txt: vocabulary fingerprint \w+ does not match") as err:
        data.load_data_spec(str(copy))
    assert "\n" not in str(err.value)


def test_train_order_is_fixed_by_seed_and_skip_resumes_it(synthetic):
    spec = data.load_data_spec(str(synthetic))
    first = batches(data.train_dataset(spec, 16, shuffle_buffer=1000, seed=7), 5)
    again = batches(data.train_dataset(spec, 16, shuffle_buffer=1000, seed=7), 5)
    resumed = batches(data.train_dataset(spec, 16, shuffle_buffer=1000, seed=7, skip_batches=2), 3)
    other = batches(data.train_dataset(spec, 16, shuffle_buffer=1000, seed=8), 5)
    assert first[0].shape == (16, 21) and first[0].dtype == np.int32
    assert all((a == b).all() for a, b in zip(first, again, strict=True))
    assert all((a == b).all() for a, b in zip(first[2:], resumed, strict=True))
    assert not all((a == b).all() for a, b in zip(first, other, strict=True))


def test_one_epoch_of_batches_repeats_no_window(synthetic):
    spec = data.load_data_spec(str(synthetic))
    steps = spec.windows("train") // 64
    rows = np.concatenate(batches(data.train_dataset(spec, 64, shuffle_buffer=10000, seed=1), steps))
    assert len({row.tobytes() for row in rows}) == len(rows) == steps * 64


def test_eval_batches_cover_every_window_once_then_padding(synthetic):
    spec = data.load_data_spec(str(synthetic))
    got = list(data.eval_dataset(spec, "valid", 100))
    windows = spec.windows("valid")
    assert len(got) == data.eval_batches(spec, "valid", 100) == -(-windows // 100)
    ids = np.concatenate([i.numpy() for i, _ in got])
    weights = np.concatenate([w.numpy() for _, w in got])
    assert weights.sum() == windows and (weights[:windows] == 1).all() and (weights[windows:] == 0).all()
    assert (ids[windows:] == 0).all() and (ids[:windows].max(axis=1) > 0).all()


@pytest.mark.train  # its data fixture comes from request.getfixturevalue
@pytest.mark.parametrize("data_dir", ["ordered", "synthetic"])
def test_preprocessed_data_passes_the_carry_state_check(data_dir, request):
    """One shard per split is in order; several shards are too, shard after shard (but for file ends)."""
    spec = data.load_data_spec(str(request.getfixturevalue(data_dir)))
    windows = streams.read_windows(spec, "train")
    assert len(windows) == spec.windows("train")
    assert streams.continuity(windows) > 0.9
    streams.check_in_order(spec, "train", windows)


def test_one_shard_per_split_is_in_corpus_order(ordered):
    spec = data.load_data_spec(str(ordered))
    windows = streams.read_windows(spec, "train")
    # Three train files: the only breaks are where one file ends and the next begins.
    assert np.sum(windows[:-1, -1] != windows[1:, 0]) <= 2


def test_shuffled_records_are_refused_for_carry_state(synthetic, tmp_path):
    spec = data.load_data_spec(str(trainer_support.shuffled_copy(synthetic, tmp_path / "shuffled")))
    windows = streams.read_windows(spec, "train")
    assert len(windows) == spec.windows("train")
    with pytest.raises(ValueError, match="not in corpus order .* preprocess with preprocess.num_shards: 1"):
        streams.check_in_order(spec, "train", windows)


def test_overlapping_windows_are_refused_for_carry_state(ordered):
    spec = data.load_data_spec(str(ordered))
    overlapping = dataclasses.replace(spec, manifest=dataclasses.replace(spec.manifest, stride=1))
    with pytest.raises(ValueError, match="carried state needs preprocess.stride == window_length"):
        streams.check_in_order(overlapping, "train", streams.read_windows(spec, "train"))


@pytest.mark.beam
def test_a_split_without_tokens_is_one_line_at_startup_not_a_crash_after_an_epoch(write_files, tmp_path):
    from beam_preprocess import pipeline

    root = write_files({"a.txt": "the cat sat on the mat\n" * 200})
    out = tmp_path / "data"
    settings = [f"preprocess.corpus_glob={root}/*.txt", f"preprocess.output_dir={out}", "preprocess.text.min_count=0",
                "preprocess.split.valid_fraction=0", "preprocess.window_length=4"]  # fmt: skip
    pipeline.run([arg for item in settings for arg in ("--set", item)])
    with pytest.raises(ValueError, match=r"manifest.json: the valid split has no token to predict; .*valid_fraction"):
        data.load_data_spec(str(out))


@pytest.mark.beam
def test_a_shard_in_pieces_reads_as_the_whole_shard_from_any_start(ordered, tmp_path_factory, monkeypatch):
    """A shard is written in pieces of PIECE_WINDOWS windows; a reader starting at window n opens the piece
    holding n and gives exactly the windows the single-file shard gives from n."""
    import tensorflow as tf

    from beam_preprocess import transforms

    monkeypatch.setattr(transforms, "PIECE_WINDOWS", 97)
    # A run of its own (a setting that leaves the windows as they are), written with the small pieces.
    pieced = trainer_support.ordered_data(tmp_path_factory, "preprocess.read_chunk_bytes=65536")
    pieces = data.load_data_spec(str(pieced))
    whole = data.load_data_spec(str(ordered))
    total = whole.windows("train")
    assert len(whole.shard_paths("train")) == 1 and total > 3 * 97
    assert pieces.manifest.shard_windows["train"] == [97] * (total // 97) + [total % 97] * bool(total % 97)
    assert [p.rsplit("/", 1)[1] for p in pieces.shard_paths("train")[:2]] == [
        "windows-00000-of-00001.tfrecord.gz",
        "windows-00000-of-00001-00001.tfrecord.gz",
    ]
    expected = streams.read_windows(whole, "train")
    np.testing.assert_array_equal(streams.read_windows(pieces, "train"), expected)
    for start, count in [(0, 5), (96, 3), (97, 1), (250, 200), (total - 2, -1), (total, -1)]:
        got = list(streams.window_records(pieces, "train", tf.constant(start, tf.int64), count).as_numpy_iterator())
        np.testing.assert_array_equal(np.reshape(got, [-1, whole.record_length]), expected[start:][: len(got)])
        assert len(got) == len(expected[start:][:count] if count >= 0 else expected[start:])
