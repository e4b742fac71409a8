"""nextword.storage and TensorFlow on gs:// paths, against the real emulator (tests/gcs_emulator.py)."""

import gc
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from google.api_core import exceptions as api_exceptions
from google.api_core.exceptions import RetryError

from nextword import storage
from nextword.storage import gcs_errors, gcs_preflight
from tests.support.gcs_emulator import free_port

REPO = Path(__file__).resolve().parent.parent


# --- describe(): the one-line messages, exactly --------------------------------
@pytest.mark.unit
def test_describe_names_the_path_and_the_fix_for_each_status():
    missing_bucket = gcs_errors.describe(api_exceptions.NotFound("x"), "gs://b/d/f.txt", "read", bucket_exists=False)
    assert isinstance(missing_bucket, FileNotFoundError)
    assert str(missing_bucket) == (
        "gs://b/d/f.txt: bucket gs://b does not exist; create it (gcloud storage buckets create gs://b) or fix the path"
    )
    missing_object = gcs_errors.describe(api_exceptions.NotFound("x"), "gs://b/f", "read", bucket_exists=True)
    assert str(missing_object) == "gs://b/f: no such object in gs://b"
    denied = gcs_errors.describe(api_exceptions.Forbidden("x"), "gs://b/f", "write")
    assert isinstance(denied, PermissionError)
    assert str(denied) == (
        "gs://b/f: permission denied to write (HTTP 403); grant the job's service account access to gs://b "
        "(e.g. roles/storage.objectAdmin)"
    )
    # What the client raises once its retries of a 503 run out.
    exhausted = RetryError("Timeout of 120.0s exceeded", cause=api_exceptions.ServiceUnavailable("busy"))
    assert str(gcs_errors.describe(exhausted, "gs://b/f", "list")) == (
        "gs://b/f: Cloud Storage failed to list (HTTP 503) after the client's retries; rerun when the service recovers"
    )
    other = gcs_errors.describe(ValueError("odd\nsecond line"), "gs://b/f", "read")
    assert isinstance(other, gcs_errors.StorageError) and str(other) == "gs://b/f: could not read (ValueError: odd)"


@pytest.mark.unit
def test_guard_names_the_path_of_transport_errors_and_leaves_other_errors_alone(tmp_path, monkeypatch):
    passed = threading.Event()
    passed.set()
    monkeypatch.setattr(gcs_preflight, "_checked", passed)  # no Cloud Storage here: only the mapping is tested
    with pytest.raises(gcs_errors.StorageError, match=r"^gs://b/f: could not read \(ConnectionError: refused\)$"):
        with storage.guard("gs://b/f", "read"):
            raise requests.ConnectionError("refused\nmore detail")
    with pytest.raises(KeyError), storage.guard("gs://b/f", "read"):
        raise KeyError("not a storage error")
    missing = tmp_path / "missing.txt"
    with pytest.raises(FileNotFoundError, match=rf"^{missing}: no such file$"):
        storage.read_text(str(missing))


# --- the helpers on the emulator --------------------------------------------------
def test_helpers_round_trip_on_gcs(gcs_bucket):
    storage.write_text(f"{gcs_bucket}/d/a.txt", "alpha\n")
    storage.write_text(f"{gcs_bucket}/d/sub/b.txt", "béta\n")
    storage.write_text(f"{gcs_bucket}/other.txt", "x")
    assert storage.read_text(f"{gcs_bucket}/d/sub/b.txt") == "béta\n"
    assert storage.match(f"{gcs_bucket}/d/*.txt") == [(f"{gcs_bucket}/d/a.txt", 6)]
    assert [p for p, _ in storage.match(f"{gcs_bucket}/d/**")] == [f"{gcs_bucket}/d/a.txt", f"{gcs_bucket}/d/sub/b.txt"]
    both = [f"{gcs_bucket}/d/a.txt", f"{gcs_bucket}/d/sub/b.txt"]
    assert [p for p, _ in storage.match(f"{gcs_bucket}/d/**/*.txt")] == both  # ** matches no directory too
    assert storage.exists(f"{gcs_bucket}/d/a.txt") and not storage.exists(f"{gcs_bucket}/d/none.txt")
    storage.delete(f"{gcs_bucket}/d/a.txt")
    storage.delete(f"{gcs_bucket}/d/a.txt")  # deleting what is gone is a no-op
    assert storage.match(f"{gcs_bucket}/d/*.txt") == []


