"""Small file helpers over Beam's `FileSystems`, so local and gs:// paths share one path.

Writes are atomic: a reader sees the old file, the new file, or no file, never
half of one (local: temp file + rename; GCS: an object appears on close).

Deleting is narrow (`clear_owned`, `remove_tree`): a stage deletes only files it
can prove it wrote, and never through a symbolic link.

Cloud Storage failures come out as one-line errors that name the path and say
what to do (`guard`, from nextword/storage/gcs_errors.py).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, NamedTuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from nextword.storage.gcs_errors import guard


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
        except PermissionError:  # local; on GCS, guard says which grant is missing
            raise PermissionError(f"{path}: permission denied to read; give the job read access to it") from None
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
    with atomic_write(path) as f:
        f.write(text.encode("utf-8"))


@contextlib.contextmanager
def atomic_write(path: str) -> Iterator[BinaryIO]:
    """A file written as it is produced, which appears at `path` only, and whole, if the block ends
    without an error: locally a temp file renamed into place; on Cloud Storage one upload (the object
    appears when it completes; an error cancels it)."""
    if is_remote(path):
        with guard(path, "write"):
            writer = FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)
            try:
                yield writer
                writer.close()  # the object appears here, whole
            except BaseException:
                _abandon(writer)
                raise
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"  # temp_names() matches it, so a stage's clearing removes a leftover
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the rename must never publish a file whose bytes are not on disk yet
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_marker(path: str, content: dict) -> None:
    """Writes a stage's commit marker (JSON), atomically: the last step of a job that succeeded, and only then.

    Readers treat the marker's existence as "the output is complete". Locally it
    is a temp file renamed into place; on Cloud Storage an upload is already
    all-or-nothing (the object appears only when it completes), so a temp object
    and a copy would add a leftover, not safety.
    """
    write_text(path, json.dumps(content, indent=2, sort_keys=True, allow_nan=False) + "\n")


def temp_names(*names: str) -> str:
    """A regex of write_text's temporary names for `names` (what a killed write leaves behind)."""
    return "(?:" + "|".join(re.escape(name) for name in names) + r")\.tmp-[0-9a-f]{32}"


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
    """(path, size) of every file matching a glob, sorted by path.

    `dir/**/x` also matches `dir/x`, as in shells with globstar and Python's glob: Beam's `**`
    needs at least one directory level there.
    """
    patterns = [pattern]
    while "/**/" in patterns[-1]:
        patterns.append(patterns[-1].replace("/**/", "/", 1))
    with guard(pattern, "list"):
        results = FileSystems.match(patterns)
    return sorted({m.path: m.size_in_bytes for r in results for m in r.metadata_list}.items())


def makedirs(path: str, key: str = "") -> None:
    """Creates the directory `path` (a no-op on gs://); a file in its place is one line naming `key`."""
    if is_remote(path):
        return
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        # os says only "File exists": say which path is a file and which setting to change.
        blocker = next(p for p in (path, *Path(path).parents) if os.path.isfile(p))
        where = f"{key}: " if key else ""
        raise NotADirectoryError(
            f"{where}{path}: {blocker} is a file, not a directory; set {key or 'the output path'} to a directory"
        ) from None


def crc32c(path: str) -> str:
    """The file's CRC32C as Cloud Storage gives it (base64 of the 4 big-endian bytes).

    On gs:// it is the object's own metadata (one request, no download: Cloud
    Storage computes it from the bytes it stored); locally it is computed.
    """
    if is_remote(path):
        with guard(path, "read"):
            return FileSystems.checksum(path)
    import google_crc32c  # a dependency of google-cloud-storage, which apache-beam[gcp] brings

    checksum = google_crc32c.Checksum()
    with open_read(path) as f:
        while chunk := f.read(1 << 20):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode("ascii")


def check_readable(paths: Iterable[str]) -> None:
    """Opens every file and reads its first byte: a job's inputs are proven readable before it clears anything.

    An unreadable file is a one-line error naming it (open_read). Cloud Storage
    files are opened a few at a time: each is a round trip.
    """

    def first_byte(path: str) -> None:
        with open_read(path) as f:
            f.read(1)

    paths = list(paths)
    with ThreadPoolExecutor(max_workers=16 if any(is_remote(p) for p in paths) else 1) as pool:
        list(pool.map(first_byte, paths))


# --- deleting: only what a stage wrote, never through a link ------------------
class Owned(NamedTuple):
    """Names a stage gives the files it writes in one folder of its output directory.

    An entry whose whole name matches `names` is the stage's: a file is deleted,
    a folder (Beam's temporary directory, say) is deleted with everything in it.
    """

    folder: str  # relative to the output directory; "" for the directory itself
    names: str  # a regular expression the whole name matches
    temporary: bool = False  # the folder itself is the stage's too: removed once empty


def _link_error(path: str) -> OSError:
    return OSError(
        f"{path}: a symbolic link where this stage deletes its old output; it never deletes through a link: "
        "remove the link (its target stays as it is) or choose another output directory"
    )


def _marker_files(marker: dict, key: str) -> list[str]:
    """The relative paths a previous commit marker lists under `key` (a list, or a dict of lists)."""
    value = marker.get(key) if isinstance(marker, dict) else None
    groups = value.values() if isinstance(value, dict) else [value]
    return [path for group in groups if isinstance(group, list) for path in group if isinstance(path, str)]


def _inside(rel: str) -> bool:
    """Whether a path a marker lists stays inside the output directory (no absolute path, no `..`)."""
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and "://" not in rel and ".." not in parts and "" not in parts


def _previous_marker(path: str) -> dict:
    """A previous commit marker's content; {} when there is none or it is unreadable (nothing is then listed)."""
    try:
        return json.loads(read_text(path))
    except (OSError, ValueError):
        return {}


