"""Vertex AI hyperparameter tuning: `cloud.tuning` -> a HyperparameterTuningJob, trials' arguments, their metric.

    cloud:
      tuning:
        parameters:
          - train.optimizer.learning_rate=0.0003:0.01:log   # a range (on a log scale)
          - train.model.units=128,256,512                    # choices
          - train.model.dropout=0.1:0.5
        metric: valid_perplexity
        max_trial_count: 20
        parallel_trial_count: 4

`nextword cloud render` writes vertex_tuning.json (the hyperparameterTuningJobs.create body). Each trial runs
`nextword train` with Vertex AI's `--<parameter id>=<value>` arguments appended; a parameter's id is its key
with `_` for `.` (`--train_optimizer_learning_rate=0.003`), mapped back onto the key. A trial's folders come
from the job's baseOutputDirectory (`<cloud.runs_dir>/tuning/<trial>/`, through the AIP_* variables), and at
the end it reports `cloud.tuning.metric` on the validation split as cloudml-hypertune does, which is what
Vertex AI's tuning service reads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import typing
from collections.abc import Mapping

from nextword.config import Config, ConfigError

# cloudml-hypertune's file (hypertune/hypertune.py): CLOUD_ML_HP_METRIC_FILE, else this path.
METRIC_FILE_ENV = "CLOUD_ML_HP_METRIC_FILE"
DEFAULT_METRIC_FILE = "/tmp/hypertune/output.metrics"
TRIAL_ID_ENV = "CLOUD_ML_TRIAL_ID"  # set by Vertex AI in every trial
TUNABLE_SECTION = "train"
# cloud.tuning.metric -> the validation figure in metrics.json reported for it.
METRIC_FIGURES = {"valid_perplexity": "perplexity", "valid_loss": "loss"}


def _leaf_types(cls: type = Config, prefix: str = "") -> dict[str, type]:
    """{dotted key: annotated type} of every leaf key of the config tree."""
    out: dict[str, type] = {}
    for field in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[field.name]
        key = prefix + field.name
        if dataclasses.is_dataclass(tp):
            out.update(_leaf_types(tp, key + "."))
        else:
            out[key] = tp
    return out


def tunable_keys() -> dict[str, type]:
    """The keys a trial may set (train.*, scalars only) and their types."""
    scalar = (int, float, str, bool)
    return {k: tp for k, tp in _leaf_types().items() if k.startswith(f"{TUNABLE_SECTION}.") and tp in scalar}


def parameter_id(key: str) -> str:
    """The id Vertex AI passes back as `--<id>`: the key with `_` for `.`."""
    return key.replace(".", "_")


def _number(text: str, tp: type, where: str) -> int | float:
    try:
        return tp(text) if tp is int else float(text)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not {'an integer' if tp is int else 'a number'}") from None


def parameter_spec(entry: str, index: int) -> dict:
    """One `KEY=LOW:HIGH[:log]` or `KEY=A,B,C` entry -> a StudySpec.ParameterSpec (REST JSON)."""
    where = f"cloud.tuning.parameters[{index}]"
    key, sep, values = entry.partition("=")
    key = key.strip()
    types = tunable_keys()
    if not sep or not values.strip():
        raise ConfigError(f"{where}: {entry!r} is not KEY=LOW:HIGH[:log] or KEY=A,B,C")
    if key not in types:
        raise ConfigError(f"{where}: {key} is not a {TUNABLE_SECTION}.* key of one value, e.g. train.model.units")
    tp = types[key]
    spec: dict = {"parameterId": parameter_id(key)}
    if ":" in values:
        low, high, *scale = values.split(":")
        if tp not in (int, float) or scale not in ([], ["log"]):
            raise ConfigError(f"{where}: a range is LOW:HIGH or LOW:HIGH:log, of a number key ({key} is {tp.__name__})")
        lo, hi = _number(low, tp, where), _number(high, tp, where)
        if not lo < hi or (scale and lo <= 0):
            raise ConfigError(f"{where}: the range needs LOW < HIGH{' and LOW > 0 on a log scale' if scale else ''}")
        name = "integerValueSpec" if tp is int else "doubleValueSpec"
        spec[name] = {"minValue": str(lo), "maxValue": str(hi)} if tp is int else {"minValue": lo, "maxValue": hi}
        spec["scaleType"] = "UNIT_LOG_SCALE" if scale else "UNIT_LINEAR_SCALE"
        return spec
    choices = [v.strip() for v in values.split(",")]
    if len(set(choices)) != len(choices) or "" in choices:
        raise ConfigError(f"{where}: the choices of {key} must be distinct and non-empty")
    if tp in (int, float):
        spec["discreteValueSpec"] = {"values": sorted(float(_number(v, tp, where)) for v in choices)}
    else:
        if tp is bool and not set(choices) <= {"true", "false"}:
            raise ConfigError(f"{where}: the choices of {key} are true and false")
        spec["categoricalValueSpec"] = {"values": choices}
    return spec


def study_spec(config: Config) -> dict:
    tuning = config.cloud.tuning
    if not tuning.parameters:
        raise ConfigError("cloud.tuning.parameters: empty; list train.* keys to tune, e.g. train.model.units=64,128")
    specs = [parameter_spec(entry, i) for i, entry in enumerate(tuning.parameters)]
    ids = [spec["parameterId"] for spec in specs]
    if len(set(ids)) != len(ids):
        raise ConfigError("cloud.tuning.parameters: a key is listed twice")
    return {"metrics": [{"metricId": tuning.metric, "goal": "MINIMIZE"}], "parameters": specs}


def check_counts(config: Config) -> None:
    tuning = config.cloud.tuning
    if tuning.max_trial_count > 0 and not 1 <= tuning.parallel_trial_count <= tuning.max_trial_count:
        raise ConfigError(
            f"cloud.tuning.parallel_trial_count: must be 1..cloud.tuning.max_trial_count "
            f"({tuning.max_trial_count}), got {tuning.parallel_trial_count}"
        )


def trial_overrides(extra: list[str]) -> list[str]:
    """A trial's `--<id>=<value>` / `--<id> <value>` arguments as `KEY=VALUE` overrides (--set's form).

    Any other argument is a one-line error naming it, as `nextword train` refuses unknown options.
    """
    types = tunable_keys()
    keys = {parameter_id(key): key for key in types}
    out, rest = [], list(extra)
    while rest:
        arg = rest.pop(0)
        name, sep, value = arg.partition("=")
        if not name.startswith("--") or name[2:] not in keys:
            raise ConfigError(
                f"{arg}: not an option of nextword train nor a tuning parameter (a trial passes --<train.* key "
                "with _ for .>=VALUE, e.g. --train_model_units=256)"
            )
        if not sep:
            if not rest:
                raise ConfigError(f"{arg}: needs a value")
            value = rest.pop(0)
        key = keys[name[2:]]
        if types[key] is int and value.endswith(".0"):  # Vertex AI passes a discrete value as a double ("256.0")
            value = value[:-2]
        out.append(f"{key}={value}")
    return out


def report_trial_metric(config: Config, metrics: dict, env: Mapping[str, str]) -> str | None:
    """In a Vertex AI trial (CLOUD_ML_TRIAL_ID set): writes the metric as cloudml-hypertune does; its path.

    One JSON line, keys sorted: timestamp, trial, <metric>: "<value>", global_step (values as strings).
    """
    if TRIAL_ID_ENV not in env:
        return None
    tag = config.cloud.tuning.metric
    path = env.get(METRIC_FILE_ENV, DEFAULT_METRIC_FILE)
    body = {
        "timestamp": time.time(),
        "trial": str(env[TRIAL_ID_ENV]),
        tag: str(float(metrics["valid"][METRIC_FIGURES[tag]])),
        "global_step": str(int(metrics["train"]["steps"])),
    }
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:  # the trial's one report; hypertune rewrites the file too
        f.write(json.dumps(body, sort_keys=True) + "\n")
    return path
