"""Typed configuration: a tree of frozen dataclasses loaded strictly from YAML.

Unknown or mistyped keys are one-line `ConfigError`s naming the dotted path.
Overrides use the same dotted paths (`--set train.batch_size=32`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from nextword.text.contract import NORMALIZATIONS, TextSettings

_LOG = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration problem, reported on one line that names the key."""


@dataclass(frozen=True)
class SplitConfig:
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    # Lines per split block: consecutive lines stay together so that
    # overlapping windows do not leak between train and test.
    block_lines: int = 20
    # Optional explicit globs per split (e.g. the Penn Treebank's own files);
    # when set, fractions are ignored and `preprocess.corpus_glob` is unused.
    train_glob: str = ""
    valid_glob: str = ""
    test_glob: str = ""


@dataclass(frozen=True)
class PreprocessConfig:
    corpus_glob: str = "./corpus/**/*.txt"
    output_dir: str = "runs/data"
    text: TextSettings = field(default_factory=TextSettings)
    # Context words per record (each holds window_length + 1 ids). With carried
    # state (train.carry_state) this is the truncated-BPTT length, not a limit on context.
    window_length: int = 35
    stride: int = 0  # 0: window_length, so that every token is predicted exactly once
    num_shards: int = 4
    # The tokens after a segment's last full window go into one more window,
    # filled with padding: every token but a segment's first is predicted.
    pad_last_window: bool = True
    split: SplitConfig = field(default_factory=SplitConfig)
    # Bytes read at a time from a file: bounds memory even for a 20 MB line.
    read_chunk_bytes: int = 1 << 20

    @property
    def window_stride(self) -> int:
        return self.stride or self.window_length


@dataclass(frozen=True)
class ModelConfig:
    # Named parts (trainer/model.py): an embedding, a recurrent stack (trainer/recurrent.py) and an
    # output head (trainer/heads.py). The defaults are the recipe measured in bench/quality.py (README,
    # "Quality"): one tied LSTM layer with strong dropout, sized by the training split (trainer/sizing.py):
    # 384 units and dropout 0.65 below 500k tokens, 256 and 0.5 from there.
    embedding_dim: int = 0  # 0: the units
    cell: str = "lstm"  # lstm | gru, both cuDNN-eligible
    units: int = 0  # 0: by the training split's size
    num_layers: int = 1
    dropout: float | None = None  # null: by the training split's size
    # One dropout mask per sequence, the same at every time step (Gal & Ghahramani 2016), on the
    # embeddings, between layers and before the output; outside the recurrent layers, so cuDNN stays eligible.
    locked_dropout: bool = False
    # full: its own output matrix; tied: the input embedding, transposed (Press & Wolf 2017, Inan et al.
    # 2017); adaptive: tied, with Grave et al.'s adaptive softmax; auto: tied below 5000 words, adaptive
    # from there (the full softmax dominates the cost of a large vocabulary; not yet the default, as its
    # quality at the defaults' size is not measured to the end).
    head: str = "tied"
    forget_bias: float = 1.0  # lstm only
    # Adaptive input and softmax (trainer/adaptive.py): ids below the first cutoff are the head, each
    # further range a cluster with vectors `adaptive_factor` times smaller than the one before. Empty:
    # a tenth and two fifths of the vocabulary (1000 and 4000 of a 10k vocabulary).
    adaptive_cutoffs: tuple[int, ...] = ()
    adaptive_factor: int = 4


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"  # adam | sgd
    learning_rate: float = 0.005
    clip_global_norm: float = 5.0
    # SGD schedule as in Zaremba et al.: after `decay_after_epochs`, multiply
    # the learning rate by `decay` every epoch.
    decay: float = 1.0
    decay_after_epochs: int = 0
    # Validation-driven schedule (used when decay == 1): multiply the learning
    # rate by this after every epoch whose validation loss is no better than the best (1: off).
    plateau_factor: float = 0.25
    weight_decay: float = 0.0  # decoupled (AdamW / SGDW style), on every weight but biases


