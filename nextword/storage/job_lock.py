"""One job per output folder at a time: `<folder>/LOCK.json` names the job that writes there.

The lock names its holder (host, pid, Vertex AI job id, a nonce) and is
refreshed while the job runs (the trainer at every checkpoint, a Beam stage's
launcher from a thread while it waits for its pipeline). Another job refuses to
start while it is held, unless the holder is gone: a dead pid on this host, the
same Vertex AI job (a replica restarted after preemption), or no refresh for
STALE_AFTER_S. Of two jobs that start in the same instant, one goes on: a local
lock file is created only where none is; on Cloud Storage (and when taking over)
both write it, read it back after a moment, and only the one whose nonce is there goes on.
A LOCK.json that is not a lock's record is never overwritten.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

from nextword import storage
from nextword.artifacts import versioned

_LOG = logging.getLogger(__name__)

LOCK_FILE = "LOCK.json"
STALE_AFTER_S = 1800.0  # longer than any checkpoint interval a user would set
_SETTLE_S = 0.2
# A lock's record: each field and the types it may have (anything else was not written by a lock).
_FIELDS = {"host": (str,), "pid": (int,), "job": (str, type(None)), "nonce": (str,), "refreshed_unix": (int, float)}


class JobLock:
    """The lock on `folder`, named in messages by the setting `key` that chose it and the `job` that holds it."""

    def __init__(self, folder: str, key: str, job: str):
        self.path = storage.join(folder, LOCK_FILE)
        self.key = key  # e.g. "train.model_dir"
        self.job = job  # e.g. "trainer", "nextword predict"
        self.nonce = uuid.uuid4().hex
        self.vertex_job = os.environ.get("CLOUD_ML_JOB_ID", "")

    def _record(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "job": self.vertex_job, "nonce": self.nonce,
                "refreshed_unix": time.time()}  # fmt: skip

    def _held(self) -> dict:
        """The record in the lock file; a file that is not one is one line (it is never overwritten)."""
        remove = f"if no {self.job} runs on this {self.key}, remove it (each run writes its own)"
        held = versioned.read_json(self.path, remove)
        wrong = [name for name, kinds in _FIELDS.items() if type(held.get(name)) not in kinds]
        if wrong:
            raise ValueError(f"{self.path}: not a nextword lock (no valid {', '.join(wrong)}); {remove}")
        return held

    def _gone(self, held: dict) -> str:
        """Why the holder no longer runs ("" if it may still)."""
        if self.vertex_job and held["job"] == self.vertex_job:
            return "it is this Vertex AI job, restarted"
        if held["host"] == socket.gethostname():
            try:
                os.kill(held["pid"], 0)
            except ProcessLookupError:
                return f"pid {held['pid']} has exited"
            except PermissionError:
                pass  # alive, another user's
            return ""
        age = time.time() - held["refreshed_unix"]
        return f"not refreshed for {age:.0f} s" if age > STALE_AFTER_S else ""

    def acquire(self) -> None:
        taking_over = storage.exists(self.path)
        if taking_over:
            held = self._held()
            why = self._gone(held)
            if not why:
                age = time.time() - held["refreshed_unix"]
                raise ValueError(
                    f"{self.path}: {self.key} is in use by pid {held['pid']} on {held['host']} "
                    f"(refreshed {age:.0f} s ago); wait for it, or use another {self.key} "
                    f"(a lock not refreshed for {STALE_AFTER_S:.0f} s is taken over)"
                )
            _LOG.warning("%s: taking over the lock of pid %s on %s: %s", self.path, held["pid"], held["host"], why)
        same_time = f"{self.path}: another {self.job} started on this {self.key} at the same time"
        if not taking_over and not storage.is_remote(self.path):  # a local file can be created exclusively
            if not storage.create_new(self.path, json.dumps(self._record())):
                raise ValueError(same_time)
            return
        storage.write_text(self.path, json.dumps(self._record()))
        time.sleep(_SETTLE_S)
        if json.loads(storage.read_text(self.path)).get("nonce") != self.nonce:
            raise ValueError(same_time)

    def refresh(self) -> None:
        storage.write_text(self.path, json.dumps(self._record()))

    def release(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # gone or replaced: nothing of ours to remove
            if json.loads(storage.read_text(self.path)).get("nonce") == self.nonce:
                storage.delete(self.path)

    @contextlib.contextmanager
    def held(self, refresh_every_s: float = STALE_AFTER_S / 4) -> Iterator[None]:
        """The lock for the block, refreshed from a thread while it runs, released when it ends."""
        self.acquire()
        stop = threading.Event()
        refresher = threading.Thread(target=self._keep_fresh, args=(stop, refresh_every_s), daemon=True)
        refresher.start()
        try:
            yield
        finally:
            stop.set()
            refresher.join()
            self.release()

    def _keep_fresh(self, stop: threading.Event, every_s: float) -> None:
        while not stop.wait(every_s):
            try:
                self.refresh()
            except OSError as err:  # a lost refresh only shortens the time before another job may take over
                _LOG.warning("%s: could not refresh the lock: %s", self.path, err)
