"""What a run adds to its TensorBoard logs at the end: its hyperparameters and the n-gram baseline.

- logs/ (the run's root): the hparams plugin's session, every train.* setting, with the validation
  perplexity as its metric, so the HParams dashboard (and Vertex AI TensorBoard) compares runs by setting;
- logs/valid/: `baseline_perplexity`, the Kneser-Ney model's validation perplexity on the same tokens, at the
  first and the last step: a flat reference line on the same chart as the LSTM's `perplexity`.
"""

from __future__ import annotations

from nextword import config as config_lib
from nextword.config import Config

BASELINE_TAG = "baseline_perplexity"
# The validation scalars trainer/loop.py writes under logs/valid/; the HParams dashboard shows them per run.
VALID_METRICS = ("perplexity", "loss", BASELINE_TAG)


def hparams(config: Config) -> dict[str, bool | int | float | str]:
    """train.* as flat dotted keys with values the hparams plugin takes (a list becomes its text)."""
    flat: dict[str, bool | int | float | str] = {}

    def walk(prefix: str, section: dict) -> None:
        for key, value in section.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            else:
                flat[prefix + key] = value if isinstance(value, bool | int | float | str) else str(value)

    walk("train.", config_lib.section_to_dict(config.train))
    return flat


def write_run_summary(log_dir: str, config: Config, metrics: dict, last_step: int) -> None:
    """The hparams session under `log_dir` and, when the baseline compared, its reference line in valid/."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    values = hparams(config)
    root = tf.summary.create_file_writer(log_dir)
    with root.as_default():
        hp.hparams_config(
            hparams=[hp.HParam(name) for name in values],
            metrics=[hp.Metric(tag, group="valid") for tag in VALID_METRICS],
        )
        hp.hparams(values, trial_id=config.train.model_dir)
    root.flush()
    section = metrics.get("baseline", {})
    if section.get("status") == "ok":
        writer = tf.summary.create_file_writer(f"{log_dir.rstrip('/')}/valid")
        with writer.as_default():
            for step in sorted({0, last_step}):
                tf.summary.scalar(BASELINE_TAG, section["valid"]["perplexity"], step=step)
        writer.flush()
