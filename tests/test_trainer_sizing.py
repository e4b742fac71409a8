"""The defaults' size by the training split (trainer/sizing.py), and its way into a trained model."""

import pytest

from nextword import config as config_lib
from trainer import sizing
from trainer.model import build_model, cudnn_eligible

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


@pytest.mark.parametrize("ladder", [sizing.CPU_LADDER, sizing.GPU_LADDER], ids=["cpu", "gpu"])
def test_each_ladder_grows_the_model_with_the_data_and_regularizes_it_less(ladder):
    bounds = [rung.below_tokens for rung in ladder]
    assert bounds == sorted(bounds) and bounds[-1] == float("inf")  # every corpus size has a rung
    sizes = [rung.size for rung in ladder]
    capacity = [size.units * size.num_layers for size in sizes]
    # From the Penn Treebank's size on (below it, a wider layer with more dropout was measured to win).
    assert capacity[1:] == sorted(capacity[1:]) and capacity[-1] >= 3 * capacity[1]
    assert [size.dropout for size in sizes[1:]] == sorted((size.dropout for size in sizes[1:]), reverse=True)
    assert all(size.source for size in sizes)


def test_a_100m_token_corpus_gets_a_larger_model_on_a_gpu_than_on_the_cpu(caplog):
    config = config_lib.load(None, [])
    with caplog.at_level("INFO", logger="trainer.sizing"):
        cpu = sizing.resolve(config, 100_000_000).train
        gpu = sizing.resolve(config, 100_000_000, on_gpu=True).train
    assert (cpu.model.num_layers, cpu.model.units, cpu.model.embedding_dim) == (2, 512, 512)
    assert (gpu.model.num_layers, gpu.model.units, gpu.model.embedding_dim) == (2, 2048, 512)  # LSTM-2048-512
    assert gpu.per_replica_batch_size > cpu.per_replica_batch_size and gpu.model.dropout < cpu.model.dropout
    lines = [r.getMessage() for r in caplog.records]
    assert "for the CPU: 2 x 512 units" in lines[0] and "for a GPU: 2 x 2048 units" in lines[1]
    assert "Jozefowicz" in lines[1]  # the line says why


def test_the_gpu_rungs_keep_the_recurrent_layers_cudnn_eligible():
    for rung in sizing.GPU_LADDER[:2]:  # the larger rungs differ only in sizes, which cuDNN does not mind
        model = sizing.resolve(config_lib.load(None, []), int(rung.below_tokens) - 1, on_gpu=True).train.model
        assert cudnn_eligible(build_model(50, model)) == []