@dataclass(frozen=True)
class TrainConfig:
    data_dir: str = "runs/data"
    model_dir: str = "runs/model"
    strategy: str = "local"  # local | mirrored | multiworker
    per_replica_batch_size: int = 0  # 0: by the training split's size (16 below 500k tokens, else 32)
    epochs: int = 40  # a cap: early stopping usually ends the run first
    steps_per_epoch: int = 0  # 0: one full pass over the training split
    max_steps: int = 0  # 0: no limit
    time_budget_s: float = 0.0  # 0: no limit; stops cleanly after this much training time
    checkpoint_every_steps: int = 200
    shuffle_buffer: int = 10000
    seed: int = 1234
    # The dtype of the large matmuls: the output layer's and the LSTMs' input projections, in evaluation
    # their recurrent matmuls too; everything else, the variables and the bundle stay float32
    # (trainer/matmul.py, trainer/recurrent.py). "auto": bfloat16 on a CPU with bf16 matmul units
    # (AMX / AVX512_BF16) and no GPU, else float32. Paired with PyTorch's float32 in the same bursts,
    # bf16 trains faster than float32 at both benchmark sizes, to a perplexity close to float32's after
    # the same steps (bench/README.md, "Speed against PyTorch"; bench/results/peer_bench.json).
    # metrics.json's valid and test figures are computed in float32 whatever this says, so they are the
    # bundle's.
    matmul_dtype: str = "auto"  # auto | float32 | bfloat16
    # Stateful truncated BPTT (Zaremba et al. 2014), the default: each batch row
    # is one stream of consecutive windows, read straight from the shards, and
    # the LSTM state carries over from one window to the next, in training and
    # evaluation. Needs stride == window_length (the default) and records in
    # corpus order (preprocessing writes runs of consecutive windows to each
    # shard); the trainer checks both. false: shuffled windows, context reset at each.
    carry_state: bool = True
    keep_checkpoints: int = 3
    # Stop after this many epochs in a row without a better validation loss (0: never). Whatever
    # stops the run, the weights evaluated and exported are those of the best validation epoch.
    early_stopping_patience: int = 3
    # multiworker: how long each worker waits for all of them to join at startup
    # before failing (cloud replicas can start minutes apart). A worker lost
    # later is noticed within seconds, whatever this says.
    cluster_join_timeout_s: float = 600.0
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)


@dataclass(frozen=True)
class PredictConfig:
    bundle_dir: str = "runs/model/bundle"
    # One glob, or several separated by commas; local or gs://.
    input_glob: str = "samples/predict_input.txt"
    output_dir: str = "runs/predictions"
    mode: str = "both"  # next | score | both
    # line: each line scored alone, from a zero state. document: the model's state carries across the
    # lines of a file (mode score), as the trainer's evaluation carries it; each byte range first
    # reads up to `warmup_bytes` of the text before it to warm the state up (0: from a zero state).
    context: str = "line"
    # Enough for ranges to score PTB test as one range does (bench/README.md, "Batch prediction").
    warmup_bytes: int = 8192
    # Score records also list every scored token: its text, whether it was unknown, its log-probability.
    per_token: bool = False
    top_k: int = 5
    # Padded token positions per model call (RunInference batches by this budget).
    max_batch_tokens: int = 8192
    # Model calls run at once by each worker in line context, each on its share of the cores; 0: 2 in
    # mode next, 1 in modes that score: two calls raise a small model's lines/s in mode next, and in
    # mode score gain little for twice the peak RSS, a score call holding batch x vocabulary floats
    # (bench/README.md, "Batch prediction").
    model_calls_in_flight: int = 0
    # Lines with more whitespace-separated words, or more bytes, are not sent to
    # the model: their record says error "line_too_long" (nothing is dropped).
    max_line_tokens: int = 200000
    max_line_bytes: int = 8 << 20
    # Files are read in byte ranges of at most this size (smaller for a small
    # input, down to 1 MiB), so that workers share even a single large file.
    split_bytes: int = 64 << 20
    # One model per machine instead of one per worker process (for big models).
    share_model_across_processes: bool = False
    # BigQuery table PROJECT:DATASET.TABLE that also receives the records once the job is complete
    # (batch_predict/bigquery_sink.py; replaced on each run); "": the JSONL shards only.
    output_table: str = ""


@dataclass(frozen=True)
class BaselineConfig:
    """The Kneser-Ney n-gram baseline (`nextword baseline`): counted on train.data_dir's training split."""

    order: int = 5
    output_dir: str = ""  # "" -> <train.data_dir>/baseline
    # Buckets (at least): each step of the estimation holds one bucket's n-grams (those ending in the same
    # two words), so the steps spread over Dataflow workers. More are used when the corpus needs them to
    # stay within memory_budget_mb.
    buckets: int = 16
    # Working memory of one estimation step, in MiB (64-65536): it sizes the counting chunks and the number
    # of buckets, so a step's memory is bounded by it, not by the corpus.
    memory_budget_mb: int = 1024
    # Raw-count thresholds per order, as lmplz --prune: an n-gram seen at most this often is dropped (its
    # mass goes to its context's backoff). Non-decreasing, the first 0 (unigrams stay); the last value
    # applies to the higher orders; () prunes nothing.
    prune: tuple[int, ...] = ()


