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
import glob
import io
import itertools
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator
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
    if not is_remote(path):
        refuse_special(path)
    with guard(path, "read"):
        try:
            stream = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
        except FileNotFoundError:  # local; on GCS, guard names the missing object or bucket
            raise FileNotFoundError(f"{path}: no such file") from None
        except PermissionError:  # local; on GCS, guard says which grant is missing
            raise PermissionError(f"{path}: permission denied to read; give the job read access to it") from None
    return _GuardedReader(path, stream) if is_remote(path) else stream


def special_kind(path: str) -> str | None:
    """What a local path is when it is not a regular file ("FIFO", "socket", "device", "directory"), else None.

    A missing path (or a dangling link) is None: opening it then says it is missing.
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "directory" if stat.S_ISDIR(mode) else "device"


def refuse_special(path: str) -> None:
    """A one-line error for a path that is not a regular file: opening a FIFO would wait for a writer for ever."""
    kind = special_kind(path)
    if kind is not None:
        raise OSError(f"{path}: a {kind}, not a regular file; nextword reads only regular files: name a file")


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
        # A new file, never an existing one or a link's target; the rename then replaces the name at `path`
        # (a symbolic link there is replaced, not followed; a hard link's other names keep the old bytes).
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666), "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the rename must never publish a file whose bytes are not on disk yet
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def create_new(path: str, text: str) -> bool:
    """Writes a local file whole at `path` only if nothing is there (not even a link); False if something is.

    Of two processes creating one path at the same time exactly one gets True: the file is written under a
    temporary name and hard-linked to `path`, which fails when the name is taken.
    """
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666), "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


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


class Matched(NamedTuple):
    """A glob's regular files, and what it matched that cannot be read as one (local only: gs:// has neither)."""

    files: list[tuple[str, int]]  # (path, size), sorted by path
    not_regular: list[str]  # FIFOs, sockets, devices: opening a FIFO would wait for a writer for ever
    dangling_links: list[str]  # symbolic links to nothing (Beam's listing drops them without a word)


def match_regular(pattern: str) -> Matched:
    """match(), with the entries that are not regular files set apart; none of them is opened."""
    matched = match(pattern)
    if is_remote(pattern):
        return Matched(matched, [], [])
    special = [path for path, _ in matched if special_kind(path) is not None]
    dangling = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.islink(p) and not os.path.exists(p))
    skipped = set(special)
    return Matched([m for m in matched if m[0] not in skipped], special, dangling)


def makedirs(path: str, key: str = "") -> list[str]:
    """Creates the directory `path` (a no-op on gs://); a file in its place is one line naming `key`.

    Returns the folders it created, deepest first (for remove_empty_folders when the job stops early).
    """
    if is_remote(path):
        return []
    created = list(itertools.takewhile(lambda p: not os.path.lexists(p), [path, *map(str, Path(path).parents)]))
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        # os says only "File exists": say which path is a file and which setting to change.
        blocker = next(p for p in (path, *Path(path).parents) if os.path.isfile(p))
        where = f"{key}: " if key else ""
        raise NotADirectoryError(
            f"{where}{path}: {blocker} is a file, not a directory; set {key or 'the output path'} to a directory"
        ) from None
    return created


def remove_empty_folders(folders: Iterable[str]) -> None:
    """Removes each of `folders` (local, deepest first) that is empty; a folder with anything in it stays."""
    for folder in folders:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


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


def crc32c_all(paths: Iterable[str]) -> dict[str, str]:
    """{path: crc32c(path)}: the files' contents, for telling the same bytes from edited ones (a few
    Cloud Storage requests at a time; locally each file is read once)."""
    paths = list(paths)
    with ThreadPoolExecutor(max_workers=16 if any(is_remote(p) for p in paths) else 1) as pool:
        return dict(zip(paths, pool.map(crc32c, paths), strict=True))


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
        found = json.loads(read_text(path))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


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
    """The file a path names, whatever its spelling: links resolved (two spellings of one file compare equal)."""
    return path.rstrip("/") if is_remote(path) else os.path.realpath(path)


