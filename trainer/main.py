"""Training job: preprocessed data -> checkpoints, TensorBoard logs, metrics.json, curves.png and the bundle.

    python -m trainer --config configs/demo.yaml --set train.epochs=3     (also: nextword train)
    nextword evaluate --config configs/demo.yaml
    nextword export --config configs/demo.yaml

Everything lands in train.model_dir (local or gs://): config.yaml (the
resolved config), checkpoints/, logs/{train,valid}/ (TensorBoard),
history.json, metrics.json, curves.png and bundle/. Rerunning the same
command resumes from the latest checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import keras
import tensorflow as tf

from nextword import config as config_lib
from nextword import storage
from nextword.artifacts import baseline_report, data_dir
from nextword.artifacts.model_dir import BUNDLE_DIR, CURVES_FILE, HISTORY_FILE, METRICS_FILE
from nextword.cli import cli_common
from nextword.cloud import tuning, vertex_env, vertex_tensorboard
from nextword.config import Config, TrainConfig
from nextword.text import contract
from trainer import evaluate as evaluate_lib
from trainer import lm, sizing
from trainer import tflite as tflite_lib
from trainer.checkpoints import BEST_DIR, CHECKPOINT_DIR, checkpoint_dirs
from trainer.data import DataSpec, load_data_spec
from trainer.inputs import Inputs
from trainer.loop import TrainingPreempted, TrainLoop, stop_signals
from trainer.matmul import FLOAT32, choose_matmul_dtype, cpu_bf16_units
from trainer.model import build_model, cudnn_eligible, weights_sha256
from trainer.optim import make_optimizer
from trainer.run_lock import LOCK_FILE, RunLock, check_resume_settings
from trainer.strategy import Worker, lost_peers_reported, make_strategy

_LOG = logging.getLogger(__name__)


def parse(stage: str, argv: list[str] | None) -> Config:
    args = cli_common.parser(stage).parse_args(argv)
    return config_lib.load(args.config, args.overrides)


def _log_setup(model: keras.Model, strategy: tf.distribute.Strategy, worker: Worker, inputs: Inputs) -> None:
    if unrolled():
        _LOG.info("recurrent layers unrolled for the CPU (no GPU here; on a GPU they stay rolled, for cuDNN)")
    else:
        reasons = cudnn_eligible(model)
        _LOG.info("LSTM cuDNN-eligible: %s", "yes" if not reasons else "no (" + "; ".join(reasons) + ")")
    _LOG.info(
        "%s on %d replica(s), worker %s/%d%s; global batch %d, %d steps per epoch, %d parameters",
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
        worker.task_id,
        worker.num_workers,
        " (chief)" if worker.is_chief else "",
        inputs.global_batch,
        inputs.steps_per_epoch,
        model.count_params(),
    )


def unrolled() -> bool:
    """Whether the trainer's model unrolls its recurrent layers: where there is no GPU (trainer/model.py)."""
    return not tf.config.list_physical_devices("GPU")


def _trainer_model(config: Config, spec: DataSpec, matmul_dtype: str) -> keras.Model:
    """The model the trainer runs (state carried if configured, unrolled without a GPU)."""
    cfg = config.train
    return build_model(spec.vocab_size, cfg.model, cfg.carry_state, unroll=unrolled(), matmul_dtype=matmul_dtype)


def _build(config: Config, spec: DataSpec, strategy: tf.distribute.Strategy, worker: Worker):
    """(inputs, model, optimizer), the model and optimizer built in the strategy's scope."""
    cfg = config.train
    keras.utils.set_random_seed(cfg.seed)
    inputs = Inputs(spec, cfg, strategy, worker)
    with strategy.scope():
        model = _trainer_model(config, spec, cfg.matmul_dtype)
        optimizer = make_optimizer(cfg.optimizer, inputs.steps_per_epoch)
        optimizer.build(model.trainable_variables)
    return inputs, model, optimizer


def export(model: keras.Model, spec: DataSpec, config: Config, serving_dir: str | None = None) -> str:
    """The bundle from a stateless float32 copy of the trained model (the bundle's contract), into
    train.model_dir/bundle, or as the next version in `serving_dir` (TF Serving's layout)."""
    from trainer.export import export_bundle, export_serving_version  # heavy, and only the chief exports

    stateless = build_model(spec.vocab_size, config.train.model)
    stateless.set_weights(model.get_weights())
    if serving_dir:
        return export_serving_version(stateless, spec.data_dir, config, serving_dir)
    bundle_dir = vertex_env.bundle_dir(storage.join(config.train.model_dir, BUNDLE_DIR), os.environ)
    return export_bundle(stateless, spec.data_dir, config, bundle_dir)


