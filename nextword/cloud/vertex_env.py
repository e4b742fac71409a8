"""Vertex AI's training conventions: the output folders a custom job's environment names.

With a job's `baseOutputDirectory` set, Vertex AI gives every replica

    AIP_MODEL_DIR             <base>/model        where it looks for the model (Model Registry upload)
    AIP_CHECKPOINT_DIR        <base>/checkpoints  checkpoints
    AIP_TENSORBOARD_LOG_DIR   <base>/logs         what a Vertex AI TensorBoard instance reads

The trainer writes checkpoints to <train.model_dir>/checkpoints and TensorBoard events to
<train.model_dir>/logs, so train.model_dir becomes <base>: both land where Vertex looks, and the bundle goes to
AIP_MODEL_DIR instead of <train.model_dir>/bundle. Unset, the config's paths apply as everywhere else.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
from collections.abc import Mapping

from nextword.config import Config, ConfigError, derived_path

_LOG = logging.getLogger(__name__)

MODEL_DIR = "AIP_MODEL_DIR"
CHECKPOINT_DIR = "AIP_CHECKPOINT_DIR"
TENSORBOARD_LOG_DIR = "AIP_TENSORBOARD_LOG_DIR"
# The trainer's own folder names under train.model_dir (trainer/checkpoints.py, trainer/loop.py).
_UNDER_MODEL_DIR = {CHECKPOINT_DIR: "checkpoints", TENSORBOARD_LOG_DIR: "logs"}


def _parent(env: Mapping[str, str], name: str) -> str:
    path = env[name].rstrip("/")
    if posixpath.basename(path) != _UNDER_MODEL_DIR[name]:
        raise ConfigError(
            f"{name}={env[name]}: nextword writes {_UNDER_MODEL_DIR[name]} under train.model_dir, so this "
            f"folder must end in /{_UNDER_MODEL_DIR[name]}; set the job's baseOutputDirectory instead of {name}"
        )
    return posixpath.dirname(path)


def base_output_dir(env: Mapping[str, str]) -> str | None:
    """<base> from AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR (None when neither is set)."""
    parents = {name: _parent(env, name) for name in _UNDER_MODEL_DIR if env.get(name)}
    if len(set(parents.values())) > 1:
        listed = ", ".join(f"{name}={env[name]}" for name in parents)
        raise ConfigError(f"{listed}: not in one folder; set the job's baseOutputDirectory instead of each")
    return next(iter(parents.values()), None)


def training_config(config: Config, env: Mapping[str, str]) -> Config:
    """The config with train.model_dir = Vertex's <base> when the job's environment names one.

    The environment wins (it is where Vertex AI and its TensorBoard look); a train.model_dir set to another
    folder is one warning line.
    """
    base = base_output_dir(env)
    if base is None:
        return config
    configured = config.train.model_dir
    if configured.rstrip("/") != base and configured != derived_path(config, "train.model_dir"):
        _LOG.warning(
            "train.model_dir=%s ignored: %s and %s (Vertex AI's job environment) win; training in %s",
            configured, CHECKPOINT_DIR, TENSORBOARD_LOG_DIR, base,
        )  # fmt: skip
    return dataclasses.replace(config, train=dataclasses.replace(config.train, model_dir=base))


def bundle_dir(default: str, env: Mapping[str, str]) -> str:
    """Where the bundle goes: AIP_MODEL_DIR when set (Vertex AI uploads the model from there), else `default`."""
    return env.get(MODEL_DIR, "").rstrip("/") or default
