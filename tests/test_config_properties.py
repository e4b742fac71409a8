"""Property-based tests over generated YAML configs: a one-line error naming the key, or a round trip."""

import dataclasses
import typing

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nextword import config as config_lib
from nextword.config import Config, ConfigError

pytestmark = pytest.mark.unit


def _leaves(cls, prefix=""):
    """(dotted path, type) of every leaf field of the config tree."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _leaves(tp, path + ".")
        else:
            yield path, tp


LEAVES = dict(_leaves(Config))
SECTIONS = {path.rsplit(".", 1)[0] for path in LEAVES if "." in path}
# Any YAML scalar, including ones of the wrong type for the key they land on.
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=12), st.lists(st.integers(), max_size=2),
)  # fmt: skip
KEYS = st.one_of(st.sampled_from(sorted(LEAVES)), st.sampled_from(sorted(SECTIONS)), st.text(min_size=1, max_size=8))


def _nest(pairs):
    tree: dict = {}
    for path, value in pairs:
        node = tree
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[parts[-1]] = value
    return tree


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(KEYS, SCALARS), max_size=6))
def test_every_generated_config_loads_or_fails_on_one_line_naming_a_key(pairs):
    data = _nest(pairs)
    text = yaml.safe_dump(data)
    try:
        cfg = config_lib.from_dict(yaml.safe_load(text))
    except ConfigError as err:
        message = str(err)
        assert "\n" not in message
        named = message.split(": ", 1)[0]
        shown = {k if k.isidentifier() else repr(k) for path, _ in pairs for k in path.split(".")}
        assert named in LEAVES or named in SECTIONS or named == "config" or any(k in named for k in shown)
        return
    # Valid: the written YAML reloads to the same config.
    assert config_lib.from_dict(yaml.safe_load(config_lib.to_yaml(cfg))) == cfg


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(LEAVES)), SCALARS)
def test_overrides_never_raise_anything_but_config_error(path, value):
    try:
        config_lib.from_dict(None, [f"{path}={yaml.safe_dump(value, default_flow_style=True).strip()}"])
    except ConfigError as err:
        assert "\n" not in str(err) and str(err).startswith(path.split(".")[0])