def compare_with_baseline(config: Config, metrics: dict) -> dict:
    """metrics.json's "baseline" section: the n-gram model on the same tokens, and the ratio (one log line)."""
    cfg = config.train
    report = baseline_report.read(config.baseline.output_dir)
    section = baseline_report.compare(report, metrics, cfg.carry_state, data_dir.manifest_sha256(cfg.data_dir))
    if section["status"] != "ok":
        _LOG.warning("no n-gram baseline to compare with (%s): %s", section["status"], section["hint"])
        return section
    lstm, ngram = metrics["test"]["perplexity"], section["test"]["perplexity"]
    verdict = "better" if lstm < ngram else "NOT better"
    _LOG.info(
        "test perplexity: LSTM %.2f vs %d-gram Kneser-Ney %.2f on the same %d tokens: ratio %.3f (%s)",
        lstm,
        section["order"],
        ngram,
        section["test"]["tokens"],
        section["test"]["ratio"],
        verdict,
    )
    return section


@dataclass(frozen=True)
class Setup:
    """What training, evaluating and exporting start from, made one way for all three."""

    config: Config  # its sizes resolved by the training split (trainer/sizing.py)
    strategy: tf.distribute.Strategy
    worker: Worker
    spec: DataSpec


def set_up(config: Config) -> Setup:
    refuse_model_in_data(config.train)
    strategy, worker = make_strategy(config.train)  # first: multi-worker collectives start before any op
    spec = load_data_spec(config.train.data_dir)
    config = sizing.resolve(config, spec.targets("train"), on_gpu=not unrolled())
    dtype, why = choose_matmul_dtype(config.train.matmul_dtype, not unrolled(), cpu_bf16_units())
    _LOG.info("large matmuls in %s (%s)", dtype, why)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, matmul_dtype=dtype))
    return Setup(config, strategy, worker, spec)


def refuse_model_in_data(cfg: TrainConfig) -> None:
    """model_dir equal to or inside data_dir would write config.yaml over the data's (and mix two stages' files).

    Compared as folders (os.path.realpath), not spellings: a link to the data directory is caught too.
    """
    if storage.within(cfg.model_dir, cfg.data_dir):
        where = "is" if storage.within(cfg.data_dir, cfg.model_dir) else "is inside"
        raise ValueError(
            f"train.model_dir: {cfg.model_dir} {where} train.data_dir {cfg.data_dir}; "
            "choose a model_dir outside the data directory"
        )


# What training overwrites or deletes in model_dir, besides the bundle (which the export checks itself).
MODEL_DIR_NAMES = (contract.CONFIG_FILE, METRICS_FILE, HISTORY_FILE, CURVES_FILE, LOCK_FILE, CHECKPOINT_DIR,
                   BEST_DIR, "logs", "tmp")  # fmt: skip


def claim_model_dir(model_dir: str) -> None:
    """Refuses a model_dir holding files with the trainer's names that nextword did not write (storage.claim);
    a model_dir trained by a nextword from before the ownership mark is recognized by its metrics.json."""
    storage.claim(model_dir, "train", names=MODEL_DIR_NAMES, marker=METRICS_FILE, trust=_metrics_ours,
                  key="train.model_dir")  # fmt: skip


def _metrics_ours(content: dict) -> bool:
    data = content.get("data")
    return isinstance(data, dict) and isinstance(data.get("fingerprint"), str) and "weights_sha256" in content


def exact_evaluator(loop: TrainLoop, setup: Setup) -> evaluate_lib.Evaluator:
    """The evaluator of metrics.json: float32, so its figures are the bundle's.

    Validation during training runs in train.matmul_dtype (bf16 evaluation of the same weights is close to
    float32's but not equal: bench/README.md, "Speed against PyTorch"); the reported figures come from a
    float32 twin of the model holding the same weights.
    """
    if setup.config.train.matmul_dtype == FLOAT32:
        return loop.evaluator
    with setup.strategy.scope():
        twin = _trainer_model(setup.config, setup.spec, FLOAT32)
        twin.set_weights(loop.model.get_weights())
    return evaluate_lib.Evaluator(twin, setup.strategy, loop.inputs)