def _local_no_link(output_dir: str, rel: str) -> str | None:
    """output_dir/rel if it exists, refusing when it or a folder between is a symbolic link."""
    path = output_dir
    for part in (p for p in rel.split("/") if p):
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise _link_error(path)
        if not os.path.lexists(path):
            return None
    return path


def _plan_local(output_dir: str, owned: Iterable[Owned], listed: list[str]) -> list[str]:
    planned = []
    for rel in listed:
        path = _local_no_link(output_dir, rel)
        if path is not None and os.path.isfile(path):
            planned.append(path)
    for entry in owned:
        folder = _local_no_link(output_dir, entry.folder)
        if folder is None or not os.path.isdir(folder):
            continue
        pattern = re.compile(entry.names)
        with os.scandir(folder) as found:
            for item in sorted(found, key=lambda e: e.name):
                if not pattern.fullmatch(item.name):
                    continue
                if item.is_symlink():
                    raise _link_error(item.path)
                planned.append(item.path)
    return planned


def _plan_remote(output_dir: str, owned: Iterable[Owned], listed: list[str]) -> list[str]:
    """Objects to delete, from one listing of the output directory (Cloud Storage has no links)."""
    root = output_dir.rstrip("/")
    objects = [path for path, _ in match(root + "/**")]
    present = set(objects)
    planned = [join(root, rel) for rel in listed if join(root, rel) in present]
    for entry in owned:
        folder = f"{root}/{entry.folder.strip('/')}/" if entry.folder else root + "/"
        pattern = re.compile(entry.names)
        planned += [
            path for path in objects if path.startswith(folder) and pattern.fullmatch(path[len(folder) :].split("/")[0])
        ]
    return planned


def _normal(path: str) -> str:
    return path if is_remote(path) else os.path.abspath(path)


def clear_owned(
    output_dir: str,
    owned: Iterable[Owned],
    *,
    marker: str | None = None,
    listed_key: str | None = None,
    keep: Iterable[str] = (),
    spare: Iterable[str] = (),
) -> None:
    """Deletes what a stage wrote to `output_dir` before, and nothing else.

    Deleted: the commit marker `marker` (first: a rerun that fails never looks
    complete), the files that marker lists under `listed_key` (relative paths
    inside `output_dir`), and every entry matching `owned`. Everything is
    planned before anything goes: a symbolic link on the way (a folder or
    file inside `output_dir`; `output_dir` itself may be a link) is refused
    with one line naming it, and so is a path in `keep` (the job's inputs)
    that would be deleted. `spare` (paths relative to `output_dir`) stays: the
    committed part of a job being resumed. Links are never followed, locally or on gs://.
    """
    owned = list(owned)
    listed = [marker] if marker else []
    if marker and listed_key:
        previous = _previous_marker(join(output_dir, marker))
        listed += [rel for rel in _marker_files(previous, listed_key) if _inside(rel)]
    if is_remote(output_dir):
        planned = _plan_remote(output_dir, owned, listed)
    elif os.path.isdir(output_dir):
        planned = _plan_local(output_dir, owned, listed)
    else:
        planned = []
    spared = {_normal(join(output_dir, rel)) for rel in spare}
    planned = [path for path in dict.fromkeys(planned) if _normal(path) not in spared]  # listed and matched overlap
    kept = {_normal(path) for path in keep}
    for path in planned:
        normal = _normal(path)
        folder = not is_remote(path) and os.path.isdir(path)  # a leftover folder: none of the inputs inside it
        hit = normal if normal in kept else next((k for k in kept if folder and k.startswith(normal + os.sep)), None)
        if hit is not None:
            raise ValueError(
                f"{hit}: an input of this job is also output it replaces in {output_dir}; "
                "move the input out of the output directory or narrow the glob"
            )
    # The marker (planned first when there is one) goes alone, before the rest: it never outlives its files.
    _delete_all(planned[:1])
    _delete_all(planned[1:])
    if not is_remote(output_dir):
        for entry in owned:
            if entry.temporary and entry.folder:
                with contextlib.suppress(OSError):  # not empty (a file the stage did not write) or gone
                    os.rmdir(os.path.join(output_dir, entry.folder))


def _delete_all(paths: list[str]) -> None:
    remote = [path for path in paths if is_remote(path)]
    if remote:
        _delete_objects(remote)
    for path in paths:
        if not is_remote(path):
            remove_tree(path)


def _delete_objects(paths: list[str]) -> None:
    """Deletes Cloud Storage objects by exact name, 100 per request.

    (Beam's FileSystems.delete lists each path as a glob first: one request per
    object, and a name with `*` or `[` would match others.)
    """
    from apache_beam.io.gcp import gcsio
    from google.api_core import exceptions as api_exceptions

    from nextword.storage.gcs_errors import describe

    with guard(paths[0], "delete"):
        results = gcsio.GcsIO().delete_batch(paths)
    for path, status in results:
        if status:  # 404 is no error: gone already
            raise describe(api_exceptions.from_http_status(status, "delete failed"), path, "delete")


def remove_tree(path: str) -> None:
    """Removes a file or a folder with everything in it, never following a symbolic link.

    A link, whether `path` itself or one inside the folder, is removed as a link:
    its target is left as it is. On gs:// the objects under `path/` (and
    `path` itself) go. A missing path is no error.
    """
    if is_remote(path):
        root = path.rstrip("/")
        objects = [p for p, _ in match(root + "/**")] + ([root] if exists(root) else [])
        if objects:
            _delete_objects(objects)
        return
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)  # unlinks links inside without following them (fd-based on Linux)
    elif os.path.lexists(path):
        os.remove(path)
