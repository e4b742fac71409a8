"""Strict typed config: dotted-path errors, overrides, cross-field checks."""

import pytest

from nextword import config as config_lib
from nextword.config import ConfigError

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