def test_missing_bucket_and_missing_object_are_one_line_errors(gcs_bucket):
    nope = "gs://no-such-bucket-nextword"
    for call in (lambda: storage.match(f"{nope}/c/*.txt"), lambda: storage.write_text(f"{nope}/o.txt", "x"),
                 lambda: storage.read_bytes(f"{nope}/o.txt")):  # fmt: skip
        with pytest.raises(FileNotFoundError) as err:
            call()
        assert f"bucket {nope} does not exist" in str(err.value) and "\n" not in str(err.value)
    for read in (storage.read_text, storage.read_bytes):
        with pytest.raises(FileNotFoundError, match=rf"^{gcs_bucket}/gone.txt: no such object in {gcs_bucket}$"):
            read(f"{gcs_bucket}/gone.txt")


def test_read_text_asks_for_the_object_once(gcs_bucket, gcs_emulator):
    storage.write_text(f"{gcs_bucket}/d/a.txt", "alpha\n")
    before = len(gcs_emulator.proxy.requests())
    assert storage.read_text(f"{gcs_bucket}/d/a.txt") == "alpha\n"
    # (The client library also looks the bucket up in the background: not a request about the object.)
    seen = [path.split("?")[0] for _, path in gcs_emulator.proxy.requests()[before:] if "/o/" in path]
    # Beam's reader looks the object up once (for its size) and downloads it: no separate existence check.
    bucket = gcs_bucket[len("gs://") :]
    assert seen == [f"/storage/v1/b/{bucket}/o/d%2Fa.txt", f"/download/storage/v1/b/{bucket}/o/d/a.txt"]


def test_a_read_refused_midway_names_the_file(gcs_bucket, gcs_emulator):
    storage.write_text(f"{gcs_bucket}/d/a.txt", "alpha\nbeta\n")
    # Opening (the object's metadata) works; the download is refused.
    gcs_emulator.proxy.fail(("GET", "^/download/.*/o/d/a.txt", 403, None))
    with storage.open_read(f"{gcs_bucket}/d/a.txt") as stream:
        stream.seek(2)
        with pytest.raises(PermissionError, match=rf"^{gcs_bucket}/d/a.txt: permission denied to read \(HTTP 403\)"):
            stream.readline(100)


def test_permission_denied_names_the_path(gcs_bucket, gcs_emulator):
    storage.write_text(f"{gcs_bucket}/d/a.txt", "alpha\n")
    bucket = gcs_bucket[len("gs://") :]
    gcs_emulator.proxy.fail(("*", f"/b/{bucket}[/?]", 403, None))
    for action, call in (("list", lambda: storage.match(f"{gcs_bucket}/d/*")),
                         ("read", lambda: storage.read_text(f"{gcs_bucket}/d/a.txt")),
                         ("write", lambda: storage.write_text(f"{gcs_bucket}/d/b.txt", "x"))):  # fmt: skip
        with pytest.raises(PermissionError) as err:
            call()
        assert str(err.value).startswith(f"{gcs_bucket}/d/") and f"permission denied to {action} (HTTP 403)" in str(
            err.value
        )
    gcs_emulator.proxy.clear()
    assert not storage.exists(f"{gcs_bucket}/d/b.txt")  # the refused write left nothing


def test_a_failed_write_is_not_completed_later(gcs_bucket, gcs_emulator):
    # The upload is refused. Left alone, the writer would start it again when garbage collected (and succeed).
    gcs_emulator.proxy.fail(("POST", "^/upload/", 403, None))
    with pytest.raises(PermissionError, match=rf"^{gcs_bucket}/late.txt: permission denied to write"):
        storage.write_text(f"{gcs_bucket}/late.txt", "x")
    gcs_emulator.proxy.clear()
    gc.collect()
    assert not storage.exists(f"{gcs_bucket}/late.txt")


def test_transient_503_is_retried_by_the_client(gcs_bucket, gcs_emulator):
    storage.write_text(f"{gcs_bucket}/d/a.txt", "alpha\n")
    bucket = gcs_bucket[len("gs://") :]
    listing, download = f"/storage/v1/b/{bucket}/o\\?", f"/download/storage/v1/b/{bucket}/o/d/a.txt"
    gcs_emulator.proxy.fail(("GET", listing, 503, 1), ("GET", download, 503, 1))
    assert storage.match(f"{gcs_bucket}/d/*") == [(f"{gcs_bucket}/d/a.txt", 6)]
    assert storage.read_text(f"{gcs_bucket}/d/a.txt") == "alpha\n"
    assert gcs_emulator.proxy.hits() == [1, 1]
    seen = [path for _, path in gcs_emulator.proxy.requests()]
    # Each faulted request was answered 503 once and then sent again.
    assert sum(path.startswith(f"/storage/v1/b/{bucket}/o?") for path in seen) >= 2
    assert sum(path.startswith(download) for path in seen) == 2


