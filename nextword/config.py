"""Typed configuration: a tree of frozen dataclasses loaded strictly from YAML.

Unknown or mistyped keys are one-line `ConfigError`s naming the dotted path.
Overrides use the same dotted paths (`--set train.batch_size=32`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import posixpath
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

import yaml

from nextword.setting import Rule, rule_of, setting
from nextword.text.contract import TextSettings

_LOG = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration problem, reported on one line that names the key."""


@dataclass(frozen=True)
class SplitConfig:
    valid_fraction: float = setting(0.1, low=0)
    test_fraction: float = setting(0.1, low=0)
    # Lines per split block: consecutive lines stay together so that
    # overlapping windows do not leak between train and test.
    block_lines: int = setting(20, low=0, low_open=True)
    # Optional explicit globs per split (e.g. the Penn Treebank's own files);
    # when set, fractions are ignored and `preprocess.corpus_glob` is unused.
    train_glob: str = setting("")
    valid_glob: str = setting("")
    test_glob: str = setting("")


@dataclass(frozen=True)
class PreprocessConfig:
    corpus_glob: str = setting("./corpus/**/*.txt")
    output_dir: str = setting("", follows="run_dir", under="data")  # "": <run_dir>/data
    text: TextSettings = setting(TextSettings)
    # Context words per record (each holds window_length + 1 ids). With carried
    # state (train.carry_state) this is the truncated-BPTT length, not a limit on context.
    window_length: int = setting(
        35, low=0, low_open=True, high=4096, why="one window is one truncated-BPTT sequence in memory"
    )
    stride: int = setting(0, low=0)  # 0: window_length, so that every token is predicted exactly once
    num_shards: int = setting(4, low=0, low_open=True, high=10_000, why="each shard is a file open per writer")
    # The tokens after a segment's last full window go into one more window,
    # filled with padding: every token but a segment's first is predicted.
    pad_last_window: bool = setting(True)
    split: SplitConfig = setting(SplitConfig)
    # Bytes read at a time from a file: bounds memory even for a 20 MB line.
    read_chunk_bytes: int = setting(1 << 20, low=0, low_open=True, high=1 << 30, why="each read is held in memory")

    @property
    def window_stride(self) -> int:
        return self.stride or self.window_length


@dataclass(frozen=True)
class ModelConfig:
    # Named parts (trainer/model.py): an embedding, a recurrent stack (trainer/recurrent.py) and an
    # output head (trainer/heads.py). The defaults are the recipe measured in bench/quality.py (README,
    # "Quality"): a tied LSTM with strong dropout, its units, layers and dropout sized by the training split
    # and the device (trainer/sizing.py's ladders).
    embedding_dim: int = setting(0, low=0, high=16_384, why="the embedding is vocabulary x embedding_dim")  # 0: units
    cell: str = setting("lstm", choices=("lstm", "gru"))  # both cuDNN-eligible
    units: int = setting(0, low=0, high=16_384, why="an LSTM layer's kernel is 32 units^2 bytes")  # 0: by the split
    num_layers: int = setting(0, low=0, high=64, why="each layer's activations are kept for the gradient")  # 0: by size
    dropout: float | None = setting(None, low=0, high=1, high_open=True)  # null: by the training split's size
    # One dropout mask per sequence, the same at every time step (Gal & Ghahramani 2016), on the
    # embeddings, between layers and before the output; outside the recurrent layers, so cuDNN stays eligible.
    locked_dropout: bool = setting(False)
    # full: its own output matrix; tied: the input embedding, transposed (Press & Wolf 2017, Inan et al.
    # 2017); adaptive: tied, with Grave et al.'s adaptive softmax; auto: tied below 5000 words, adaptive
    # from there (the full softmax dominates the cost of a large vocabulary; not yet the default, as its
    # quality at the defaults' size is not measured to the end).
    head: str = setting("tied", choices=("auto", "tied", "full", "adaptive"))
    forget_bias: float = setting(1.0)  # lstm only
    # Adaptive input and softmax (trainer/adaptive.py): ids below the first cutoff are the head, each
    # further range a cluster with vectors `adaptive_factor` times smaller than the one before. Empty:
    # a tenth and two fifths of the vocabulary (1000 and 4000 of a 10k vocabulary).
    adaptive_cutoffs: tuple[int, ...] = setting(())
    adaptive_factor: int = setting(4, low=1)


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = setting("adam", choices=("adam", "sgd"))
    learning_rate: float = setting(0.005, low=0, low_open=True)
    clip_global_norm: float = setting(5.0, low=0)
    # SGD schedule as in Zaremba et al.: after `decay_after_epochs`, multiply
    # the learning rate by `decay` every epoch.
    decay: float = setting(1.0, low=0, low_open=True, high=1)
    decay_after_epochs: int = setting(0, low=0)
    # Validation-driven schedule (used when decay == 1, and not in the budget's cooldown): multiply the learning
    # rate by this after every epoch whose validation loss is no better than the best (1: off).
    plateau_factor: float = setting(0.25, low=0, low_open=True, high=1)
    weight_decay: float = setting(0.0, low=0)  # decoupled (AdamW / SGDW style), on every weight but biases
    # Time-budgeted runs (train.time_budget_s): over this last fraction of the budget the rate falls
    # linearly to zero, so the weights the budget ends on are annealed rather than caught mid-stride
    # (warmup-stable-decay; Li et al. 2020, "Budgeted training"). 0: off. Not with the per-epoch decay
    # (decay < 1), which sets the rate itself.
    budget_cooldown: float = setting(0.5, low=0, high=1)


