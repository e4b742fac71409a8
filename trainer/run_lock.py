"""One trainer per model_dir at a time, and the settings a resumed run must keep.

`<model_dir>/LOCK.json` names its holder (host, pid, Vertex AI job id, a
nonce) and is refreshed at every checkpoint. Another trainer refuses to start
while it is held, unless the holder is gone: a dead pid on this host, the same
Vertex AI job (a replica restarted after preemption), or no refresh for
STALE_AFTER_S. Two trainers that start in the same instant both write the
file; each reads it back after a moment and only the one whose nonce is there
goes on.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid

from nextword import config as config_lib
from nextword import storage
from nextword.artifacts import versioned
from nextword.config import Config

_LOG = logging.getLogger(__name__)

LOCK_FILE = "LOCK.json"
STALE_AFTER_S = 1800.0  # longer than any checkpoint interval a user would set
_SETTLE_S = 0.2
# The keys (train.model: all of it) a resumed run must share with the run it resumes: those whose field
# in nextword/config.py says fixed_on_resume.
RESUME_FIXED = config_lib.keys_where("fixed_on_resume")


class RunLock:
    def __init__(self, model_dir: str):
        self.path = storage.join(model_dir, LOCK_FILE)
        self.nonce = uuid.uuid4().hex
        self.job = os.environ.get("CLOUD_ML_JOB_ID", "")

    def _record(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "job": self.job, "nonce": self.nonce,
                "refreshed_unix": time.time()}  # fmt: skip

    def _gone(self, held: dict) -> str:
        """Why the holder no longer trains ("" if it may still)."""
        if self.job and held.get("job") == self.job:
            return "it is this Vertex AI job, restarted"
        if held.get("host") == socket.gethostname():
            try:
                os.kill(int(held["pid"]), 0)
            except ProcessLookupError:
                return f"pid {held['pid']} has exited"
            except PermissionError:
                pass  # alive, another user's
            return ""
        age = time.time() - float(held.get("refreshed_unix", 0))
        return f"not refreshed for {age:.0f} s" if age > STALE_AFTER_S else ""

    def acquire(self) -> None:
        if storage.exists(self.path):
            held = versioned.read_json(
                self.path, "if no trainer runs on this train.model_dir, remove it (each run writes its own)"
            )
            why = self._gone(held)
            if not why:
                age = time.time() - float(held.get("refreshed_unix", 0))
                raise ValueError(
                    f"{self.path}: train.model_dir is in use by pid {held.get('pid')} on {held.get('host')} "
                    f"(refreshed {age:.0f} s ago); wait for it, or use another train.model_dir "
                    f"(a lock not refreshed for {STALE_AFTER_S:.0f} s is taken over)"
                )
            _LOG.warning(
                "%s: taking over the lock of pid %s on %s: %s", self.path, held.get("pid"), held.get("host"), why
            )
        storage.write_text(self.path, json.dumps(self._record()))
        time.sleep(_SETTLE_S)
        if json.loads(storage.read_text(self.path)).get("nonce") != self.nonce:
            raise ValueError(f"{self.path}: another trainer started on this train.model_dir at the same time")

    def refresh(self) -> None:
        storage.write_text(self.path, json.dumps(self._record()))

    def release(self) -> None:
        if storage.exists(self.path) and json.loads(storage.read_text(self.path)).get("nonce") == self.nonce:
            storage.delete(self.path)


def check_resume_settings(previous_yaml: str, config: Config, source: str) -> None:
    """Refuses a resumed run whose RESUME_FIXED settings differ from the run it resumes (one line)."""
    before = config_lib.from_dict(config_lib.yaml_to_dict(previous_yaml, source))
    changed = [key for key in RESUME_FIXED if config_lib.value_at(before, key) != config_lib.value_at(config, key)]
    if changed:
        raise ValueError(
            f"{source}: resuming with other {', '.join(changed)} than the run being resumed; set them back, "
            "or use a new train.model_dir to start over"
        )