@contextlib.contextmanager
def training_loop(setup: Setup, heartbeat: Callable[[], None] | None = None) -> Iterator[TrainLoop]:
    """The inputs, model, optimizer and loop, built in the strategy's scope; no checkpoint restored yet."""
    cfg = setup.config.train
    checkpoints, _ = checkpoint_dirs(cfg.model_dir, setup.worker)
    with lost_peers_reported(setup.worker, checkpoints):
        inputs, model, optimizer = _build(setup.config, setup.spec, setup.strategy, setup.worker)
        yield TrainLoop(model, optimizer, setup.strategy, setup.worker, inputs, cfg, setup.spec.fingerprint, heartbeat)


def train(config: Config) -> dict:
    """Trains (or resumes), evaluates on valid and test, writes the outputs; returns the metrics."""
    setup = set_up(config)
    lock = RunLock(setup.config.train.model_dir)
    if setup.worker.is_chief:
        storage.makedirs(setup.config.train.model_dir, "train.model_dir")
        claim_model_dir(setup.config.train.model_dir)  # before the lock: LOCK.json is one of its names
        lock.acquire()  # one trainer per model_dir
    try:
        return _train_locked(setup, lock)
    finally:
        if setup.worker.is_chief:
            lock.release()


def _train_locked(setup: Setup, lock: RunLock) -> dict:
    config, strategy, worker, spec = setup.config, setup.strategy, setup.worker, setup.spec
    cfg = config.train
    with training_loop(setup, lock.refresh if worker.is_chief else None) as loop:
        model, inputs = loop.model, loop.inputs
        _log_setup(model, strategy, worker, inputs)
        resumed_from = loop.restore()  # refuses a model_dir of another model or other data
        config_path = storage.join(cfg.model_dir, contract.CONFIG_FILE)
        if resumed_from and storage.exists(config_path):
            check_resume_settings(storage.read_text(config_path), config, config_path)
        if worker.is_chief:
            storage.write_text(config_path, config_lib.to_yaml(config))
        fit = loop.fit(resumed_from)
        resume = (
            f"the checkpoint (step {fit.steps}) is in {loop.checkpoints.read_dir}: rerun the same command to "
            "evaluate and export"
        )
        evaluator = exact_evaluator(loop, setup)
        metrics = {
            **evaluate_or_stop(evaluator, "the final evaluation", resume),
            "train": {
                "steps": fit.steps,
                "epochs": round(fit.epochs, 4),
                "train_seconds": round(fit.train_seconds, 1),
                "stopped_by": fit.stopped_by,
                "resumed_from_step": fit.resumed_from_step,
                "global_batch": inputs.global_batch,
                "replicas": strategy.num_replicas_in_sync,
                "workers": worker.num_workers,
                "carry_state": cfg.carry_state,
                "best_epoch": fit.best_epoch,
                "best_valid_loss": fit.best_valid_loss,
            },
            "data": {
                "fingerprint": spec.fingerprint,
                "window_length": spec.window_length,
                "vocab_size": spec.vocab_size,
            },
            "weights_sha256": weights_sha256(model),
        }
        if cfg.mixtures:
            with stop_signals(raise_at_once=functools.partial(_stopped, "choosing the mixtures", resume)):
                metrics |= mixtures(evaluator.model, loop, setup)
    with stop_signals(raise_at_once=functools.partial(_stopped, "writing the results", resume)):
        metrics["baseline"] = compare_with_baseline(config, metrics)
        _LOG.info("valid %s", metrics["valid"])
        _LOG.info("test %s", metrics["test"])
        if worker.is_chief:
            evaluate_lib.write_metrics(cfg.model_dir, metrics)
            vertex_tensorboard.write_run_summary(storage.join(cfg.model_dir, "logs"), config, metrics, fit.steps)
            if fit.history:
                evaluate_lib.plot_curves(fit.history, storage.join(cfg.model_dir, CURVES_FILE))
    if worker.is_chief:
        metrics["bundle_dir"] = export_or_stop(lambda: export(model, spec, config), resume)
    return metrics


def _stopped(during: str, resume: str, signum: int) -> TrainingPreempted:
    return TrainingPreempted(f"stopped during {during} for {signal.Signals(signum).name}; {resume}", signum)


def evaluate_or_stop(evaluator: evaluate_lib.Evaluator, during: str, resume: str) -> dict:
    """The valid and test splits' metrics. SIGTERM or Ctrl-C stops it within a step, every worker after the
    same one (the stop votes are all-reduced): TrainingPreempted naming `during` and `resume` (how to go on)."""
    found = {}
    with stop_signals() as stop:
        for split in ("valid", "test"):
            found[split] = evaluator(split, stop_requested=lambda: stop["raised"])
            if found[split] is None:
                raise _stopped(during, resume, stop["signum"])
    return found