@dataclass(frozen=True)
class TrainConfig:
    data_dir: str = setting("", follows="preprocess.output_dir")  # "": preprocess.output_dir
    model_dir: str = setting("", follows="run_dir", under="model")  # "": <run_dir>/model
    strategy: str = setting("local", choices=("local", "mirrored", "multiworker"))
    # 0: by the training split's size (16 below 500k tokens, else 32)
    per_replica_batch_size: int = setting(
        0, low=0, high=65_536, why="logits: batch x window x words", fixed_on_resume=True
    )
    epochs: int = setting(40, low=0, low_open=True)  # a cap: early stopping usually ends the run first
    steps_per_epoch: int = setting(0, low=0)  # 0: one full pass over the training split
    max_steps: int = setting(0, low=0)  # 0: no limit
    time_budget_s: float = setting(0.0, low=0)  # 0: no limit; stops cleanly after this much training time
    checkpoint_every_steps: int = setting(200, low=0, low_open=True)
    shuffle_buffer: int = setting(
        10000, low=0, low_open=True, high=10_000_000, why="the buffer holds that many windows"
    )
    seed: int = setting(1234, fixed_on_resume=True)
    # The dtype of the large matmuls: the output layer's and the LSTMs' input projections, in evaluation
    # their recurrent matmuls too; everything else, the variables and the bundle stay float32
    # (trainer/matmul.py, trainer/recurrent.py). "auto": bfloat16 on a CPU with bf16 matmul units
    # (AMX / AVX512_BF16) and no GPU, else float32. Paired with PyTorch's float32 in the same bursts,
    # bf16 trains faster than float32 at both benchmark sizes, to a perplexity close to float32's after
    # the same steps (bench/README.md, "Speed against PyTorch"; bench/results/peer_bench.json).
    # metrics.json's valid and test figures are computed in float32 whatever this says, so they are the
    # bundle's. Not fixed on resume: the variables are float32 whatever the matmuls run in, and "auto" may
    # choose otherwise on the machine that resumes.
    matmul_dtype: str = setting("auto", choices=("auto", "float32", "bfloat16"))
    # Stateful truncated BPTT (Zaremba et al. 2014), the default: each batch row
    # is one stream of consecutive windows, read straight from the shards, and
    # the LSTM state carries over from one window to the next, in training and
    # evaluation. Needs stride == window_length (the default) and records in
    # corpus order (preprocessing writes runs of consecutive windows to each
    # shard); the trainer checks both. false: shuffled windows, context reset at each.
    carry_state: bool = setting(True, fixed_on_resume=True)
    # After the final evaluation, choose the continuous cache and the n-gram mixture on valid (metrics.json's
    # "cache" and "ngram", docs/quality.md), which the export then carries into the bundle's document scoring.
    # One process only; `nextword evaluate` chooses them again for any checkpoint.
    mixtures: bool = setting(True)
    keep_checkpoints: int = setting(3, low=0, low_open=True)
    # Stop after this many epochs in a row without a better validation loss (0: never). Whatever
    # stops the run, the weights evaluated and exported are those of the best validation epoch.
    early_stopping_patience: int = setting(3, low=0)
    # multiworker: how long each worker waits for all of them to join at startup
    # before failing (cloud replicas can start minutes apart). A worker lost
    # later is noticed within seconds, whatever this says.
    cluster_join_timeout_s: float = setting(600.0, low=0, low_open=True)
    model: ModelConfig = setting(ModelConfig, fixed_on_resume=True)
    optimizer: OptimizerConfig = setting(OptimizerConfig, fixed_on_resume=True)


