"""Small file helpers over Beam's `FileSystems`, so local and gs:// paths share one path.

Writes are atomic: a reader sees the old file, the new file, or no file, never
half of one (local: temp file + rename; GCS: an object appears on close).

Cloud Storage failures come out as one-line errors that name the path and say
what to do (`guard`, from nextword/gcs_errors.py).
"""

from __future__ import annotations

import contextlib
import os
import uuid

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from nextword.gcs_errors import guard


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)


def is_remote(path: str) -> bool:
    return "://" in path


def exists(path: str) -> bool:
    with guard(path, "look up"):
        return FileSystems.exists(path)


def open_read(path: str):
    """A binary stream of the file's raw bytes (no decompression: readers work on byte offsets)."""
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def read_bytes(path: str) -> bytes:
    with guard(path, "read"), open_read(path) as f:
        return f.read()


def read_text(path: str) -> str:
    if not exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    return read_bytes(path).decode("utf-8")


def write_text(path: str, text: str) -> None:
    data = text.encode("utf-8")
    if is_remote(path):
        with guard(path, "write"):
            writer = FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)
            try:
                writer.write(data)
                writer.close()  # the object appears here, whole
            except BaseException:
                _abandon(writer)
                raise
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _abandon(writer) -> None:
    """Cancels a failed Cloud Storage upload.

    Left alone, the garbage collector closes the writer again, which retries the
    upload (for up to two minutes) and may write the object after the failure
    was reported.
    """
    with contextlib.suppress(Exception):
        writer.terminate()  # google-cloud-storage's BlobWriter: drops the upload session and the buffer
    if not writer.closed:  # terminate() failed before it closed the buffer
        writer._buffer.close()


def delete(path: str) -> None:
    if exists(path):
        with guard(path, "delete"):
            FileSystems.delete([path])


def match(pattern: str) -> list[tuple[str, int]]:
    """(path, size) of every file matching a glob, sorted by path."""
    with guard(pattern, "list"):
        result = FileSystems.match([pattern])[0]
    return sorted((m.path, m.size_in_bytes) for m in result.metadata_list)


def makedirs(path: str) -> None:
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)