@dataclass(frozen=True)
class DataflowConfig:
    """Dataflow workers of preprocessing and batch prediction (`--runner DataflowRunner`)."""

    machine_type: str = "n2-standard-4"
    num_workers: int = 2
    max_num_workers: int = 20
    # Workers install our package from this file; unused with a custom container
    # (infra/Dockerfile.beam), which already holds the package.
    setup_file: str = "./setup.py"
    sdk_container_image: str = ""
    service_account: str = ""  # worker identity; empty: the project's default compute account


@dataclass(frozen=True)
class TrainingJobConfig:
    """The Vertex AI CustomJob that runs `nextword cloud train` (infra/Dockerfile.trainer)."""

    image_uri: str = ""  # e.g. us-central1-docker.pkg.dev/PROJECT/nextword/trainer:TAG
    machine_type: str = "n1-standard-16"
    accelerator_type: str = "NVIDIA_TESLA_T4"
    accelerator_count: int = 4  # GPUs per machine
    replica_count: int = 2  # machines of the multiworker job (one chief + workers)
    boot_disk_size_gb: int = 100
    service_account: str = ""


@dataclass(frozen=True)
class ScheduleConfig:
    """Cloud Scheduler job that creates the training CustomJob periodically."""

    cron: str = "0 3 * * 1"  # unix-cron, in time_zone
    time_zone: str = "Etc/UTC"
    strategy: str = "multiworker"  # which training spec it creates: mirrored | multiworker
    # Identity whose OAuth token Scheduler sends to the Vertex AI API (needs roles/aiplatform.user).
    service_account: str = ""


@dataclass(frozen=True)
class TuningConfig:
    """Vertex AI hyperparameter tuning of `nextword train` (nextword/cloud/tuning.py; rendered when trials > 0)."""

    # "KEY=LOW:HIGH" (a range; "KEY=LOW:HIGH:log" on a log scale) or "KEY=A,B,C" (choices); KEY a train.* key
    parameters: tuple[str, ...] = ()
    metric: str = "valid_perplexity"  # what each trial reports: valid_perplexity | valid_loss (both minimized)
    max_trial_count: int = 0  # trials in all, >= 0 (0: no tuning job)
    parallel_trial_count: int = 2  # trials at once, 1..max_trial_count


@dataclass(frozen=True)
class RegistryConfig:
    """Vertex AI Model Registry and batch prediction (nextword/cloud/registry.py)."""

    model_id: str = ""  # the registry model every promoted run becomes a version of ("": no upload)
    alias: str = "promoted"  # the version alias that follows LATEST; [a-z][a-zA-Z0-9-]*, not "default"
    # Vertex AI's prebuilt TensorFlow serving container (TF Serving, calling serving_default)
    serving_image: str = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
    # BatchPredictionJob: input gs://….jsonl ({"text": line} per line) or bq://PROJECT.DATASET.TABLE (a text
    # column); output gs://… (JSONL) or bq://PROJECT[.DATASET] (a table per job)
    batch_input: str = ""
    batch_output: str = ""
    batch_machine_type: str = "n1-standard-4"
    batch_max_replica_count: int = 4  # machines at most, >= 1


@dataclass(frozen=True)
class CloudConfig:
    """Google Cloud settings: see nextword/cloud/__init__.py and `nextword cloud render`."""

    project: str = ""
    region: str = "us-central1"
    config_uri: str = ""  # gs:// copy of this YAML file: what the cloud jobs read
    temp_location: str = ""  # gs://BUCKET/tmp (Dataflow)
    staging_location: str = ""  # gs://BUCKET/staging (Dataflow)
    # Training runs land in <runs_dir>/<YYYY-MM-DD>-<job id>/; <runs_dir>/LATEST.json names the promoted one.
    runs_dir: str = ""
    # Promotion bar: LATEST moves to a run only if its test perplexity is at most this (0: never).
    max_test_perplexity: float = 0.0
    # Promotion bar against the n-gram baseline on the same tokens: LATEST moves only if the run's test
    # perplexity is at most this fraction of the baseline's (e.g. 0.85; 0: not checked).
    max_baseline_ratio: float = 0.0
    dataflow: DataflowConfig = field(default_factory=DataflowConfig)
    training: TrainingJobConfig = field(default_factory=TrainingJobConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)


