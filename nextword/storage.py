"""Small file helpers over Beam's `FileSystems`, so local and gs:// paths share one path.

Writes are atomic: a reader sees the old file, the new file, or no file, never
half of one (local: temp file + rename; GCS: an object appears on close).

Cloud Storage failures come out as one-line errors that name the path and say
what to do (`guard`, from nextword/gcs_errors.py).
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from typing import BinaryIO

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


def open_read(path: str) -> BinaryIO:
    """A binary stream of the file's raw bytes (no decompression: readers work on byte offsets).

    A missing file, or a Cloud Storage failure when opening or reading, is a
    one-line error naming `path`.
    """
    with guard(path, "read"):
        try:
            stream = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
        except FileNotFoundError:  # local; on GCS, guard names the missing object or bucket
            raise FileNotFoundError(f"{path}: no such file") from None
    return _GuardedReader(path, stream) if is_remote(path) else stream


class _GuardedReader:
    """A Cloud Storage read stream whose failures (after the client's retries) name the file.

    Only the stream's own calls are guarded: an error raised by the code that
    consumes the lines (a fused downstream Beam step, say) keeps its own message.
    """

    def __init__(self, path: str, stream: BinaryIO):
        self._path = path
        self._stream = stream

    def _call(self, method, *args):
        with guard(self._path, "read"):
            return method(*args)

    def read(self, size: int = -1) -> bytes:
        return self._call(self._stream.read, size)

    def readline(self, size: int = -1) -> bytes:
        return self._call(self._stream.readline, size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._call(self._stream.seek, offset, whence)

    def tell(self) -> int:
        return self._stream.tell()

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> _GuardedReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def read_text(path: str) -> str:
    """The file's text; a missing file is a FileNotFoundError naming `path` (no separate existence check)."""
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
