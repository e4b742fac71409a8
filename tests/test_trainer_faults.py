"""kill -9 at exact points of a training run (inside a checkpoint write, evaluation, export), then a rerun.

Each killed run is the real trainer in a child process that SIGKILLs itself at
the chosen call (`tests.support.trainer.arm_kill`); the rerun is the same command and
must end exactly where an uninterrupted run with the same seed ends.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from nextword.artifacts import bundle as bundle_lib
from tests.support import trainer as trainer_support
from tests.support.trainer import latest_checkpoint_step, train_args
from trainer.main import run

pytestmark = pytest.mark.train

# 2 epochs of 40 steps, a checkpoint every 10: checkpoints at steps 10, 20, ..., 80.
ARGS = ["train.epochs=2", "train.steps_per_epoch=40", "train.per_replica_batch_size=8"]
ARGS.append("train.checkpoint_every_steps=10")
FINAL_STEP = 80
SAVE_MERGE = "tensorflow.python.ops.gen_io_ops:merge_v2_checkpoints"  # shard files -> the named checkpoint
SAVE_COMMIT = "tensorflow.python.checkpoint.checkpoint_management:update_checkpoint_state_internal"
# The SavedModel writer (keras.export.ExportArchive() returns an instance of this class).
EXPORT_WRITE = "keras.src.export.saved_model_export_archive:SavedModelExportArchive.write_out"


@pytest.fixture(scope="module")
def reference(synthetic, tmp_path_factory) -> dict:
    """The uninterrupted run."""
    return run(train_args(synthetic, tmp_path_factory.mktemp("reference") / "model", *ARGS))


def killed_run(synthetic, model_dir, log, kill_at: str) -> None:
    proc = trainer_support.start_run(train_args(synthetic, model_dir, *ARGS), log, KILL_AT=kill_at)
    assert proc.wait(timeout=180) == -signal.SIGKILL, log.read_text()[-3000:]


def assert_rerun_matches(synthetic, model_dir, reference: dict, resumed_from: int) -> dict:
    rerun = run(train_args(synthetic, model_dir, *ARGS))
    assert rerun["train"]["resumed_from_step"] == resumed_from
    assert rerun["train"]["steps"] == reference["train"]["steps"] == FINAL_STEP
    assert rerun["test"]["perplexity"] == pytest.approx(reference["test"]["perplexity"], rel=1e-6)
    assert rerun["weights_sha256"] == reference["weights_sha256"]  # same data position, same optimizer state
    assert bundle_lib.load_bundle(str(model_dir / "bundle")).fingerprint == rerun["data"]["fingerprint"]
    return rerun


@pytest.mark.parametrize("kill_at", [SAVE_MERGE, SAVE_COMMIT], ids=["shards-written", "files-complete"])
def test_kill_inside_a_checkpoint_write_resumes_from_the_one_before(synthetic, reference, tmp_path, kill_at):
    model_dir = tmp_path / "model"
    # The save at step 20: the 2nd merge, or the 3rd state update (the manager writes its state twice a save).
    killed_run(synthetic, model_dir, tmp_path / "killed.log", f"{kill_at}@{2 if kill_at == SAVE_MERGE else 3}")
    checkpoints = model_dir / "checkpoints"
    assert latest_checkpoint_step(model_dir) == 10  # the half-saved step 20 is not named
    if kill_at == SAVE_MERGE:
        assert list(checkpoints.glob("ckpt-20_temp/part-*"))  # its shards, never merged
    else:
        assert (checkpoints / "ckpt-20.index").exists()  # complete files, but never committed
    assert_rerun_matches(synthetic, model_dir, reference, resumed_from=10)
    assert not list(checkpoints.glob("*_temp"))  # the orphan was cleaned up


def test_a_named_checkpoint_cut_short_is_skipped_for_the_one_before(synthetic, reference, tmp_path, caplog):
    model_dir = tmp_path / "model"
    run(train_args(synthetic, model_dir, *ARGS, "train.max_steps=30"))
    assert latest_checkpoint_step(model_dir) == 30
    (data,) = (model_dir / "checkpoints").glob("ckpt-30.data-*")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # a copy or a disk that lost the tail
    assert_rerun_matches(synthetic, model_dir, reference, resumed_from=20)
    assert any("ckpt-30: unreadable" in r.getMessage() for r in caplog.records)


def test_kill_during_final_evaluation_reruns_only_the_evaluation(synthetic, reference, tmp_path):
    model_dir = tmp_path / "model"
    # Evaluator calls: valid after each of the 2 epochs, then the final valid and test.
    killed_run(synthetic, model_dir, tmp_path / "killed.log", "trainer.evaluate:Evaluator.__call__@4")
    assert latest_checkpoint_step(model_dir) == FINAL_STEP
    assert not (model_dir / "metrics.json").exists()
    assert_rerun_matches(synthetic, model_dir, reference, resumed_from=FINAL_STEP)
    assert [h["epoch"] for h in json.loads((model_dir / "history.json").read_text())] == [1.0, 2.0]


def test_kill_during_the_first_validation_resumes_at_the_epoch_boundary(synthetic, reference, tmp_path, caplog):
    model_dir = tmp_path / "model"
    # The first Evaluator call is epoch 1's validation: its steps (1-40) are checkpointed before it runs.
    killed_run(synthetic, model_dir, tmp_path / "killed.log", "trainer.evaluate:Evaluator.__call__@1")
    assert latest_checkpoint_step(model_dir) == 40
    assert not (model_dir / "history.json").exists()
    caplog.set_level("INFO", logger="trainer.loop")
    assert_rerun_matches(synthetic, model_dir, reference, resumed_from=40)
    assert any("stopped during validation" in r.getMessage() for r in caplog.records)

    def history(folder):  # every figure of each epoch but its wall-clock seconds
        return [
            {k: v for k, v in h.items() if k != "seconds"} for h in json.loads((folder / "history.json").read_text())
        ]

    reference_dir = Path(reference["bundle_dir"]).parent
    assert history(model_dir) == history(reference_dir)  # epoch 1's training loss came through the checkpoint


def test_kill_during_export_leaves_a_bundle_nobody_loads_until_the_rerun(synthetic, reference, tmp_path):
    model_dir = tmp_path / "model"
    killed_run(synthetic, model_dir, tmp_path / "killed.log", f"{EXPORT_WRITE}@1:after")
    assert (model_dir / "bundle" / "saved_model.pb").exists()  # the SavedModel, without its metadata
    with pytest.raises(FileNotFoundError, match="not a nextword bundle"):
        bundle_lib.load_bundle(str(model_dir / "bundle"))
    assert_rerun_matches(synthetic, model_dir, reference, resumed_from=FINAL_STEP)


def test_a_diverging_run_stops_with_one_line_and_writes_no_nan(synthetic, tmp_path, capsys):
    from nextword import cli

    model_dir = tmp_path / "model"
    # Plain SGD at 1e30 without clipping: the first update makes the second step's loss huge, inf or NaN.
    args = train_args(synthetic, model_dir, *ARGS, "train.optimizer.name=sgd", "train.optimizer.learning_rate=1e30")
    args += ["--set", "train.optimizer.clip_global_norm=0"]
    assert cli.guarded(run, args) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: training diverged at step 2 (loss ")
    assert "lower train.optimizer.learning_rate (1e+30)" in errors[0]
    assert not (model_dir / "bundle").exists() and not (model_dir / "metrics.json").exists()
    for path in model_dir.rglob("*.json"):
        text = path.read_text()
        assert "NaN" not in text and "Infinity" not in text, path


def test_a_damaged_checkpoint_state_file_resumes_from_the_newest_readable_checkpoint(
    synthetic, reference, tmp_path, caplog
):
    model_dir = tmp_path / "model"
    run(train_args(synthetic, model_dir, *ARGS, "train.max_steps=30"))
    (model_dir / "checkpoints" / "checkpoint").write_text("model_checkpoint_path: \x00\x01 not a proto {{{\n")
    assert_rerun_matches(synthetic, model_dir, reference, resumed_from=30)  # not step 0
    assert any("state file is missing or damaged" in r.getMessage() for r in caplog.records)


def test_a_damaged_best_checkpoint_is_one_line_in_evaluate(synthetic, reference, tmp_path, capsys):
    from nextword import cli

    model_dir = tmp_path / "model"
    run(train_args(synthetic, model_dir, *ARGS, "train.max_steps=50"))
    (data,) = (model_dir / "best").glob("ckpt-*.data-*")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    assert cli.main(["evaluate", *train_args(synthetic, model_dir, *ARGS)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "the best epoch's weights cannot be read" in errors[0], errors


def test_damaged_run_files_are_one_line_and_evaluate_rewrites_metrics(synthetic, tmp_path, capsys):
    from nextword import cli

    model_dir = tmp_path / "model"
    args = train_args(synthetic, model_dir, *ARGS, "train.max_steps=30")
    run(args)
    (model_dir / "metrics.json").write_text('{"valid": {"perplexity": 1')  # cut short
    assert cli.main(["evaluate", *args]) == 0
    assert json.loads((model_dir / "metrics.json").read_text())["valid"]["perplexity"] > 1
    capsys.readouterr()
    for name, text, said in [
        ("history.json", '[{"epoch": "one"}]', "damaged, a record without a numeric 'epoch'"),
        ("LOCK.json", "null", "expected a JSON object"),
    ]:
        original = (model_dir / name).read_text() if (model_dir / name).exists() else None
        (model_dir / name).write_text(text)
        resumed = train_args(synthetic, model_dir, *ARGS, "train.max_steps=40")
        assert cli.main(["train", *resumed]) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and f"{name}: {said}" in errors[0], errors
        if original is None:
            (model_dir / name).unlink()
        else:
            (model_dir / name).write_text(original)


def test_a_checkpoint_written_before_the_pending_validation_variables_still_restores(tmp_path):
    import keras
    import numpy as np
    import tensorflow as tf

    from nextword.config import TrainConfig
    from trainer.checkpoints import Checkpoints
    from trainer.strategy import LOCAL_WORKER

    def parts():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        optimizer = keras.optimizers.SGD(0.1)
        optimizer.build(model.trainable_variables)
        cfg = TrainConfig(model_dir=str(tmp_path), carry_state=False)
        return model, Checkpoints(model, optimizer, tf.distribute.get_strategy(), LOCAL_WORKER, cfg, "fp")

    old_model, old = parts()
    old.state.epoch.assign(4)
    # As a nextword before 2026-12-07 wrote it: the run state without the pending-validation variables.
    layout = tf.train.Checkpoint(model=old_model, optimizer=old.optimizer, **old.state.tracked(with_pending=False))
    tf.train.CheckpointManager(layout, old.read_dir, max_to_keep=3).save(checkpoint_number=7)
    model, restored = parts()
    restored.state.pending_stop.assign("epochs")
    assert restored.restore()[0] == 0  # the optimizer's step counter was 0 when saved
    assert int(restored.state.epoch.numpy()) == 4 and restored.state.pending() is None
    np.testing.assert_array_equal(model.get_weights()[0], old_model.get_weights()[0])