@dataclass(frozen=True)
class Config:
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)


# Keys an earlier version had: read with a warning, so old configs and model directories keep working.
RETIRED_KEYS = {"predict.num_shards": "batch prediction writes one output shard per byte range"}

_CHOICES = {
    "preprocess.text.normalization": NORMALIZATIONS,
    "train.strategy": ("local", "mirrored", "multiworker"),
    "train.optimizer.name": ("adam", "sgd"),
    "predict.mode": ("next", "score", "both"),
    "predict.context": ("line", "document"),
    "train.model.cell": ("lstm", "gru"),
    "train.model.head": ("auto", "tied", "full", "adaptive"),
    "train.matmul_dtype": ("auto", "float32", "bfloat16"),
    "cloud.schedule.strategy": ("mirrored", "multiworker"),
    "cloud.tuning.metric": ("valid_perplexity", "valid_loss"),
}


# Numbers in exponent form without a dot, which PyYAML (YAML 1.1) leaves as strings.
_YAML11_MISSED_FLOAT = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Checks one leaf value against its annotated type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        (tp,) = [t for t in options if t is not type(None)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is tuple:  # tuple[X, ...]: a YAML list of X
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        (item, _) = typing.get_args(tp)
        return tuple(_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _YAML11_MISSED_FLOAT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads `1e-3` (no dot) as a string; every user means the number
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        # NaN passes every range check (NaN <= 0 is False) and ends up as invalid JSON in outputs.
        raise ConfigError(f"{path}: must be a finite number, got {value!r}")
    if tp in (int, float) and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def _migrate_model(section: dict) -> dict:
    """train.model of configs before the model room: `lstm_units` is `units`, `tie_embeddings` a `head`.

    The old key wins over the new one: overrides are applied to a tree that already holds every key.
    """
    section = dict(section)
    if "lstm_units" in section:
        _LOG.warning("train.model.lstm_units: renamed train.model.units; use that name")
        section["units"] = section.pop("lstm_units")
    if "tie_embeddings" in section:
        _LOG.warning("train.model.tie_embeddings: replaced by train.model.head (tied, full or adaptive)")
        tied = section.pop("tie_embeddings")
        if not isinstance(tied, bool):
            raise ConfigError(f"train.model.tie_embeddings: expected bool, got {type(tied).__name__} {tied!r}")
        section["head"] = ("adaptive" if section.get("adaptive_cutoffs") else "tied") if tied is True else "full"
    return section


def _migrate_train(section: dict) -> dict:
    """train of configs before "auto" bf16: the boolean `mixed_precision` is `matmul_dtype`.

    The old key wins over the new one, as in _migrate_model.
    """
    section = dict(section)
    if "mixed_precision" in section:
        _LOG.warning("train.mixed_precision: replaced by train.matmul_dtype (auto, float32 or bfloat16)")
        mixed = section.pop("mixed_precision")
        if not isinstance(mixed, bool):
            raise ConfigError(f"train.mixed_precision: expected bool, got {type(mixed).__name__} {mixed!r}")
        section["matmul_dtype"] = "bfloat16" if mixed else "float32"
    return section


_MIGRATIONS = {ModelConfig: _migrate_model, TrainConfig: _migrate_train}


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    if cls in _MIGRATIONS:
        data = _MIGRATIONS[cls](data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        # Odd keys (newlines, non-strings) are shown as Python literals so the error stays on one line.
        shown = key if isinstance(key, str) and key.isidentifier() else repr(key)
        path = f"{prefix}.{shown}" if prefix else shown
        if path in RETIRED_KEYS:  # an older config, or the config.yaml of a run made by an older version
            _LOG.warning("%s: no longer used (%s); remove it from the config", path, RETIRED_KEYS[path])
            continue
        if key not in names:
            raise ConfigError(f"{path}: key does not exist (valid keys: {', '.join(sorted(names))})")
        values[key] = _coerce(value, hints[key], path)
    return cls(**values)


def _to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return list(obj)  # YAML's safe dumper writes lists only
    return obj


def _check(config: Config) -> None:
    """Cross-field checks, each naming the key to fix."""
    for path, choices in _CHOICES.items():
        value: Any = config
        for part in path.split("."):
            value = getattr(value, part)
        if value not in choices:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(choices)}")
    p = config.preprocess
    positive = {
        "preprocess.window_length": p.window_length,
        "preprocess.num_shards": p.num_shards,
        "preprocess.split.block_lines": p.split.block_lines,
        "preprocess.read_chunk_bytes": p.read_chunk_bytes,
        "train.epochs": config.train.epochs,
        "train.checkpoint_every_steps": config.train.checkpoint_every_steps,
        "train.keep_checkpoints": config.train.keep_checkpoints,
        "train.cluster_join_timeout_s": config.train.cluster_join_timeout_s,
        "train.shuffle_buffer": config.train.shuffle_buffer,
        "train.model.num_layers": config.train.model.num_layers,
        "train.optimizer.learning_rate": config.train.optimizer.learning_rate,
        "predict.top_k": config.predict.top_k,
        "predict.max_batch_tokens": config.predict.max_batch_tokens,
        "predict.max_line_tokens": config.predict.max_line_tokens,
        "predict.max_line_bytes": config.predict.max_line_bytes,
        "predict.split_bytes": config.predict.split_bytes,
        "baseline.order": config.baseline.order,
        "baseline.buckets": config.baseline.buckets,
    }
    for path, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{path}: must be > 0, got {value!r}")
    non_negative = {
        "preprocess.text.min_count": p.text.min_count,
        "preprocess.stride": p.stride,
        "train.model.units": config.train.model.units,
        "train.model.embedding_dim": config.train.model.embedding_dim,
        "train.per_replica_batch_size": config.train.per_replica_batch_size,
        "preprocess.split.valid_fraction": p.split.valid_fraction,
        "preprocess.split.test_fraction": p.split.test_fraction,
        "train.steps_per_epoch": config.train.steps_per_epoch,
        "predict.warmup_bytes": config.predict.warmup_bytes,
        "predict.model_calls_in_flight": config.predict.model_calls_in_flight,
        "train.max_steps": config.train.max_steps,
        "train.time_budget_s": config.train.time_budget_s,
        "train.optimizer.clip_global_norm": config.train.optimizer.clip_global_norm,
        "train.optimizer.decay_after_epochs": config.train.optimizer.decay_after_epochs,
        "train.optimizer.weight_decay": config.train.optimizer.weight_decay,
        "train.early_stopping_patience": config.train.early_stopping_patience,
        "cloud.max_baseline_ratio": config.cloud.max_baseline_ratio,
    }
    for path, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{path}: must be >= 0, got {value!r}")
    if p.split.valid_fraction + p.split.test_fraction >= 1:
        raise ConfigError(
            "preprocess.split.valid_fraction: valid_fraction + test_fraction must be < 1, "
            f"got {p.split.valid_fraction} + {p.split.test_fraction}"
        )
    if config.predict.context == "document" and config.predict.mode != "score":
        raise ConfigError(
            f"predict.context: document context scores the lines of a file in order; set predict.mode=score "
            f"(got {config.predict.mode!r}), or predict.context=line for next words"
        )
    explicit = [p.split.train_glob, p.split.valid_glob, p.split.test_glob]
    if any(explicit) and not all(explicit):
        raise ConfigError("preprocess.split.train_glob: set all of train_glob, valid_glob and test_glob, or none")
    if p.text.max_size is not None and p.text.max_size < 2:
        raise ConfigError(f"preprocess.text.max_size: must be >= 2 or null, got {p.text.max_size}")
    if p.text.normalization == "seed" and not p.text.unknown_token.strip():
        raise ConfigError("preprocess.text.unknown_token: must not be empty")
    model = config.train.model
    if model.adaptive_cutoffs:
        cutoffs = model.adaptive_cutoffs
        if any(c <= 0 for c in cutoffs) or list(cutoffs) != sorted(set(cutoffs)):
            raise ConfigError(f"train.model.adaptive_cutoffs: must be increasing and > 0, got {list(cutoffs)}")
        if model.head in ("tied", "full"):
            raise ConfigError(f"train.model.adaptive_cutoffs: the {model.head} head has none; set head: adaptive")
    if model.adaptive_factor < 1:
        raise ConfigError(f"train.model.adaptive_factor: must be >= 1, got {model.adaptive_factor}")
    if config.train.model.dropout is not None and not 0 <= config.train.model.dropout < 1:
        raise ConfigError(f"train.model.dropout: must be in [0, 1), got {config.train.model.dropout}")
    prune = config.baseline.prune
    if prune and (prune[0] != 0 or any(b < a for a, b in zip(prune, prune[1:], strict=False))):
        raise ConfigError(f"baseline.prune: must start with 0 and never decrease, got {list(prune)}")
    model, train, predict = config.train.model, config.train, config.predict
    # Upper bounds of the sizes that could exhaust a machine before any work shows it.
    for path, (value, bound, why) in {
        "preprocess.window_length": (p.window_length, 4096, "one window is one truncated-BPTT sequence in memory"),
        "preprocess.num_shards": (p.num_shards, 10_000, "each shard is a file open per writer"),
        "preprocess.read_chunk_bytes": (p.read_chunk_bytes, 1 << 30, "each read is held in memory"),
        "preprocess.text.max_size": (p.text.max_size or 0, 10_000_000, "the output layer is vocabulary x units"),
        "train.model.units": (model.units, 16_384, "an LSTM layer's kernel is 32 units^2 bytes"),
        "train.model.embedding_dim": (model.embedding_dim, 16_384, "the embedding is vocabulary x embedding_dim"),
        "train.model.num_layers": (model.num_layers, 64, "each layer's activations are kept for the gradient"),
        "train.per_replica_batch_size": (train.per_replica_batch_size, 65_536, "logits: batch x window x words"),
        "train.shuffle_buffer": (train.shuffle_buffer, 10_000_000, "the buffer holds that many windows"),
        "predict.top_k": (predict.top_k, 1000, "every record carries k words"),
        "predict.max_batch_tokens": (predict.max_batch_tokens, 1 << 20, "a call's logits: tokens x words"),
        "predict.max_line_bytes": (predict.max_line_bytes, 1 << 30, "a line is held in memory"),
        "baseline.order": (config.baseline.order, 10, "each order adds a count table as large as the corpus"),
        "baseline.buckets": (config.baseline.buckets, 65_536, "each bucket is a set of work files"),
    }.items():
        if value > bound:
            raise ConfigError(f"{path}: must be <= {bound} ({why}), got {value!r}")
    if not 64 <= config.baseline.memory_budget_mb <= 65536:
        raise ConfigError(f"baseline.memory_budget_mb: must be in 64..65536, got {config.baseline.memory_budget_mb}")
    if not 0 < config.train.optimizer.decay <= 1:
        raise ConfigError(f"train.optimizer.decay: must be in (0, 1], got {config.train.optimizer.decay}")
    if not 0 < config.train.optimizer.plateau_factor <= 1:
        raise ConfigError(
            f"train.optimizer.plateau_factor: must be in (0, 1], got {config.train.optimizer.plateau_factor}"
        )


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {part} is not a section; override a key inside it")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` -> ("a.b", value), the value read as YAML (`3`, `true`, `x`)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected dotted.key=value")
    try:
        return key.strip(), yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"{key}: value {raw!r} is not valid YAML ({err.problem})") from None


