"""Vertex AI hyperparameter tuning: the rendered job in the official type, trial arguments, the trial's metric."""

from __future__ import annotations

import json
import os

import pytest
from google.cloud.aiplatform_v1.types import HyperparameterTuningJob, StudySpec

from nextword import cli
from nextword import config as config_lib
from nextword.cloud import tuning
from nextword.config import ConfigError

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOUD_YAML = os.path.join(REPO, "configs", "cloud.yaml")
PARAMETERS = [
    "train.optimizer.learning_rate=0.0003:0.01:log",
    "train.model.num_layers=1:3",
    "train.model.units=128,512,256",
    "train.model.cell=lstm,gru",
    "train.carry_state=true,false",
]


def _tuning_overrides(*parameters: str, trials: int = 12) -> list[str]:
    listed = "[" + ", ".join(f'"{p}"' for p in parameters) + "]"
    return [f"cloud.tuning.parameters={listed}", f"cloud.tuning.max_trial_count={trials}",
            "cloud.tuning.parallel_trial_count=3"]  # fmt: skip


def test_the_rendered_tuning_job_parses_into_the_official_type(tmp_path):
    argv = ["cloud", "render", "--config", CLOUD_YAML, "--out", str(tmp_path)]
    assert cli.main([*argv, *(a for o in _tuning_overrides(*PARAMETERS) for a in ("--set", o))]) == 0
    job = HyperparameterTuningJob.from_json((tmp_path / "vertex_tuning.json").read_text())  # unknown fields fail
    assert (job.max_trial_count, job.parallel_trial_count) == (12, 3)
    (metric,) = job.study_spec.metrics
    assert metric.metric_id == "valid_perplexity" and metric.goal == StudySpec.MetricSpec.GoalType.MINIMIZE
    rate, layers, units, cell, carry = job.study_spec.parameters
    assert rate.parameter_id == "train_optimizer_learning_rate"
    assert (rate.double_value_spec.min_value, rate.double_value_spec.max_value) == (0.0003, 0.01)
    assert rate.scale_type == StudySpec.ParameterSpec.ScaleType.UNIT_LOG_SCALE
    assert (layers.integer_value_spec.min_value, layers.integer_value_spec.max_value) == (1, 3)
    assert list(units.discrete_value_spec.values) == [128.0, 256.0, 512.0]
    assert list(cell.categorical_value_spec.values) == ["lstm", "gru"]
    assert list(carry.categorical_value_spec.values) == ["true", "false"]
    (pool,) = job.trial_job_spec.worker_pool_specs
    assert list(pool.container_spec.args) == [
        "train", "--config", "gs://my-bucket/nextword/config.yaml", "--set", "train.strategy=mirrored",
    ]  # fmt: skip
    assert job.trial_job_spec.base_output_directory.output_uri_prefix == "gs://my-bucket/nextword/runs/tuning"
    assert "hyperparameterTuningJobs vertex_tuning.json" in (tmp_path / "vertex.sh").read_text()
    untuned = tmp_path / "untuned"
    assert cli.main(["cloud", "render", "--config", CLOUD_YAML, "--out", str(untuned)]) == 0
    assert "vertex_tuning.json" not in os.listdir(untuned)  # max_trial_count 0: no tuning job


def test_every_value_vertex_could_pick_is_a_valid_config():
    """The trial arguments of each parameter's extremes and choices map onto keys the config accepts."""
    specs = [tuning.parameter_spec(p, i) for i, p in enumerate(PARAMETERS)]
    for spec in specs:
        picks = (
            spec.get("doubleValueSpec", spec.get("integerValueSpec", {})).values()
            or spec.get("discreteValueSpec", spec.get("categoricalValueSpec", {}))["values"]
        )
        for value in picks:
            overrides = tuning.trial_overrides([f"--{spec['parameterId']}={value}"])
            config_lib.from_dict(None, overrides)  # raises on a value the key refuses


def test_trial_arguments_map_onto_config_keys_and_anything_else_is_one_line():
    overrides = tuning.trial_overrides(["--train_model_units=256.0", "--train_optimizer_learning_rate", "0.003"])
    assert overrides == ["train.model.units=256", "train.optimizer.learning_rate=0.003"]
    config = config_lib.from_dict(None, overrides)
    assert (config.train.model.units, config.train.optimizer.learning_rate) == (256, 0.003)
    for bad in (["--train_model_unitz=3"], ["--runner", "DataflowRunner"], ["stray"], ["--train_model_units"]):
        with pytest.raises(ConfigError) as err:
            tuning.trial_overrides(bad)
        assert str(err.value).startswith(bad[0]) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("train.model.unitz=1:3", "train.model.unitz is not a train.* key"),
        ("predict.top_k=1:3", "predict.top_k is not a train.* key"),
        ("train.model.units", "is not KEY=LOW:HIGH[:log] or KEY=A,B,C"),
        ("train.model.units=3:1", "the range needs LOW < HIGH"),
        ("train.optimizer.learning_rate=0:0.1:log", "and LOW > 0 on a log scale"),
        ("train.model.cell=a:b", "a range is LOW:HIGH or LOW:HIGH:log, of a number key"),
        ("train.model.units=1.5:3", "'1.5' is not an integer"),
        ("train.model.units=64,64", "must be distinct"),
        ("train.carry_state=yes,no", "the choices of train.carry_state are true and false"),
    ],
)
def test_a_bad_parameter_is_one_line_naming_its_entry(entry, message):
    with pytest.raises(ConfigError) as err:
        tuning.parameter_spec(entry, 2)
    assert str(err.value).startswith("cloud.tuning.parameters[2]: ") and message in str(err.value)


def test_trial_counts_are_checked():
    for overrides, message in [
        (["cloud.tuning.max_trial_count=-1"], "cloud.tuning.max_trial_count: must be >= 0"),
        (["cloud.tuning.max_trial_count=2", "cloud.tuning.parallel_trial_count=3"], "must be 1..cloud.tuning"),
    ]:
        with pytest.raises(ConfigError, match=message):
            tuning.check_counts(config_lib.from_dict(None, overrides))


def test_the_trial_metric_is_written_as_cloudml_hypertune_writes_it(tmp_path):
    config = config_lib.from_dict(None, ["cloud.tuning.metric=valid_perplexity"])
    metrics = {"valid": {"perplexity": 123.25, "loss": 4.81}, "train": {"steps": 400}}
    path = tmp_path / "hypertune" / "output.metrics"
    env = {"CLOUD_ML_TRIAL_ID": "7", "CLOUD_ML_HP_METRIC_FILE": str(path)}
    assert tuning.report_trial_metric(config, metrics, env) == str(path)
    (line,) = path.read_text().splitlines()
    assert list(json.loads(line)) == sorted(json.loads(line))  # json.dumps(sort_keys=True), as hypertune
    report = json.loads(line)
    assert isinstance(report.pop("timestamp"), float)
    assert report == {"trial": "7", "valid_perplexity": "123.25", "global_step": "400"}
    loss = config_lib.from_dict(None, ["cloud.tuning.metric=valid_loss"])
    tuning.report_trial_metric(loss, metrics, env)
    assert json.loads(path.read_text())["valid_loss"] == "4.81"  # the file holds the latest report
    outside = tmp_path / "outside.metrics"
    assert tuning.report_trial_metric(config, metrics, {"CLOUD_ML_HP_METRIC_FILE": str(outside)}) is None
    assert not outside.exists()  # not a trial: nothing written
