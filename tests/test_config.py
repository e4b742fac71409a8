"""Strict typed config: dotted-path errors, overrides, cross-field checks."""

import dataclasses
import re
import typing
from pathlib import Path

import pytest
import yaml

from nextword import config as config_lib
from nextword.config import Config, ConfigError
from nextword.setting import Rule, rule_of

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.unit


def test_defaults_follow_the_seed():
    cfg = config_lib.from_dict(None)
    assert cfg.preprocess.corpus_glob == "./corpus/**/*.txt"
    # The seed's 5-word window was a limit, not a contract: 35 ids of truncated BPTT, each token predicted once.
    assert cfg.preprocess.window_length == 35 and cfg.preprocess.window_stride == 35
    assert cfg.preprocess.text.min_count == 3
    assert cfg.preprocess.text.unknown_token == "<???>"
    assert cfg.train.model.forget_bias == 1.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"preprocess": {"windw_length": 3}}, "preprocess.windw_length: key does not exist"),
        ({"preprocess": {"window_length": "5"}}, "preprocess.window_length: expected int, got str"),
        ({"preprocess": {"window_length": True}}, "preprocess.window_length: expected int, got bool"),
        ({"preprocess": {"text": {"min_count": 1.5}}}, "preprocess.text.min_count: expected int"),
        ({"preprocess": {"text": {"normalization": "nfc"}}}, "preprocess.text.normalization: 'nfc' is not one of"),
        ({"preprocess": {"text": "seed"}}, "preprocess.text: expected a mapping"),
        ({"train": {"strategy": "tpu"}}, "train.strategy: 'tpu' is not one of"),
        ({"preprocess": {"window_length": 0}}, "preprocess.window_length: must be > 0"),
        ({"preprocess": {"split": {"valid_fraction": 0.6, "test_fraction": 0.5}}}, "preprocess.split.valid_fraction"),
        ({"preprocess": {"split": {"train_glob": "a"}}}, "preprocess.split.train_glob: set all"),
        ([1, 2], "config: expected a mapping"),
        ({"train": {"model": {"units": 100_000}}}, "train.model.units: must be <= 16384 (an LSTM layer's kernel"),
        ({"predict": {"top_k": 50_000}}, "predict.top_k: must be <= 1000 (every record carries k words)"),
        ({"preprocess": {"window_length": 10**9}}, "preprocess.window_length: must be <= 4096"),
        ({"baseline": {"order": 40}}, "baseline.order: must be <= 10"),
        ({"train": {"per_replica_batch_size": 10**7}}, "train.per_replica_batch_size: must be <= 65536"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(data, message):
    with pytest.raises(ConfigError) as err:
        config_lib.from_dict(data)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_overrides_are_typed_by_yaml_and_checked():
    cfg = config_lib.from_dict(
        {"preprocess": {"num_shards": 2}},
        ["preprocess.num_shards=8", "preprocess.text.eos=true", "train.optimizer.learning_rate=1"],
    )
    assert cfg.preprocess.num_shards == 8
    assert cfg.preprocess.text.eos is True
    assert cfg.train.optimizer.learning_rate == 1.0
    with pytest.raises(ConfigError, match="train.nope: key does not exist"):
        config_lib.from_dict(None, ["train.nope=1"])
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        config_lib.from_dict(None, ["train.epochs"])


def test_yaml_round_trip_and_file_errors(tmp_path):
    cfg = config_lib.from_dict(None, ["preprocess.text.max_size=100", "train.epochs=3"])
    path = tmp_path / "c.yaml"
    path.write_text(config_lib.to_yaml(cfg))
    assert config_lib.load(str(path)) == cfg
    (tmp_path / "bad.yaml").write_text("preprocess: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+: not valid YAML"):
        config_lib.load(str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        config_lib.load(str(tmp_path / "missing.yaml"))


def test_exponent_floats_duplicate_keys_and_non_utf8_files(tmp_path):
    # YAML 1.1 reads 1e-3 as a string; in a float key, on the command line or in a file, it is the number.
    assert config_lib.from_dict(None, ["train.optimizer.learning_rate=1e-3"]).train.optimizer.learning_rate == 0.001
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  optimizer:\n    learning_rate: 2E-4\n")
    assert config_lib.load(str(path)).train.optimizer.learning_rate == 0.0002
    with pytest.raises(ConfigError, match="train.epochs: expected int"):
        config_lib.from_dict(None, ["train.epochs=1e3"])  # an int key stays strict
    path.write_text("train:\n  epochs: 3\n  epochs: 4\n")
    with pytest.raises(ConfigError, match=r"c.yaml line 3: key 'epochs' is given twice"):
        config_lib.load(str(path))
    path.write_bytes("train:\n  model_dir: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"c.yaml: not UTF-8 text .*save the config file as UTF-8"):
        config_lib.load(str(path))
    with pytest.raises(ConfigError, match="train.optimizer.learning_rate: must be a finite number"):
        config_lib.from_dict(None, ["train.optimizer.learning_rate=.nan"])


@pytest.mark.unit
def test_a_retired_key_is_read_with_a_warning_so_old_configs_and_model_dirs_keep_working(caplog):
    with caplog.at_level("WARNING"):
        cfg = config_lib.from_dict({"predict": {"num_shards": 3, "top_k": 2}})
    assert cfg.predict.top_k == 2 and not hasattr(cfg.predict, "num_shards")
    assert [r.getMessage() for r in caplog.records] == [
        "predict.num_shards: no longer used (batch prediction writes one output shard per byte range); "
        "remove it from the config"
    ]
    with pytest.raises(config_lib.ConfigError, match=r"^predict.num_shard: key does not exist"):
        config_lib.from_dict({"predict": {"num_shard": 3}})  # a typo is still an error


def test_model_keys_of_before_the_model_room_are_read_as_the_parts_they_chose(caplog):
    def model(section: dict, *overrides: str):
        return config_lib.from_dict({"train": {"model": section}}, list(overrides)).train.model

    with caplog.at_level("WARNING"):
        old = model({"lstm_units": 200, "tie_embeddings": False})
    assert old.units == 200 and old.head == "full"
    assert "train.model.lstm_units: renamed train.model.units" in caplog.text
    assert model({"tie_embeddings": True}).head == "tied"
    assert model({"tie_embeddings": True, "adaptive_cutoffs": [10, 40]}).head == "adaptive"
    assert model({}, "train.model.lstm_units=64").units == 64  # an old override beats the tree's default
    with pytest.raises(config_lib.ConfigError, match=r"^train.model.tie_embeddings: expected bool"):
        model({"tie_embeddings": "yes"})
    with pytest.raises(config_lib.ConfigError, match=r"^train.model.cell: 'rnn' is not one of lstm, gru"):
        model({"cell": "rnn"})


def test_the_boolean_mixed_precision_of_older_configs_is_read_as_a_matmul_dtype(caplog):
    def train(section: dict, *overrides: str):
        return config_lib.from_dict({"train": section}, list(overrides)).train

    assert train({}).matmul_dtype == "auto"
    with caplog.at_level("WARNING"):
        assert train({"mixed_precision": True}).matmul_dtype == "bfloat16"
    assert "train.mixed_precision: replaced by train.matmul_dtype" in caplog.text
    assert train({"mixed_precision": False}).matmul_dtype == "float32"
    assert train({}, "train.mixed_precision=true").matmul_dtype == "bfloat16"  # an old override beats the default
    with pytest.raises(config_lib.ConfigError, match=r"^train.mixed_precision: expected bool"):
        train({"mixed_precision": "bf16"})
    with pytest.raises(config_lib.ConfigError, match=r"^train.matmul_dtype: 'float16' is not one of auto, float32"):
        train({"matmul_dtype": "float16"})


# --- Each key declared once: its rule on its field -------------------------------------------------------------


def _fields(cls, prefix=""):
    """(dotted path, field, type) of every field of the config tree, sections included, walked here and not
    by config.py's own walk, so that the registries are checked against the fields themselves."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield f"{prefix}{f.name}", f, hints[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _fields(hints[f.name], f"{prefix}{f.name}.")


FIELDS = list(_fields(Config))


def test_every_field_carries_its_rule_and_the_registries_are_what_the_rules_say():
    from batch_predict.resume import OUTPUT_SETTINGS
    from trainer.run_lock import RESUME_FIXED

    assert all(isinstance(rule_of(f), Rule) for _, f, _ in FIELDS), [p for p, f, _ in FIELDS if rule_of(f) is None]
    assert RESUME_FIXED == tuple(path for path, f, _ in FIELDS if rule_of(f).fixed_on_resume)
    assert OUTPUT_SETTINGS == tuple(
        path.removeprefix("predict.") for path, f, _ in FIELDS if rule_of(f).changes_records
    )
    # What they say today: a resume keeps the batch, the seed, the state carrying, the model and the optimizer;
    # a prediction record changes with these predict keys (not max_batch_tokens: scores are the same for any).
    assert set(RESUME_FIXED) == {f"train.{k}" for k in ("per_replica_batch_size", "seed", "carry_state", "model",
                                                        "optimizer")}  # fmt: skip
    assert set(OUTPUT_SETTINGS) == {"mode", "context", "warmup_bytes", "per_token", "top_k", "max_line_tokens",
                                    "max_line_bytes"}  # fmt: skip

    @dataclasses.dataclass(frozen=True)
    class Undeclared:
        size: int = 3

    with pytest.raises(TypeError, match=r"^x.size: declare the field with nextword.setting.setting"):
        list(config_lib._keys(Undeclared, "x."))


def test_a_resume_is_refused_exactly_when_a_key_fixed_on_resume_changes():
    from trainer.run_lock import RESUME_FIXED, check_resume_settings

    previous = config_lib.to_yaml(config_lib.from_dict(None))
    for key in RESUME_FIXED:
        leaf = {"train.model": "train.model.units=64", "train.optimizer": "train.optimizer.decay=0.5"}.get(key)
        changed = config_lib.from_dict(None, [leaf or f"{key}={'false' if key == 'train.carry_state' else 7}"])
        with pytest.raises(ValueError, match=rf"^run/config.yaml: resuming with other {key} than the run being"):
            check_resume_settings(previous, changed, "run/config.yaml")
    free = ["train.epochs=3", "train.matmul_dtype=float32", "train.strategy=mirrored", "predict.top_k=3"]
    check_resume_settings(previous, config_lib.from_dict(None, free), "run/config.yaml")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.optimizer.decay=0", "train.optimizer.decay: must be in (0, 1], got 0.0"),
        ("train.model.dropout=1", "train.model.dropout: must be in [0, 1) or null, got 1.0"),
        ("preprocess.text.max_size=1", "preprocess.text.max_size: must be >= 2 or null, got 1"),
        ("baseline.memory_budget_mb=10", "baseline.memory_budget_mb: must be in [64, 65536], got 10"),
        ("train.model.adaptive_factor=0", "train.model.adaptive_factor: must be >= 1, got 0"),
        ("train.learning_rate=1", "train.learning_rate: key does not exist"),
    ],
)
def test_each_kind_of_rule_reads_as_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        config_lib.from_dict(None, [override])
    assert str(err.value).startswith(message)


def test_every_bound_and_choice_on_a_field_is_what_loading_enforces():
    checked = 0
    for key in config_lib.KEYS:
        rule = key.rule
        for bound, is_open, step in ((rule.low, rule.low_open, -1), (rule.high, rule.high_open, 1)):
            if bound is None:
                continue
            inside, outside = (bound - step, bound) if is_open else (bound, bound + step)
            if not is_open:
                config_lib.from_dict(None, [f"{key.path}={inside}"])  # the bound itself is allowed
            with pytest.raises(ConfigError, match=rf"^{re.escape(key.path)}: must be "):
                config_lib.from_dict(None, [f"{key.path}={outside}"])
            checked += 1
        for choice in rule.choices:
            config_lib.from_dict(None, [f"{key.path}={choice}"] + (["predict.mode=score"] * (choice == "document")))
        if rule.choices:
            with pytest.raises(ConfigError, match=rf"^{re.escape(key.path)}: 'nope' is not one of "):
                config_lib.from_dict(None, [f"{key.path}=nope"])
            checked += 1
    assert checked > 50


# --- One run_dir ------------------------------------------------------------------------------------------------

STAGE_PATHS = ("preprocess.output_dir", "train.data_dir", "train.model_dir", "predict.bundle_dir", "predict.output_dir")


def _paths(cfg):
    return tuple(config_lib.value_at(cfg, path) for path in STAGE_PATHS)


def test_run_dir_places_every_stage_and_an_explicit_path_wins(tmp_path):
    assert _paths(config_lib.from_dict(None)) == (  # the defaults of before run_dir
        "runs/data", "runs/data", "runs/model", "runs/model/bundle", "runs/predictions",
    )  # fmt: skip
    assert _paths(config_lib.from_dict({"run_dir": "gs://b/nextword"})) == (
        "gs://b/nextword/data", "gs://b/nextword/data", "gs://b/nextword/model", "gs://b/nextword/model/bundle",
        "gs://b/nextword/predictions",
    )  # fmt: skip
    # Explicit paths win, and what follows them follows: the data the trainer reads, the bundle it writes.
    cfg = config_lib.from_dict({"run_dir": "runs/x", "preprocess": {"output_dir": "/data/ptb"}}, ["train.model_dir=m"])
    assert _paths(cfg) == ("/data/ptb", "/data/ptb", "m", "m/bundle", "runs/x/predictions")
    cfg = config_lib.from_dict({"run_dir": "runs/x", "train": {"data_dir": "d"}, "predict": {"bundle_dir": "b"}})
    assert _paths(cfg) == ("runs/x/data", "d", "runs/x/model", "b", "runs/x/predictions")
    assert cfg.baseline.output_dir == "d/baseline"  # the n-gram model beside the data it counts
    assert config_lib.from_dict(None, ["baseline.output_dir=/ngrams"]).baseline.output_dir == "/ngrams"
    # The resolved config, as written next to every output, names every path: it reloads the same, and a
    # later run_dir no longer moves them.
    path = tmp_path / "config.yaml"
    path.write_text(config_lib.to_yaml(cfg))
    assert config_lib.load(str(path)) == cfg
    assert _paths(config_lib.load(str(path), ["run_dir=elsewhere"])) == _paths(cfg)
    with pytest.raises(ConfigError, match=r"^run_dir: expected str, got int 5"):
        config_lib.from_dict(None, ["run_dir=5"])
    # A key may follow only a key before it in the tree, which is filled in first.
    order = [key.path for key in config_lib.ALL_KEYS]
    assert all(order.index(key.rule.follows) < order.index(key.path) for key in config_lib.KEYS if key.rule.follows)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_a_shipped_config_names_each_path_once_and_predicts_with_the_bundle_it_trains(name):
    text = (REPO / "configs" / name).read_text()
    cfg = config_lib.load(str(REPO / "configs" / name))
    assert cfg.predict.bundle_dir == f"{cfg.train.model_dir}/bundle"
    assert cfg.train.data_dir == cfg.preprocess.output_dir
    raw = yaml.safe_load(text)
    for key in config_lib.KEYS:
        section, _, leaf = key.path.rpartition(".")
        given = (raw.get(section) or {}).get(leaf) if section else None
        assert not key.rule.follows or given is None or given != config_lib.derived_path(cfg, key.path), key.path
