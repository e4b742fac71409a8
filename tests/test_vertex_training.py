"""Vertex AI's training conventions (AIP_* folders) and what a run adds to TensorBoard."""

from __future__ import annotations

import glob
import json
import logging
import os

import pytest

from nextword import config as config_lib
from nextword.cloud import vertex_env, vertex_tensorboard
from nextword.config import ConfigError

BASE = "gs://bucket/jobs/123"
VERTEX = {
    "AIP_MODEL_DIR": f"{BASE}/model/",
    "AIP_CHECKPOINT_DIR": f"{BASE}/checkpoints/",
    "AIP_TENSORBOARD_LOG_DIR": f"{BASE}/logs/",
}


@pytest.mark.unit
def test_the_job_environment_sets_model_dir_and_bundle_and_a_disagreeing_path_is_one_warning(caplog):
    configured = config_lib.from_dict(None, ["train.model_dir=runs/mine"])
    with caplog.at_level(logging.WARNING):
        config = vertex_env.training_config(configured, VERTEX)
    assert config.train.model_dir == BASE
    assert vertex_env.bundle_dir(f"{BASE}/bundle", VERTEX) == f"{BASE}/model"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"train.model_dir=runs/mine ignored: AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR (Vertex AI's job "
        f"environment) win; training in {BASE}"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the default model_dir was not a choice: nothing to warn about
        assert vertex_env.training_config(config_lib.from_dict(None, []), VERTEX).train.model_dir == BASE
    assert not caplog.records
    unset = config_lib.from_dict(None, ["train.model_dir=runs/mine"])
    assert vertex_env.training_config(unset, {}) is unset
    assert vertex_env.bundle_dir("runs/mine/bundle", {}) == "runs/mine/bundle"


@pytest.mark.unit
def test_folders_the_trainer_cannot_write_to_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"^AIP_CHECKPOINT_DIR=gs://b/ckpt: nextword writes checkpoints under "):
        vertex_env.base_output_dir({"AIP_CHECKPOINT_DIR": "gs://b/ckpt"})
    split = {"AIP_CHECKPOINT_DIR": "gs://b/one/checkpoints", "AIP_TENSORBOARD_LOG_DIR": "gs://b/two/logs"}
    with pytest.raises(ConfigError, match="not in one folder; set the job's baseOutputDirectory"):
        vertex_env.base_output_dir(split)


def _events(folder: str) -> list:
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*")))
    return [event for path in files for event in tf.compat.v1.train.summary_iterator(path)]


def _scalars(folder: str, tag: str) -> dict[int, float]:
    import tensorflow as tf

    return {
        event.step: float(tf.make_ndarray(value.tensor))
        for event in _events(folder)
        for value in event.summary.value
        if value.tag == tag
    }


@pytest.mark.train
def test_baseline_reference_line_and_hparams_are_written(tmp_path):
    config = config_lib.from_dict(None, ["train.model.units=64", "train.optimizer.learning_rate=0.002"])
    metrics = {"baseline": {"status": "ok", "valid": {"perplexity": 210.5}, "test": {"perplexity": 211.0}}}
    vertex_tensorboard.write_run_summary(str(tmp_path), config, metrics, last_step=40)
    assert _scalars(str(tmp_path / "valid"), vertex_tensorboard.BASELINE_TAG) == {0: 210.5, 40: 210.5}
    plugins = {v.metadata.plugin_data.plugin_name for e in _events(str(tmp_path)) for v in e.summary.value}
    assert plugins == {"hparams"}
    session = [v for e in _events(str(tmp_path)) for v in e.summary.value if v.tag == "_hparams_/session_start_info"]
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(session[0].metadata.plugin_data.content).session_start_info
    assert start.hparams["train.model.units"].number_value == 64
    assert start.hparams["train.optimizer.learning_rate"].number_value == pytest.approx(0.002)
    missing = tmp_path / "missing"
    vertex_tensorboard.write_run_summary(str(missing), config, {"baseline": {"status": "missing"}}, last_step=40)
    assert not (missing / "valid").exists()  # no baseline, no reference line


def test_a_vertex_tuning_trial_trains_into_its_folders_with_its_arguments_and_reports(
    synthetic, tmp_path, monkeypatch, caplog
):
    from nextword.artifacts import bundle as bundle_lib
    from tests.support.trainer import train_args
    from trainer.main import run

    base = tmp_path / "vertex"
    for name, folder in (("AIP_MODEL_DIR", "model"), ("AIP_CHECKPOINT_DIR", "checkpoints"),
                         ("AIP_TENSORBOARD_LOG_DIR", "logs")):  # fmt: skip
        monkeypatch.setenv(name, str(base / folder))
    monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "3")
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(tmp_path / "hypertune" / "output.metrics"))
    trial = ["--train_optimizer_learning_rate=0.005", "--train_model_units", "16.0"]  # as Vertex AI passes them
    with caplog.at_level(logging.WARNING):
        metrics = run([*train_args(synthetic, tmp_path / "configured", "train.max_steps=5"), *trial])
    assert metrics["bundle_dir"] == str(base / "model")
    assert bundle_lib.load_bundle(str(base / "model")).info.weights_sha256 == metrics["weights_sha256"]
    assert (base / "checkpoints" / "checkpoint").exists() and (base / "metrics.json").exists()
    assert _scalars(str(base / "logs" / "valid"), "perplexity")  # the loop's own scalars, where Vertex reads
    assert any(v.tag == "_hparams_/session_start_info" for e in _events(str(base / "logs")) for v in e.summary.value)
    assert not (tmp_path / "configured").exists()
    assert sum("train.model_dir=" in r.getMessage() for r in caplog.records) == 1
    resolved = config_lib.load(str(base / "config.yaml"), [])
    assert (resolved.train.optimizer.learning_rate, resolved.train.model.units) == (0.005, 16)
    report = json.loads((tmp_path / "hypertune" / "output.metrics").read_text())
    assert report["trial"] == "3" and float(report["valid_perplexity"]) == metrics["valid"]["perplexity"]
