"""Preprocessing with the corpus and the output on gs:// (the real emulator), and its Cloud Storage failures."""

import json

import pytest

from beam_preprocess import __main__ as preprocess_cli
from beam_preprocess import pipeline
from nextword import storage
from nextword.text import contract

pytestmark = pytest.mark.beam

CORPUS = {
    "a/one.txt": "the cat sat on the mat .\nthe dog sat on the log .\n" * 40,
    "a/two.txt": "a cat and a dog ran to the mat .\n" * 60,
    "b/three.txt": "the log and the mat sat .\n" * 50,
}
SETTINGS = ["preprocess.window_length=4", "preprocess.stride=2", "preprocess.num_shards=2",
            "preprocess.text.min_count=1"]  # fmt: skip


def _args(corpus_glob: str, output_dir: str) -> list[str]:
    items = [f"preprocess.corpus_glob={corpus_glob}", f"preprocess.output_dir={output_dir}", *SETTINGS]
    return [arg for item in items for arg in ("--set", item)]


def _upload(bucket: str) -> str:
    for rel, text in CORPUS.items():
        storage.write_text(f"{bucket}/corpus/{rel}", text)
    return f"{bucket}/corpus/**/*.txt"


def _tfrecord_count(paths: list[str]) -> int:
    import tensorflow as tf

    return sum(1 for _ in tf.data.TFRecordDataset(paths, compression_type="GZIP"))


def test_preprocessing_from_and_to_gcs_equals_the_local_run(gcs_bucket, write_files, tmp_path):
    local_corpus = write_files(CORPUS)
    local = pipeline.run(_args(f"{local_corpus}/**/*.txt", str(tmp_path / "out")))
    out = f"{gcs_bucket}/data"
    manifest = pipeline.run(_args(_upload(gcs_bucket), out))

    assert manifest == json.loads(storage.read_text(f"{out}/{contract.MANIFEST_FILE}"))
    assert manifest["counts"] == local["counts"] and manifest["fingerprint"] == local["fingerprint"]
    assert manifest["counts"]["files"] == 3
    assert storage.read_text(f"{out}/{contract.VOCAB_FILE}") == (tmp_path / "out" / contract.VOCAB_FILE).read_text()
    # The shards the manifest lists are on gs://, and TensorFlow (the trainer's reader) reads them all.
    for split in contract.SPLITS:
        shards = [storage.join(out, rel) for rel in manifest["shards"][split]]
        assert all(storage.exists(path) for path in shards)
        assert _tfrecord_count(shards) == manifest["counts"]["windows"][split]


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, lines
    return lines[0]


def test_missing_bucket_for_corpus_or_output_is_one_line(gcs_bucket, capsys):
    glob = _upload(gcs_bucket)
    assert preprocess_cli.main(_args("gs://no-such-corpus-bucket/c/*.txt", f"{gcs_bucket}/data")) == 1
    assert _one_error_line(capsys).startswith(
        "error: gs://no-such-corpus-bucket/c/*.txt: bucket gs://no-such-corpus-bucket does not exist"
    )
    assert preprocess_cli.main(_args(glob, "gs://no-such-output-bucket/data")) == 1
    assert _one_error_line(capsys).startswith("error: gs://no-such-output-bucket/data/")
    assert preprocess_cli.main(_args(f"{gcs_bucket}/nothing/*.txt", f"{gcs_bucket}/data")) == 1
    assert _one_error_line(capsys) == f"error: {gcs_bucket}/nothing/*.txt: the corpus glob matches no file"


def test_unreadable_corpus_object_fails_the_run_before_the_previous_output_is_cleared(gcs_bucket, gcs_emulator, capsys):
    glob, out = _upload(gcs_bucket), f"{gcs_bucket}/data"
    pipeline.run(_args(glob, out))
    assert storage.exists(f"{out}/{contract.MANIFEST_FILE}")
    # Listing works, but reading one object is refused (e.g. a file with a stricter ACL).
    gcs_emulator.proxy.fail(("GET", "/download/.*/corpus/a/two.txt", 403, None))
    assert preprocess_cli.main(_args(glob, out)) == 1
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {gcs_bucket}/corpus/a/two.txt: permission denied to read (HTTP 403);"), line
    # The inputs are read before anything is cleared: the previous complete output is left as it was.
    gcs_emulator.proxy.clear()
    manifest = json.loads(storage.read_text(f"{out}/{contract.MANIFEST_FILE}"))
    assert all(storage.exists(f"{out}/{shard}") for shards in manifest["shards"].values() for shard in shards)


def test_transient_503s_are_retried_and_the_output_is_complete(gcs_bucket, gcs_emulator):
    glob, out = _upload(gcs_bucket), f"{gcs_bucket}/data"
    expected = pipeline.run(_args(glob, out))
    bucket = gcs_bucket[len("gs://") :]
    # The first read of every corpus object, the corpus listing and one upload each fail once with 503.
    gcs_emulator.proxy.fail(
        *[("GET", f"/download/.*/corpus/{rel}", 503, 1) for rel in CORPUS],
        ("GET", f"/storage/v1/b/{bucket}/o\\?.*prefix=corpus", 503, 1),
        ("PUT", "/upload/", 503, 1),
    )
    manifest = pipeline.run(_args(glob, out))
    assert manifest["counts"] == expected["counts"] and manifest["shards"] == expected["shards"]
    assert gcs_emulator.proxy.hits() == [1] * (len(CORPUS) + 2)  # every fault was met once
    seen = [f"{method} {path}" for method, path in gcs_emulator.proxy.requests()]
    for rel in CORPUS:  # every object was refused once and read again (twice: two passes over the corpus)
        assert sum(f"/corpus/{rel}" in line and line.startswith("GET /download/") for line in seen) >= 3


def test_denied_listing_is_one_line(gcs_bucket, gcs_emulator, capsys):
    glob = _upload(gcs_bucket)
    bucket = gcs_bucket[len("gs://") :]
    gcs_emulator.proxy.fail(("GET", f"/b/{bucket}/o\\?", 403, None))  # listings only (uploads are POSTs)
    assert preprocess_cli.main(_args(glob, f"{gcs_bucket}/data")) == 1
    assert _one_error_line(capsys).startswith(f"error: {glob}: permission denied to list (HTTP 403)")