def export_or_stop(export_to: Callable[[], str], resume: str) -> str:
    """An export (it returns where it wrote), which SIGTERM or Ctrl-C stops at once (TrainingPreempted naming
    `resume`): only the chief exports, so no worker waits for it, and a bundle is complete only once its
    bundle.json is written last."""
    with stop_signals(raise_at_once=functools.partial(_stopped, "export", resume)):
        return export_to()


def mixtures(model: keras.Model, loop: TrainLoop, setup: Setup, dynamic: bool = False) -> dict:
    """metrics.json's "cache" and "ngram" sections (and "dynamic" if asked): {} on several workers (the cache
    and the n-gram read every row on one process)."""
    if loop.worker.num_workers > 1:
        return {}
    spec = setup.spec
    ngram = evaluate_lib.ngram_tables(setup.config, spec.vocab)
    streams_of = functools.partial(evaluate_lib.split_streams, model, loop.inputs)
    found = evaluate_lib.mixture_sections(streams_of, lm.of(model).hidden_units, spec, ngram)
    if dynamic and (section := evaluate_lib.dynamic_section(model, spec, ngram, spec.window_length)):
        found["dynamic"] = section
    return found


def run(argv: list[str] | None = None) -> dict:
    """`python -m trainer` / `nextword train`; returns the metrics. In a Vertex AI tuning trial, its
    `--<key>=<value>` arguments set train.* keys and the metric is reported (nextword/cloud/tuning.py)."""
    args, extra = cli_common.parser("train").parse_known_args(argv)
    config = config_lib.load(args.config, args.overrides + tuning.trial_overrides(extra))
    metrics = train(vertex_env.training_config(config, os.environ))
    tuning.report_trial_metric(config, metrics, os.environ)
    return metrics


@contextlib.contextmanager
def restored_best(config: Config, what: str) -> Iterator[tuple[TrainLoop, Setup]]:
    """The training loop with the best validation epoch's weights (those training exported) restored."""
    setup = set_up(config)
    with training_loop(setup) as loop:
        if not loop.restore():
            raise FileNotFoundError(
                f"{loop.checkpoints.read_dir}: no checkpoint to {what}; train first (nextword train)"
            )
        loop.restore_best()
        yield loop, setup


def run_export(argv: list[str] | None = None) -> str:
    """`nextword export`: the bundle again from the best checkpoint (e.g. for signatures added since), or with
    --format tflite the model for a device (trainer/tflite.py)."""
    args = cli_common.parser("export").parse_args(argv)
    tflite = args.format == "tflite"
    if (args.serving_dir and tflite) or ((args.out or args.quantize != "none") and not tflite):
        raise ValueError("--serving-dir is for --format bundle, --out and --quantize for --format tflite")
    config = config_lib.load(args.config, args.overrides)
    with restored_best(config, "export") as (loop, setup):
        model, spec, config = loop.model, setup.spec, setup.config
        resume = "the export is incomplete (a bundle is refused by nextword predict): rerun the same command"
        if tflite:
            out = args.out or storage.join(config.train.model_dir, tflite_lib.TFLITE_DIR)
            return export_or_stop(lambda: tflite_lib.export(model, spec.data_dir, config, out, args.quantize), resume)
        return export_or_stop(lambda: export(model, spec, config, args.serving_dir), resume)


def run_evaluate(argv: list[str] | None = None) -> dict:
    """`nextword evaluate`: the best validation epoch's weights (the exported ones) on valid and test."""
    args = cli_common.parser("evaluate").parse_args(argv)
    config, dynamic = config_lib.load(args.config, args.overrides), args.dynamic
    cfg = config.train
    with restored_best(config, "evaluate") as (loop, setup):
        if setup.worker.is_chief:
            claim_model_dir(cfg.model_dir)  # before the work: metrics.json is rewritten at the end
        evaluator = exact_evaluator(loop, setup)
        nothing_written = "nothing was written: rerun it"
        found = evaluate_or_stop(evaluator, "evaluation", nothing_written)
        with stop_signals(raise_at_once=functools.partial(_stopped, "choosing the mixtures", nothing_written)):
            found |= mixtures(evaluator.model, loop, setup, dynamic)
        found["weights_sha256"] = weights_sha256(loop.model)
        worker = loop.worker
    metrics = evaluate_lib.read_metrics(cfg.model_dir) | found
    if worker.is_chief:
        evaluate_lib.write_metrics(cfg.model_dir, metrics)
    _LOG.info("evaluated step %d: valid %s, test %s", loop.step, found["valid"], found["test"])
    return metrics