@dataclass(frozen=True)
class PredictConfig:
    bundle_dir: str = setting("", follows="train.model_dir", under="bundle")  # "": <train.model_dir>/bundle
    # One glob, or several separated by commas; local or gs://.
    input_glob: str = setting("samples/predict_input.txt")
    output_dir: str = setting("", follows="run_dir", under="predictions")  # "": <run_dir>/predictions
    mode: str = setting("both", choices=("next", "score", "both"), changes_records=True)
    # line: each line scored alone, from a zero state. document: the model's state carries across the
    # lines of a file (mode score), as the trainer's evaluation carries it; each byte range first
    # reads up to `warmup_bytes` of the text before it to warm the state up (0: from a zero state).
    context: str = setting("line", choices=("line", "document"), changes_records=True)
    # Enough for ranges to score PTB test as one range does (bench/README.md, "Batch prediction").
    warmup_bytes: int = setting(8192, low=0, changes_records=True)
    # Score records also list every scored token: its text, whether it was unknown, its log-probability.
    per_token: bool = setting(False, changes_records=True)
    top_k: int = setting(5, low=0, low_open=True, high=1000, why="every record carries k words", changes_records=True)
    # Padded token positions per model call (RunInference batches by this budget). Not in the records' identity:
    # the scores are the same for any batching.
    max_batch_tokens: int = setting(8192, low=0, low_open=True, high=1 << 20, why="a call's logits: tokens x words")
    # Model calls run at once by each worker in line context, each on its share of the cores; 0: 2 in
    # mode next, 1 in modes that score: two calls raise a small model's lines/s in mode next, and in
    # mode score gain little for twice the peak RSS, a score call holding batch x vocabulary floats
    # (bench/README.md, "Batch prediction").
    model_calls_in_flight: int = setting(0, low=0)
    # Lines with more whitespace-separated words, or more bytes, are not sent to
    # the model: their record says error "line_too_long" (nothing is dropped).
    max_line_tokens: int = setting(200000, low=0, low_open=True, changes_records=True)
    max_line_bytes: int = setting(
        8 << 20, low=0, low_open=True, high=1 << 30, why="a line is held in memory", changes_records=True
    )
    # Files are read in byte ranges of at most this size (smaller for a small
    # input, down to 1 MiB), so that workers share even a single large file.
    split_bytes: int = setting(64 << 20, low=0, low_open=True)
    # One model per machine instead of one per worker process (for big models).
    share_model_across_processes: bool = setting(False)
    # BigQuery table PROJECT:DATASET.TABLE that also receives the records once the job is complete
    # (batch_predict/bigquery_sink.py; replaced on each run); "": the JSONL shards only.
    output_table: str = setting("")


@dataclass(frozen=True)
class BaselineConfig:
    """The Kneser-Ney n-gram baseline (`nextword baseline`): counted on train.data_dir's training split."""

    order: int = setting(5, low=0, low_open=True, high=10, why="each order adds a count table as large as the corpus")
    output_dir: str = setting("", follows="train.data_dir", under="baseline")  # "": <train.data_dir>/baseline
    # Buckets (at least): each step of the estimation holds one bucket's n-grams (those ending in the same
    # two words), so the steps spread over Dataflow workers. More are used when the corpus needs them to
    # stay within memory_budget_mb.
    buckets: int = setting(16, low=0, low_open=True, high=65_536, why="each bucket is a set of work files")
    # Working memory of one estimation step, in MiB (64-65536): it sizes the counting chunks and the number
    # of buckets, so a step's memory is bounded by it, not by the corpus.
    memory_budget_mb: int = setting(1024, low=64, high=65536)
    # Raw-count thresholds per order, as lmplz --prune: an n-gram seen at most this often is dropped (its
    # mass goes to its context's backoff). Non-decreasing, the first 0 (unigrams stay); the last value
    # applies to the higher orders; () prunes nothing.
    prune: tuple[int, ...] = setting(())


@dataclass(frozen=True)
class DataflowConfig:
    """Dataflow workers of preprocessing and batch prediction (`--runner DataflowRunner`)."""

    machine_type: str = setting("n2-standard-4")
    num_workers: int = setting(2, low=0, low_open=True)
    max_num_workers: int = setting(20, low=0, low_open=True)
    # Workers install our package from this file; unused with a custom container
    # (infra/Dockerfile.beam), which already holds the package.
    setup_file: str = setting("./setup.py")
    sdk_container_image: str = setting("")
    service_account: str = setting("")  # worker identity; empty: the project's default compute account


