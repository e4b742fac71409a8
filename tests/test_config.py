"""Strict typed config: dotted-path errors, overrides, cross-field checks."""

import pytest

from nextword import config as config_lib
from nextword.config import ConfigError


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
        ({"train": {"model": {"tie_embeddings": True, "embedding_dim": 8}}}, "train.model.tie_embeddings"),
        ([1, 2], "config: expected a mapping"),
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
