"""End-to-end training runs on the shipped synthetic corpus (tiny models, seconds each)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from nextword import cli
from nextword.config import ModelConfig
from tests.support import trainer as trainer_support
from tests.support.trainer import GENERATOR, latest_checkpoint_step, train_args
from trainer import steps
from trainer.main import claim_model_dir, run
from trainer.model import build_model


def test_one_step_smoke_run_writes_every_output(synthetic, tmp_path):
    model_dir = tmp_path / "model"
    metrics = run(train_args(synthetic, model_dir, "train.max_steps=1"))
    assert metrics["train"]["steps"] == 1 and metrics["train"]["stopped_by"] == "max_steps"
    counts = json.loads((synthetic / "manifest.json").read_text())["counts"]
    assert metrics["valid"]["tokens"] == counts["targets"]["valid"]  # every predicted token, the padded window's too
    written = json.loads((model_dir / "metrics.json").read_text())
    assert written["test"] == metrics["test"] and written["weights_sha256"] == metrics["weights_sha256"]
    resolved = yaml.safe_load((model_dir / "config.yaml").read_text())
    assert resolved["train"]["max_steps"] == 1 and resolved["train"]["model"]["units"] == 32
    assert (model_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((model_dir / "history.json").read_text())
    assert [h["step"] for h in history] == [1] and 0 < history[0]["epoch"] < 1
    assert list((model_dir / "logs" / "train").glob("events.out.tfevents.*"))
    assert latest_checkpoint_step(model_dir) == 1
    assert (model_dir / "bundle" / "saved_model.pb").exists()


def test_validation_perplexity_reaches_the_generators(synthetic, tmp_path):
    metrics = run(train_args(synthetic, tmp_path / "model", "train.epochs=3"))
    history = json.loads((tmp_path / "model" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1.0, 2.0, 3.0]
    assert history[0]["valid_perplexity"] > history[-1]["valid_perplexity"]
    assert metrics["valid"]["perplexity"] <= 1.10 * GENERATOR["perplexity"]
    assert metrics["test"]["perplexity"] <= 1.10 * GENERATOR["perplexity"]
    assert metrics["valid"]["perplexity"] >= 0.97 * GENERATOR["perplexity"]  # no model beats the true source


def test_more_epochs_resume_from_the_last_checkpoint(synthetic, tmp_path):
    first = run(train_args(synthetic, tmp_path / "model", "train.epochs=1", "train.steps_per_epoch=60"))
    second = run(train_args(synthetic, tmp_path / "model", "train.epochs=2", "train.steps_per_epoch=60"))
    assert second["train"]["resumed_from_step"] == first["train"]["steps"]
    assert second["train"]["steps"] == 2 * first["train"]["steps"]
    history = json.loads((tmp_path / "model" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1.0, 2.0]


def test_kill_9_then_rerun_resumes_and_ends_with_the_uninterrupted_weights(synthetic, tmp_path):
    args = ["train.epochs=2", "train.steps_per_epoch=150", "train.per_replica_batch_size=8"]
    args.append("train.checkpoint_every_steps=25")
    reference = run(train_args(synthetic, tmp_path / "reference", *args))
    steps_per_epoch = reference["train"]["steps"] // 2
    model_dir = tmp_path / "model"
    log = tmp_path / "killed.log"
    proc = trainer_support.start_run(train_args(synthetic, model_dir, *args), log)
    deadline = time.monotonic() + 120
    while True:  # kill as soon as a checkpoint exists in the middle of an epoch
        seen = latest_checkpoint_step(model_dir)
        if seen >= 50 and seen % steps_per_epoch:
            break
        assert proc.poll() is None, f"finished before it could be killed:\n{log.read_text()[-2000:]}"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.kill()  # SIGKILL: no handler, no last checkpoint
    assert proc.wait(timeout=30) == -signal.SIGKILL
    at_kill = latest_checkpoint_step(model_dir)
    assert at_kill < reference["train"]["steps"]
    resumed = run(train_args(synthetic, model_dir, *args))
    assert resumed["train"]["resumed_from_step"] == at_kill >= seen
    assert resumed["train"]["steps"] == reference["train"]["steps"]
    # Same data position, same optimizer state: bit-identical to never having been killed.
    assert resumed["weights_sha256"] == reference["weights_sha256"]


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["sigterm", "ctrl-c"])
def test_sigterm_or_ctrl_c_writes_a_checkpoint_and_exits_128_plus_signal(synthetic, tmp_path, stop, code):
    model_dir = tmp_path / "model"
    args = train_args(
        synthetic, model_dir, "train.epochs=3", "train.per_replica_batch_size=8", "train.checkpoint_every_steps=40"
    )
    log = tmp_path / "train.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer", *args],
        cwd=trainer_support.REPO,
        env=trainer_support.child_env(),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while (seen := latest_checkpoint_step(model_dir)) == 0:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.01)
    proc.send_signal(stop)
    assert proc.wait(timeout=60) == code, log.read_text()[-2000:]
    saved = latest_checkpoint_step(model_dir)
    assert saved > seen
    said = "interrupted" if stop == signal.SIGINT else "preempted"
    assert f"{said}: stopped at step {saved} for {stop.name}" in log.read_text()
    assert not (model_dir / "metrics.json").exists()  # stopped, not finished


def _sigterm_before(monkeypatch, owner: object, name: str, call: int) -> None:
    """SIGTERM to this process just before the `call`-th call of owner.name (the trainer's handler must be on)."""
    original, calls = getattr(owner, name), []

    def signalled(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "no handler: it would end the tests"
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, signalled)


def test_sigterm_during_validation_final_evaluation_or_export_stops_at_once_naming_the_checkpoint(
    synthetic, tmp_path, monkeypatch, capsys
):
    from trainer import evaluate, main
    from trainer.__main__ import main as train_main

    model_dir = tmp_path / "model"
    settings = ["train.epochs=2", "train.steps_per_epoch=20", "train.checkpoint_every_steps=7"]
    args = train_args(synthetic, model_dir, *settings)
    script = (
        "import sys\n"
        "from tests.support.trainer import arm_kill\n"
        "arm_kill('trainer.evaluate:Evaluator.__call__@1:before:SIGTERM')\n"  # epoch 1's validation
        "from trainer.__main__ import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=trainer_support.REPO,
        env=trainer_support.child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 143, done.stderr[-2000:]
    assert "preempted: stopped during validation for SIGTERM; the checkpoint before it (step 20)" in done.stderr
    assert latest_checkpoint_step(model_dir) == 20 and not (model_dir / "history.json").exists()

    # The rerun validates epoch 1 (call 1), trains and validates epoch 2 (call 2); SIGTERM at the final evaluation.
    resume = (
        f"the checkpoint (step 40) is in {model_dir / 'checkpoints'}: rerun the same command to evaluate and export"
    )
    _sigterm_before(monkeypatch, evaluate.Evaluator, "__call__", 3)
    assert train_main(args) == 143
    assert capsys.readouterr().err.rstrip().splitlines()[-1] == (
        f"preempted: stopped during the final evaluation for SIGTERM; {resume}"
    )
    assert latest_checkpoint_step(model_dir) == 40 and not (model_dir / "metrics.json").exists()
    assert [h["epoch"] for h in json.loads((model_dir / "history.json").read_text())] == [1.0, 2.0]

    # The next rerun trains nothing, evaluates, writes metrics.json; SIGTERM as the export starts.
    monkeypatch.undo()
    _sigterm_before(monkeypatch, main, "export", 1)
    assert train_main(args) == 143
    assert (
        capsys.readouterr().err.rstrip().splitlines()[-1] == f"preempted: stopped during export for SIGTERM; {resume}"
    )
    assert (model_dir / "metrics.json").exists() and not (model_dir / "bundle" / "nextword" / "bundle.json").exists()


def test_carried_state_is_the_same_as_one_long_sequence():
    model = build_model(30, ModelConfig(embedding_dim=8, units=8, num_layers=2, dropout=0.0), with_state=True)
    stream = tf.constant(np.random.default_rng(0).integers(0, 30, size=[2, 13]), tf.int32)  # 2 rows, 13 ids
    whole, _ = steps.forward(model, stream[:, :-1], steps.zero_states(model, 2), training=False)
    states = steps.zero_states(model, 2)
    pieces = []
    for start in range(0, 12, 4):  # windows of 4 + 1 ids, stride 4, as preprocessing writes them
        inputs, _targets, _mask = steps.split_window(stream[:, start : start + 5])
        logits, states = steps.forward(model, inputs, states, training=False)
        pieces.append(logits.numpy())
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_carry_state_training_on_ordered_data(ordered, tmp_path, cell):
    metrics = run(
        train_args(ordered, tmp_path / "model", "train.carry_state=true", "train.epochs=6", f"train.model.cell={cell}")
    )
    assert metrics["train"]["carry_state"]
    counts = json.loads((ordered / "manifest.json").read_text())["counts"]
    # Evaluation pads the streams instead of dropping windows: every window's 20 predictions count.
    assert metrics["valid"]["tokens"] == counts["targets"]["valid"]  # every predicted token, the padded window's too
    assert metrics["valid"]["perplexity"] <= 1.10 * GENERATOR["perplexity"]


def test_carry_state_refuses_records_out_of_order(synthetic, tmp_path):
    shuffled = trainer_support.shuffled_copy(synthetic, tmp_path / "shuffled")
    with pytest.raises(ValueError, match="not in corpus order"):
        run(train_args(shuffled, tmp_path / "model", "train.carry_state=true"))


def test_bf16_matmuls_train_within_one_percent_of_float32_and_report_float32_figures(synthetic, tmp_path):
    # bf16 output matmuls and input projections (trainer/matmul.py), from the same seed, for the same steps.
    exact = run(train_args(synthetic, tmp_path / "exact", "train.matmul_dtype=float32", "train.max_steps=30"))
    mixed = run(train_args(synthetic, tmp_path / "mixed", "train.matmul_dtype=bfloat16", "train.max_steps=30"))
    assert mixed["weights_sha256"] != exact["weights_sha256"]  # the bf16 path did run
    assert mixed["valid"]["perplexity"] == pytest.approx(exact["valid"]["perplexity"], rel=0.01)
    assert keras.mixed_precision.global_policy().name == "float32"
    # Validation during training ran in bf16; metrics.json's figures are float32, the bundle's, and the same
    # weights evaluated again give them exactly (`nextword evaluate` of the bf16 run).
    best = min(h["valid_loss"] for h in json.loads((tmp_path / "mixed" / "history.json").read_text()))
    assert best != mixed["valid"]["loss"]
    assert best == pytest.approx(mixed["valid"]["loss"], rel=0.01)
    (tmp_path / "mixed" / "metrics.json").unlink()
    assert cli.main(["evaluate", *train_args(synthetic, tmp_path / "mixed", "train.matmul_dtype=bfloat16")]) == 0
    assert json.loads((tmp_path / "mixed" / "metrics.json").read_text())["valid"] == mixed["valid"]


def test_training_chooses_the_mixtures_and_evaluate_and_export_reproduce_them(synthetic, tmp_path):
    from nextword.artifacts import bundle as bundle_lib

    ngram = f"baseline.output_dir={tmp_path / 'baseline'}"
    assert cli.main(["baseline", *train_args(synthetic, tmp_path / "model", ngram, "baseline.order=3")]) == 0
    trained = run(train_args(synthetic, tmp_path / "model", "train.max_steps=20", "train.mixtures=true", ngram))
    exported = bundle_lib.load_bundle(str(tmp_path / "model" / "bundle"))
    # The bundle of a training run carries the cache and the n-gram that its final evaluation chose on valid.
    assert exported.info.cache == trained["ngram"]["cache_parameters"]  # chosen under the n-gram
    chosen = trained["ngram"]["weights"]["lstm_cache_ngram"]  # by the context's order; [0] unused
    assert exported.info.ngram == {"weights_by_order": chosen[1:], "order": 3} and len(chosen) == 4
    (tmp_path / "model" / "metrics.json").unlink()
    assert cli.main(["evaluate", *train_args(synthetic, tmp_path / "model", ngram)]) == 0
    evaluated = json.loads((tmp_path / "model" / "metrics.json").read_text())
    # The same weights: the same figures and the same choices.
    assert evaluated["valid"] == pytest.approx(trained["valid"]) and evaluated["test"] == pytest.approx(trained["test"])
    assert evaluated["cache"]["parameters"] == trained["cache"]["parameters"]
    assert evaluated["ngram"]["weights"] == trained["ngram"]["weights"]
    assert evaluated["ngram"]["cache_parameters"] == trained["ngram"]["cache_parameters"]
    for section, split in itertools.product(("cache", "ngram"), ("valid", "test")):
        for name, figures in trained[section][split].items():
            assert evaluated[section][split][name] == pytest.approx(figures), (section, split, name)
    shutil.rmtree(tmp_path / "model" / "bundle")
    assert cli.main(["export", *train_args(synthetic, tmp_path / "model", ngram)]) == 0
    again = bundle_lib.load_bundle(str(tmp_path / "model" / "bundle"))  # complete, and the same model
    assert again.info.weights_sha256 == exported.info.weights_sha256 == trained["weights_sha256"]
    assert again.model_fingerprint == exported.model_fingerprint
    tokens = evaluated["cache"]["test"]["lstm"]["tokens"]
    assert evaluated["cache"]["test"]["lstm_cache"]["tokens"] == tokens == evaluated["test"]["tokens"]
    # The n-gram mixture: on a first-order chain the 3-gram is near the generator and 20 steps of LSTM are not,
    # so valid gives the n-gram a large share and the mixture beats the LSTM alone on test by far.
    mixed = evaluated["ngram"]
    assert {figures["tokens"] for figures in mixed["test"].values()} == {tokens}
    assert mixed["single_weights"]["lstm_ngram"] >= 0.3 and mixed["single_weights"]["lstm_cache_ngram"] >= 0.3
    # Weights by order: chosen on valid over a grid that holds the single weight, so never worse on valid.
    for name in ("lstm_ngram", "lstm_cache_ngram"):
        assert max(mixed["weights"][name]) >= 0.3
        assert mixed["valid"][name]["perplexity"] <= mixed["valid"][f"{name}_one_weight"]["perplexity"]
    assert sum(mixed["valid_tokens_by_order"]) == mixed["valid"]["ngram"]["tokens"]
    assert mixed["test"]["ngram"]["perplexity"] < GENERATOR["perplexity"] * 1.05
    assert mixed["test"]["lstm_ngram"]["perplexity"] < 0.9 * evaluated["cache"]["test"]["lstm"]["perplexity"]
    grid = mixed["grid"]["lstm_ngram"]
    assert min(grid, key=grid.__getitem__) == f"{mixed['single_weights']['lstm_ngram']:g}"
    assert bundle_lib.read_ngram(again).nbytes == mixed["table_bytes"]
    # Exported where the baseline is not, the bundle has no n-gram: a model of another identity.
    shutil.rmtree(tmp_path / "model" / "bundle")
    assert cli.main(["export", *train_args(synthetic, tmp_path / "model", f"baseline.output_dir={tmp_path}")]) == 0
    alone = bundle_lib.load_bundle(str(tmp_path / "model" / "bundle"))
    assert alone.info.cache == trained["cache"]["parameters"] and not alone.info.ngram
    assert alone.model_fingerprint != exported.model_fingerprint


def test_evaluate_dynamic_adds_its_section_on_the_same_tokens(synthetic, tmp_path, monkeypatch):
    from trainer import dynamic_eval
    from trainer import evaluate as evaluate_lib

    monkeypatch.setattr(dynamic_eval, "LEARNING_RATES", (0.0, 0.1))  # a small grid on a short prefix
    monkeypatch.setattr(dynamic_eval, "DECAYS", (0.0,))
    monkeypatch.setattr(evaluate_lib, "DYNAMIC_CHOICE_TOKENS", 2000)
    run(train_args(synthetic, tmp_path / "model", "train.max_steps=20"))
    assert cli.main(["evaluate", "--dynamic", *train_args(synthetic, tmp_path / "model")]) == 0
    evaluated = json.loads((tmp_path / "model" / "metrics.json").read_text())
    dynamic = evaluated["dynamic"]
    assert set(dynamic["grid"]) == {"0/0", "0.1/0"}
    chosen = f"{dynamic['parameters']['learning_rate']:g}/0"
    assert min(dynamic["grid"], key=dynamic["grid"].__getitem__) == chosen
    # One row over the whole split: the first token of a split is its only unpredicted one, as in the rows.
    tokens = dynamic["cache"]["test"]["lstm"]["tokens"]
    assert tokens == dynamic["static_one_row"]["test"]["tokens"] == evaluated["test"]["tokens"]
    assert "ngram" not in dynamic  # no baseline for this data
    # 20 steps leave much to learn from the text: adapting helps on test, not only on the valid prefix.
    if dynamic["parameters"]["learning_rate"] > 0:
        assert dynamic["cache"]["test"]["lstm"]["perplexity"] < dynamic["static_one_row"]["test"]["perplexity"]


def test_model_dir_of_other_data_is_refused(synthetic, ordered, tmp_path, capsys):
    run(train_args(synthetic, tmp_path / "model", "train.max_steps=1"))
    assert cli.main(["train", *train_args(ordered, tmp_path / "model", "train.max_steps=2")]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "use a new train.model_dir" in error and "\n" not in error


def test_model_dir_of_another_model_shape_is_refused(synthetic, tmp_path, capsys):
    run(train_args(synthetic, tmp_path / "model", "train.max_steps=1"))
    other_shape = train_args(synthetic, tmp_path / "model", "train.max_steps=2", "train.model.units=16")
    assert cli.main(["train", *other_shape]) == 1
    error = capsys.readouterr().err.strip()
    assert "ckpt-1: does not fit this model" in error and "use a new train.model_dir" in error and "\n" not in error


def memorizing_data(write_files, tmp_path):
    """A data directory on which a big model at a high rate gets worse on validation after a few epochs."""
    from beam_preprocess import pipeline

    # Uniform random words: nothing to learn beyond the unigram rates, so a big model at a high learning
    # rate memorizes the training lines and validation gets worse after the first epochs.
    rng = np.random.default_rng(0)
    words = [a + b for a in "bcdfghjklm" for b in "aeio"]  # 40 words that survive the seed normalization
    text = "\n".join(" ".join(rng.choice(words, 12)) for _ in range(600))
    root = write_files({"random.txt": text})
    data_dir = tmp_path / "data"
    settings = [
        f"preprocess.corpus_glob={root}/*.txt",
        f"preprocess.output_dir={data_dir}",
        "preprocess.window_length=10",
        "preprocess.text.min_count=0",
        "preprocess.split.valid_fraction=0.3",
    ]
    pipeline.run([arg for item in settings for arg in ("--set", item)])
    return data_dir


MEMORIZING = ("train.model.units=128", "train.model.embedding_dim=64", "train.optimizer.learning_rate=0.02")


def test_the_best_validation_epoch_is_evaluated_and_exported_when_later_ones_get_worse(write_files, tmp_path):
    data_dir = memorizing_data(write_files, tmp_path)
    model_dir = tmp_path / "model"
    metrics = run(train_args(
        data_dir, model_dir, "train.epochs=6", *MEMORIZING,
        "train.optimizer.plateau_factor=1", "train.early_stopping_patience=0",
        "train.matmul_dtype=float32",  # validation as exact as the final evaluation, to compare the two
    ))  # fmt: skip
    history = json.loads((model_dir / "history.json").read_text())
    losses = [h["valid_loss"] for h in history]
    best = int(np.argmin(losses))
    assert best < len(losses) - 1 and losses[-1] > losses[best] + 0.01  # later epochs did get worse
    assert metrics["train"]["best_epoch"] == history[best]["epoch"]
    # The final evaluation ran on the best epoch's weights (evaluation is deterministic) ...
    assert metrics["valid"]["loss"] == pytest.approx(losses[best], rel=1e-6)
    # ... which are the weights of the best/ checkpoint, not those of the last epoch; export copies them.
    from trainer.main import weights_sha256

    def checkpoint_sha(folder):
        cfg = ModelConfig(num_layers=1, embedding_dim=64, units=128, dropout=0.0)
        model = build_model(metrics["data"]["vocab_size"], cfg, with_state=metrics["train"]["carry_state"])
        tf.train.Checkpoint(model=model).restore(
            tf.train.latest_checkpoint(str(folder))
        ).assert_existing_objects_matched()
        return weights_sha256(model)

    assert checkpoint_sha(model_dir / "best") == metrics["weights_sha256"]
    assert checkpoint_sha(model_dir / "checkpoints") != metrics["weights_sha256"]


def test_a_stop_a_few_steps_into_an_epoch_keeps_the_rate_for_the_resumed_run(write_files, tmp_path):
    from trainer.loop import MIN_IMPROVEMENT

    data_dir = memorizing_data(write_files, tmp_path)
    model_dir = tmp_path / "model"
    schedule = (*MEMORIZING, "train.optimizer.plateau_factor=0.5", "train.early_stopping_patience=0")
    steps_per_epoch = run(train_args(data_dir, model_dir, "train.epochs=4", *schedule))["train"]["steps"] // 4
    # One step into epoch 5, then resumed to the end: the one-step "epoch" is evaluated (and could be the best)
    # but is no plateau, though its validation did not improve.
    run(train_args(data_dir, model_dir, "train.epochs=6", f"train.max_steps={4 * steps_per_epoch + 1}", *schedule))
    history = json.loads((model_dir / "history.json").read_text())
    stub = history[-1]
    assert 4 < stub["epoch"] < 4.1
    assert stub["valid_loss"] > min(h["valid_loss"] for h in history[:4]) - MIN_IMPROVEMENT  # would have cut
    run(train_args(data_dir, model_dir, "train.epochs=5", *schedule))
    resumed = json.loads((model_dir / "history.json").read_text())[4]  # the whole epoch 5 replaces the stub
    assert resumed["epoch"] == 5 and resumed["learning_rate"] == stub["learning_rate"]


def test_a_budget_cooldown_anneals_the_rate_to_the_budgets_end(synthetic, tmp_path):
    from trainer.loop import budget_cooldown_scale

    assert [budget_cooldown_scale(f, 0.25) for f in (0.0, 0.75, 0.875, 1.0, 1.5)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert budget_cooldown_scale(0.99, 0.0) == 1.0
    model_dir = tmp_path / "model"
    settings = ("train.epochs=1000", "train.steps_per_epoch=20", "train.early_stopping_patience=0")
    metrics = run(train_args(synthetic, model_dir, *settings, "train.time_budget_s=8",
                             "train.optimizer.budget_cooldown=1", "train.optimizer.learning_rate=0.01"))  # fmt: skip
    assert metrics["train"]["stopped_by"] == "time_budget"
    history = json.loads((model_dir / "history.json").read_text())
    rates = [h["learning_rate"] for h in history]
    assert len(rates) >= 3 and rates == sorted(rates, reverse=True) and rates[0] < 0.01
    # Each epoch's rate is the one its last step set: the budget's share spent by then, to within two steps.
    for record in history:
        assert record["learning_rate"] == pytest.approx(0.01 * (1 - record["seconds"] / 8), abs=0.0015)
    assert rates[-1] < 0.001
    # A resumed run with more budget takes the rate from the checkpoint's clock, not from a fresh start.
    resumed = run(train_args(synthetic, model_dir, *settings, "train.time_budget_s=16",
                             "train.optimizer.budget_cooldown=1", "train.optimizer.learning_rate=0.01"))  # fmt: skip
    assert resumed["train"]["resumed_from_step"] == metrics["train"]["steps"]
    later = json.loads((model_dir / "history.json").read_text())[len(history) :]
    assert later and all(h["learning_rate"] == pytest.approx(0.01 * (1 - h["seconds"] / 16), abs=0.0015) for h in later)


def test_in_the_budgets_cooldown_a_stalled_validation_does_not_cut_the_rate(write_files, tmp_path):
    from trainer.loop import MIN_IMPROVEMENT

    data_dir = memorizing_data(write_files, tmp_path)
    model_dir = tmp_path / "model"
    metrics = run(train_args(
        data_dir, model_dir, *MEMORIZING, "train.epochs=1000", "train.steps_per_epoch=5",
        "train.time_budget_s=10", "train.optimizer.budget_cooldown=1", "train.optimizer.plateau_factor=0.5",
        "train.early_stopping_patience=0",
    ))  # fmt: skip
    assert metrics["train"]["stopped_by"] == "time_budget"
    history = json.loads((model_dir / "history.json").read_text())
    losses = [h["valid_loss"] for h in history]
    # Epochs that gained less than MIN_IMPROVEMENT (a plateau at a constant rate) happened ...
    assert any(later > min(losses[:i]) - MIN_IMPROVEMENT for i, later in enumerate(losses) if i)
    # ... and every epoch's rate is still the budget's schedule alone: no plateau factor on top.
    for record in history:
        assert record["learning_rate"] == pytest.approx(0.02 * (1 - record["seconds"] / 10), abs=0.003)


def test_one_trainer_per_model_dir_a_dead_holder_is_taken_over_and_resume_keeps_its_settings(synthetic, tmp_path):
    from trainer.run_lock import LOCK_FILE

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    claim_model_dir(str(model_dir))  # the folder of an earlier run: nextword's, so its lock is read, not refused
    lock = model_dir / LOCK_FILE
    # Held by a live process on this host (ours, under another nonce): refused with one line.
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "nonce": "x",
                                "refreshed_unix": time.time()}))  # fmt: skip
    with pytest.raises(ValueError, match=rf"LOCK.json: train.model_dir is in use by pid {os.getpid()} on "):
        run(train_args(synthetic, model_dir, "train.max_steps=2"))
    # Held by a process that has exited: taken over; released at the end.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    held = json.loads(lock.read_text()) | {"pid": int(gone.stdout)}
    lock.write_text(json.dumps(held))
    run(train_args(synthetic, model_dir, "train.max_steps=2", "train.epochs=1"))
    assert not lock.exists()
    # Resuming with another optimizer setting is refused; more epochs are fine.
    with pytest.raises(
        ValueError, match=r"config.yaml: resuming with other train.optimizer than the run being resumed"
    ):
        run(train_args(synthetic, model_dir, "train.max_steps=4", "train.optimizer.learning_rate=0.5"))
    assert (
        run(train_args(synthetic, model_dir, "train.max_steps=4", "train.epochs=2"))["train"]["resumed_from_step"] == 2
    )


def test_an_orphaned_checkpoint_link_is_removed_without_touching_its_target(synthetic, tmp_path):
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "precious.txt").write_text("keep me")
    (victim / "sub" / "more.txt").write_text("me too")
    checkpoints = tmp_path / "model" / "checkpoints"
    checkpoints.parent.mkdir()
    claim_model_dir(str(checkpoints.parent))  # an earlier run's model_dir, whose checkpoint write was cut short
    checkpoints.mkdir()
    (checkpoints / "ckpt-5_temp").symlink_to(victim, target_is_directory=True)
    run(train_args(synthetic, tmp_path / "model", "train.max_steps=1"))
    assert not (checkpoints / "ckpt-5_temp").exists() and not (checkpoints / "ckpt-5_temp").is_symlink()
    assert (victim / "precious.txt").read_text() == "keep me" and (victim / "sub" / "more.txt").read_text() == "me too"