def from_dict(data: dict | None, overrides: list[str] = ()) -> Config:
    """Builds and checks a Config from a plain mapping and dotted overrides."""
    tree = {} if data is None else data
    if not isinstance(tree, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(tree).__name__}")
    tree = _to_dict(_build(Config, tree, ""))  # validates the file before overrides
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(tree, key, value)
    config = _build(Config, tree, "")
    _check(config)
    return config


def _refuse_duplicate_keys(node: yaml.Node | None, path: str) -> None:
    """A key given twice in one mapping is an error (PyYAML would silently keep the last value)."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise ConfigError(f"{path} line {key.start_mark.line + 1}: key {key.value!r} is given twice")
                seen.add(key.value)
            _refuse_duplicate_keys(value, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(item, path)


def yaml_to_dict(text: str, path: str) -> Any:
    """YAML text -> plain data, with one-line errors naming the file (duplicate keys refused)."""
    try:
        _refuse_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader), path)
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None


def load(path: str | None = None, overrides: list[str] = ()) -> Config:
    """Loads a YAML config file (or the defaults when `path` is None)."""
    data = None
    if path:
        from nextword import storage

        try:
            data = yaml_to_dict(storage.read_text(path), path)
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save the config file as UTF-8") from None
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
    return from_dict(data, overrides)


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(_to_dict(config), sort_keys=False)


def section_to_dict(section: Any) -> dict:
    return _to_dict(section)