def within(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or inside it, as files (os.path.realpath), not as spellings."""
    path, folder = _normal(path), _normal(folder)
    return path == folder or path.startswith(folder.rstrip("/" if is_remote(folder) else os.sep) + "/")


def _listed(output_dir: str, marker: str | None, listed_key: str | None, trust: Callable[[dict], bool]) -> list[str]:
    """The marker itself and, when nextword wrote it, the files it lists (a foreign list names nothing)."""
    listed = [marker] if marker else []
    if marker and listed_key:
        previous = _previous_marker(join(output_dir, marker))
        if previous and trust(previous):
            listed += [rel for rel in _marker_files(previous, listed_key) if _inside(rel)]
    return listed


def _planned(output_dir: str, owned: list[Owned], listed: list[str]) -> list[str]:
    if is_remote(output_dir):
        return _plan_remote(output_dir, owned, listed)
    return _plan_local(output_dir, owned, listed) if os.path.isdir(output_dir) else []


def clear_owned(
    output_dir: str,
    owned: Iterable[Owned],
    *,
    marker: str | None = None,
    listed_key: str | None = None,
    trust: Callable[[dict], bool] = lambda _: False,
    keep: Iterable[str] = (),
    spare: Iterable[str] = (),
) -> None:
    """Deletes what a stage wrote to `output_dir` before, and nothing else.

    Deleted: the commit marker `marker` (first: a rerun that fails never looks
    complete), the files that marker lists under `listed_key` (relative paths
    inside `output_dir`) when `trust` says nextword wrote the marker (its type,
    format_version and fingerprint), and every entry matching `owned`. Everything is
    planned before anything goes: a symbolic link on the way (a folder or
    file inside `output_dir`; `output_dir` itself may be a link) is refused
    with one line naming it, and so is a path in `keep` (the job's inputs)
    that would be deleted. `spare` (paths relative to `output_dir`) stays: the
    committed part of a job being resumed. Links are never followed, locally or on gs://.
    """
    owned = list(owned)
    planned = _planned(output_dir, owned, _listed(output_dir, marker, listed_key, trust))
    spared = {_normal(join(output_dir, rel)) for rel in spare}
    planned = [path for path in dict.fromkeys(planned) if _normal(path) not in spared]  # listed and matched overlap
    kept = {_normal(path): path for path in keep}  # as files: an input named through a link is still caught
    for path in planned:
        normal = _normal(path)
        folder = not is_remote(path) and os.path.isdir(path)  # a leftover folder: none of the inputs inside it
        hit = kept.get(normal) or next((k for n, k in kept.items() if folder and n.startswith(normal + os.sep)), None)
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


# --- which output folders are nextword's ---------------------------------------
# A stage's mark in each output folder it writes, written before anything else there and never cleared:
# files with the stage's names in a folder without it were not written by nextword (a user's, another tool's).
OWNER_FILE = ".nextword-output.json"
OWNER_TYPE = "nextword.output"
OWNER_FORMAT_VERSION = 1


def _owner_mark(stage: str) -> dict:
    return {"type": OWNER_TYPE, "format_version": OWNER_FORMAT_VERSION, "stage": stage}


def claim(
    output_dir: str,
    stage: str,
    owned: Iterable[Owned] = (),
    names: Iterable[str] = (),
    *,
    marker: str | None = None,
    listed_key: str | None = None,
    trust: Callable[[dict], bool] = lambda _: False,
    key: str = "output_dir",
) -> None:
    """Makes sure that all a `stage` run would delete or overwrite in `output_dir` is nextword's, then marks it.

    A folder already marked by `stage` is the stage's. An unmarked one may hold
    nothing the run deletes (`owned` entries, the `marker` and the files it lists)
    or overwrites (`names`, relative paths), unless its `marker` is one nextword
    wrote (`trust`: the output of a nextword from before these marks, adopted).
    Otherwise one line names the first such file; a folder marked by another
    stage is refused too (two stages in one folder would overwrite each other).
    """
    path = join(output_dir, OWNER_FILE)
    if exists(path):
        found = _previous_marker(path)
        if found == _owner_mark(stage):
            return
        other = found.get("stage") if found.get("type") == OWNER_TYPE else None
        if other == stage:
            raise ValueError(
                f"{path}: format_version {found.get('format_version')!r}, this nextword writes "
                f"{OWNER_FORMAT_VERSION}: choose another {key}, or upgrade nextword if it wrote this one"
            )
        if other:
            raise ValueError(f"{key}: {output_dir} holds the output of nextword {other}; choose another {key}")
        raise ValueError(f"{path}: not written by nextword: choose an empty {key} or remove it")
    foreign = _present(output_dir, list(owned), _listed(output_dir, marker, listed_key, trust), names)
    if foreign and not (marker and trust(_previous_marker(join(output_dir, marker)))):
        raise ValueError(f"{foreign[0]}: not written by nextword: choose an empty {key} or remove it")
    write_marker(path, _owner_mark(stage))


def _present(output_dir: str, owned: list[Owned], listed: list[str], names: Iterable[str]) -> list[str]:
    """What exists in output_dir among the entries a run deletes (owned, listed) or overwrites (names)."""
    names = list(names)
    found = _planned(output_dir, owned, [*listed, *names])
    if is_remote(output_dir):  # a name may be a folder: on gs://, the objects under it
        root = output_dir.rstrip("/")
        found += [p for name in names for p, _ in match(f"{root}/{name}/**")][:1]
    else:
        found += [p for name in names if os.path.isdir(p := os.path.join(output_dir, name))]
    return found


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