@dataclass(frozen=True)
class TrainingJobConfig:
    """The Vertex AI CustomJob that runs `nextword cloud train` (infra/Dockerfile.trainer)."""

    image_uri: str = setting("")  # e.g. us-central1-docker.pkg.dev/PROJECT/nextword/trainer:TAG
    machine_type: str = setting("n1-standard-16")
    accelerator_type: str = setting("NVIDIA_TESLA_T4")
    accelerator_count: int = setting(4, low=0, low_open=True)  # GPUs per machine
    # Machines of the multiworker job (one chief + workers).
    replica_count: int = setting(2, low=0, low_open=True)
    boot_disk_size_gb: int = setting(100, low=0, low_open=True)
    service_account: str = setting("")


@dataclass(frozen=True)
class ScheduleConfig:
    """Cloud Scheduler job that creates the training CustomJob periodically."""

    cron: str = setting("0 3 * * 1")  # unix-cron, in time_zone
    time_zone: str = setting("Etc/UTC")
    strategy: str = setting("multiworker", choices=("mirrored", "multiworker"))  # which training spec it creates
    # Identity whose OAuth token Scheduler sends to the Vertex AI API (needs roles/aiplatform.user).
    service_account: str = setting("")


@dataclass(frozen=True)
class TuningConfig:
    """Vertex AI hyperparameter tuning of `nextword train` (nextword/cloud/tuning.py; rendered when trials > 0)."""

    # "KEY=LOW:HIGH" (a range; "KEY=LOW:HIGH:log" on a log scale) or "KEY=A,B,C" (choices); KEY a train.* key
    parameters: tuple[str, ...] = setting(())
    # What each trial reports (both minimized).
    metric: str = setting("valid_perplexity", choices=("valid_perplexity", "valid_loss"))
    max_trial_count: int = setting(0, low=0)  # trials in all (0: no tuning job)
    parallel_trial_count: int = setting(2)  # trials at once, 1..max_trial_count


@dataclass(frozen=True)
class RegistryConfig:
    """Vertex AI Model Registry and batch prediction (nextword/cloud/registry.py)."""

    model_id: str = setting("")  # the registry model every promoted run becomes a version of ("": no upload)
    alias: str = setting("promoted")  # the version alias that follows LATEST; [a-z][a-zA-Z0-9-]*, not "default"
    # Vertex AI's prebuilt TensorFlow serving container (TF Serving, calling serving_default)
    serving_image: str = setting("us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest")
    # BatchPredictionJob: input gs://….jsonl ({"text": line} per line) or bq://PROJECT.DATASET.TABLE (a text
    # column); output gs://… (JSONL) or bq://PROJECT[.DATASET] (a table per job)
    batch_input: str = setting("")
    batch_output: str = setting("")
    batch_machine_type: str = setting("n1-standard-4")
    batch_max_replica_count: int = setting(4, low=1)  # machines at most


@dataclass(frozen=True)
class CloudConfig:
    """Google Cloud settings: see nextword/cloud/__init__.py and `nextword cloud render`."""

    project: str = setting("")
    region: str = setting("us-central1")
    config_uri: str = setting("")  # gs:// copy of this YAML file: what the cloud jobs read
    temp_location: str = setting("")  # gs://BUCKET/tmp (Dataflow)
    staging_location: str = setting("")  # gs://BUCKET/staging (Dataflow)
    # Training runs land in <runs_dir>/<YYYY-MM-DD>-<job id>/; <runs_dir>/LATEST.json names the promoted one.
    runs_dir: str = setting("")
    # Promotion bar: LATEST moves to a run only if its test perplexity is at most this (0: never).
    max_test_perplexity: float = setting(0.0)
    # Promotion bar against the n-gram baseline on the same tokens: LATEST moves only if the run's test
    # perplexity is at most this fraction of the baseline's (e.g. 0.85; 0: not checked).
    max_baseline_ratio: float = setting(0.0, low=0)
    dataflow: DataflowConfig = setting(DataflowConfig)
    training: TrainingJobConfig = setting(TrainingJobConfig)
    schedule: ScheduleConfig = setting(ScheduleConfig)
    tuning: TuningConfig = setting(TuningConfig)
    registry: RegistryConfig = setting(RegistryConfig)


@dataclass(frozen=True)
class Config:
    # The run's folder: preprocess.output_dir, train.model_dir and predict.output_dir left "" are its data/,
    # model/ and predictions/ (train.data_dir follows preprocess.output_dir, predict.bundle_dir
    # <train.model_dir>/bundle). Relative paths are relative to the working directory, as every path here.
    run_dir: str = setting("runs")
    preprocess: PreprocessConfig = setting(PreprocessConfig)
    train: TrainConfig = setting(TrainConfig)
    predict: PredictConfig = setting(PredictConfig)
    baseline: BaselineConfig = setting(BaselineConfig)
    cloud: CloudConfig = setting(CloudConfig)


