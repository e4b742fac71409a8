"""The defaults' size by the training split (trainer/sizing.py), and its way into a trained model."""

import pytest

from nextword import config as config_lib
from trainer import sizing
from trainer.model import build_model

pytestmark = pytest.mark.unit


def _resolved(tokens: int, *overrides: str) -> config_lib.Config:
    return sizing.resolve(config_lib.load(None, list(overrides)), tokens)


def test_small_and_large_corpora_get_their_measured_recipes():
    small = _resolved(sizing.SMALL_CORPUS_TOKENS - 1).train
    large = _resolved(sizing.SMALL_CORPUS_TOKENS).train
    assert (small.model.units, small.model.embedding_dim, small.model.dropout, small.per_replica_batch_size) == (
        384, 384, 0.65, 16,
    )  # fmt: skip
    assert (large.model.units, large.model.embedding_dim, large.model.dropout, large.per_replica_batch_size) == (
        256, 256, 0.5, 32,
    )  # fmt: skip


def test_keys_the_user_set_stay_as_set():
    train = _resolved(1000, "train.model.units=64", "train.model.dropout=0.0", "train.per_replica_batch_size=4").train
    assert (train.model.units, train.model.embedding_dim, train.model.dropout, train.per_replica_batch_size) == (
        64, 64, 0.0, 4,
    )  # fmt: skip
    assert _resolved(1000, "train.model.embedding_dim=32").train.model.embedding_dim == 32  # projected, as before


def test_a_resolved_config_is_left_alone():
    once = _resolved(1000)
    assert sizing.resolve(once, 10**9) == once  # every size is set now: the token count no longer matters


def test_the_builder_refuses_sizes_left_to_the_corpus():
    unresolved = config_lib.load(None, []).train.model
    with pytest.raises(ValueError, match="trainer.sizing.resolve"):
        build_model(50, unresolved)
    assert build_model(50, _resolved(1000).train.model).get_layer("lstm_0").units == 384
