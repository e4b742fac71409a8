"""One trainer per model_dir at a time (the lock of nextword/storage/job_lock.py on `<model_dir>/LOCK.json`,
refreshed at every checkpoint), and the settings a resumed run must keep.
"""

from __future__ import annotations

from nextword import config as config_lib
from nextword.config import Config
from nextword.storage.job_lock import LOCK_FILE, JobLock

__all__ = ["LOCK_FILE", "RunLock", "check_resume_settings"]

# The keys (train.model: all of it) a resumed run must share with the run it resumes: those whose field
# in nextword/config.py says fixed_on_resume.
RESUME_FIXED = config_lib.keys_where("fixed_on_resume")


class RunLock(JobLock):
    """The trainer's lock on its train.model_dir, refreshed at every checkpoint."""

    def __init__(self, model_dir: str):
        super().__init__(model_dir, "train.model_dir", "trainer")


def check_resume_settings(previous_yaml: str, config: Config, source: str) -> None:
    """Refuses a resumed run whose RESUME_FIXED settings differ from the run it resumes (one line)."""
    before = config_lib.from_dict(config_lib.yaml_to_dict(previous_yaml, source))
    changed = [key for key in RESUME_FIXED if config_lib.value_at(before, key) != config_lib.value_at(config, key)]
    if changed:
        raise ValueError(
            f"{source}: resuming with other {', '.join(changed)} than the run being resumed; set them back, "
            "or use a new train.model_dir to start over"
        )