# Keys an earlier version had: read with a warning, so old configs and model directories keep working.
RETIRED_KEYS = {"predict.num_shards": "batch prediction writes one output shard per byte range"}


# The annotations of a config class, evaluated once: they are read at every load.
_type_hints = functools.cache(typing.get_type_hints)


class Key(typing.NamedTuple):
    """One key of the tree: a section (a dataclass field) or a leaf, with its field's rule."""

    path: str  # dotted: train.model.units
    rule: Rule
    optional: bool  # its type allows null
    section: bool


def _keys(cls: type, prefix: str = "") -> typing.Iterator[Key]:
    hints = _type_hints(cls)
    for f in dataclasses.fields(cls):
        path, tp = f"{prefix}{f.name}", hints[f.name]
        rule = rule_of(f)
        if rule is None:
            raise TypeError(f"{path}: declare the field with nextword.setting.setting(...)")
        section = dataclasses.is_dataclass(tp)
        yield Key(path, rule, type(None) in typing.get_args(tp), section)
        if section:
            yield from _keys(tp, path + ".")


ALL_KEYS = tuple(_keys(Config))  # sections and leaves, in the tree's order (a section before its keys)
KEYS = tuple(key for key in ALL_KEYS if not key.section)


def value_at(config: Any, path: str) -> Any:
    """The value at a dotted path of a Config (or of one of its sections)."""
    value = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def keys_where(role: str, section: str = "") -> tuple[str, ...]:
    """Dotted keys (sections included) whose own field has `role` (a Rule flag such as fixed_on_resume);
    with `section`, only those inside it, relative to it ("predict" -> "top_k")."""
    prefix = f"{section}." if section else ""
    return tuple(
        key.path.removeprefix(prefix) for key in ALL_KEYS if getattr(key.rule, role) and key.path.startswith(prefix)
    )


def _follow(rule: Rule, base: str) -> str:
    return posixpath.join(base, rule.under) if rule.under else base


def derived_path(config: Config, path: str) -> str:
    """Where a folder key that follows another (Rule.follows) goes when left "": <that key's value>/<under>."""
    rule = next(key.rule for key in KEYS if key.path == path)
    return _follow(rule, value_at(config, rule.follows))


def _tree_value(tree: Any, path: str) -> Any:
    """The value at a dotted path of a plain-dict config (None where a part is missing or not a mapping)."""
    for part in path.split("."):
        if not isinstance(tree, dict):
            return None
        tree = tree.get(part)
    return tree


def _derive_paths(tree: dict) -> None:
    """Fills each folder key left "" in a plain-dict config from the key it follows, in the tree's order: a
    followed key comes first (tests/test_config.py keeps it so), so that it is filled in before it is
    followed. A followed value that is not a string is left to the type check of the build that follows."""
    for key in KEYS:
        base = _tree_value(tree, key.rule.follows) if key.rule.follows else None
        if isinstance(base, str) and _tree_value(tree, key.path) == "":
            _set_dotted(tree, key.path, _follow(key.rule, base))


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
    hints = _type_hints(cls)
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
    """Each key against its field's rule, then the rules across keys, each naming the key to fix."""
    for key in KEYS:
        problem = key.rule.problem(value_at(config, key.path), key.optional)
        if problem:
            raise ConfigError(f"{key.path}: {problem}")
    p = config.preprocess
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
    if p.text.normalization == "seed" and not p.text.unknown_token.strip():
        raise ConfigError("preprocess.text.unknown_token: must not be empty")
    model = config.train.model
    if model.adaptive_cutoffs:
        cutoffs = model.adaptive_cutoffs
        if any(c <= 0 for c in cutoffs) or list(cutoffs) != sorted(set(cutoffs)):
            raise ConfigError(f"train.model.adaptive_cutoffs: must be increasing and > 0, got {list(cutoffs)}")
        if model.head in ("tied", "full"):
            raise ConfigError(f"train.model.adaptive_cutoffs: the {model.head} head has none; set head: adaptive")
    prune = config.baseline.prune
    if prune and (prune[0] != 0 or any(b < a for a, b in zip(prune, prune[1:], strict=False))):
        raise ConfigError(f"baseline.prune: must start with 0 and never decrease, got {list(prune)}")


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
    _derive_paths(tree)
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
    except RecursionError:  # an alias inside the value it names (`&a [*a]`) is a loop; so is deep nesting
        raise ConfigError(f"{path}: an alias (*name) inside the value it names, or nested too deep") from None


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