# --- TensorFlow's own gs:// filesystem (through the TLS proxy to the emulator) ---
def test_tensorflow_reads_writes_and_checkpoints_on_gcs(gcs_bucket, gcs_emulator):
    import tensorflow as tf

    path = f"{gcs_bucket}/tf/records.tfrecord.gz"
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for i in range(5):
            writer.write(f"record {i}".encode())
    assert tf.io.gfile.glob(f"{gcs_bucket}/tf/*") == [path]
    # TensorFlow reads objects from storage.googleapis.com/<bucket>/<name>; its first read gets a 503 and is retried.
    gcs_emulator.proxy.fail(("GET", f"^/{gcs_bucket[len('gs://') :]}/tf%2Frecords", 503, 1))
    records = [r.numpy() for r in tf.data.TFRecordDataset([path], compression_type="GZIP")]
    assert records == [f"record {i}".encode() for i in range(5)] and gcs_emulator.proxy.hits() == [1]

    weights = tf.Variable([1.0, 2.0])
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(w=weights), f"{gcs_bucket}/ckpt", max_to_keep=1)
    manager.save()
    weights.assign([7.0, 8.0])
    manager.save()  # max_to_keep=1: TF deletes the first checkpoint's files
    weights.assign([0.0, 0.0])
    tf.train.Checkpoint(w=weights).restore(manager.latest_checkpoint)
    assert weights.numpy().tolist() == [7.0, 8.0]
    # The objects are in the emulator, as the storage client sees them.
    names = {b.name for b in gcs_emulator.client().list_blobs(gcs_bucket[len("gs://") :], prefix="ckpt/")}
    assert "ckpt/checkpoint" in names and "ckpt/ckpt-2.index" in names and "ckpt/ckpt-1.index" not in names


@pytest.mark.unit
def test_double_star_matches_files_directly_in_the_folder_too(tmp_path):
    for name in ("top.txt", "a/mid.txt", "a/b/deep.txt", "a/b/skip.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x\n")
    found = [os.path.relpath(p, tmp_path) for p, _ in storage.match(f"{tmp_path}/**/*.txt")]
    assert found == ["a/b/deep.txt", "a/mid.txt", "top.txt"]
    assert [os.path.relpath(p, tmp_path) for p, _ in storage.match(f"{tmp_path}/a/**/**/*.txt")] == [
        "a/b/deep.txt",
        "a/mid.txt",
    ]


# --- failing fast: an unreachable endpoint, no credentials -------------------------
@pytest.mark.storage
def test_an_unreachable_emulator_fails_a_command_in_seconds_with_one_line(tmp_path):
    closed = free_port()  # nothing listens there: every connection is refused
    env = {k: v for k, v in os.environ.items() if k not in ("NEXTWORD_DEBUG", "GOOGLE_APPLICATION_CREDENTIALS")}
    env |= {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{closed}", "PYTHONPATH": str(REPO)}
    argv = ["--set", "preprocess.corpus_glob=gs://b/corpus/*.txt", "--set", f"preprocess.output_dir={tmp_path}/out"]
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "nextword.cli", "preprocess", *argv], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)  # fmt: skip
    assert time.monotonic() - started < 30
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.rstrip().splitlines()[-1] == (
        f"error: gs://b/corpus/*.txt: cannot reach the Cloud Storage emulator at http://127.0.0.1:{closed} "
        "(STORAGE_EMULATOR_HOST): connection refused; start the emulator or unset STORAGE_EMULATOR_HOST"
    )
    assert "WARNING" not in done.stderr  # no retry log of the credential lookup either


@pytest.mark.storage
def test_no_credentials_is_one_line_naming_the_fix_at_once(tmp_path, monkeypatch):
    with socket.socket() as endpoint:  # stands in for Cloud Storage (through a proxy): reachable, never asked
        endpoint.bind(("127.0.0.1", 0))
        endpoint.listen()
        monkeypatch.setattr(gcs_preflight, "_checked", threading.Event())  # this process may have passed already
        for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{endpoint.getsockname()[1]}")
        monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud login there
        monkeypatch.setenv("NO_GCE_CHECK", "true")  # not on Google Compute Engine
        started = time.monotonic()
        with pytest.raises(PermissionError) as err:
            storage.exists("gs://b/x.txt")
    assert time.monotonic() - started < 5
    assert str(err.value) == (
        "gs://b/x.txt: no Google Cloud credentials (Your default credentials were not found); run "
        "`gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file"
    )
