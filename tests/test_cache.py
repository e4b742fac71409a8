"""The continuous cache's arithmetic (nextword/cache.py) against hand-computed and naive values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nextword import cache

pytestmark = pytest.mark.unit


def test_cache_probabilities_match_a_hand_computed_case():
    hidden = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    targets = np.array([5, 7, 5])  # position t predicts targets[t]; position i is held with targets[i]
    model = np.log([0.1, 0.2, 0.3])
    stream = cache.Stream(hidden, targets, model)
    # t = 0: nothing held (the model alone); t = 1: only (h0, 5) held, the target 7 never followed;
    # t = 2: (h0, 5) with h2.h0 = 1 and (h1, 7) with h2.h1 = 0, so p_cache(5) = e / (e + 1) at theta 1.
    got = np.exp(cache.log_probs(stream, cache.CacheParams(size=2, theta=1.0, weight=0.5)))
    np.testing.assert_allclose(got, [0.1, 0.5 * 0.2, 0.5 * 0.3 + 0.5 * math.e / (math.e + 1)], rtol=1e-12)
    # theta 0 weighs the held positions alike: p_cache(5) = 1/2 at t = 2.
    flat = np.exp(cache.log_probs(stream, cache.CacheParams(size=2, theta=0.0, weight=0.5)))
    assert flat[2] == pytest.approx(0.5 * 0.3 + 0.5 * 0.5)
    # size 1 holds only h1 at t = 2, followed by 7: no cache mass on the target.
    short = np.exp(cache.log_probs(stream, cache.CacheParams(size=1, theta=1.0, weight=0.5)))
    assert short[2] == pytest.approx(0.5 * 0.3)


def _naive(stream: cache.Stream, params: cache.CacheParams) -> np.ndarray:
    out = []
    for t, target in enumerate(stream.targets):
        held = range(max(0, t - params.size), t)
        p_model = math.exp(stream.model_log_probs[t])
        if not held:
            out.append(p_model)
            continue
        weights = {i: math.exp(params.theta * float(stream.hidden[t] @ stream.hidden[i])) for i in held}
        p_cache = sum(w for i, w in weights.items() if stream.targets[i] == target) / sum(weights.values())
        out.append((1 - params.weight) * p_model + params.weight * p_cache)
    return np.log(out)


def test_blocked_cache_equals_the_naive_loop_across_blocks_and_chunks(monkeypatch):
    monkeypatch.setattr(cache, "_CHUNK", 300)  # chunk and block edges inside the stream
    rng = np.random.default_rng(0)
    length = 700
    stream = cache.Stream(
        rng.normal(size=[length, 4]), rng.integers(0, 6, length), np.log(rng.uniform(0.05, 0.5, length))
    )
    params = cache.CacheParams(size=40, theta=0.7, weight=0.2)
    np.testing.assert_allclose(cache.log_probs(stream, params), _naive(stream, params), rtol=1e-9)


def test_weight_zero_is_the_model_alone():
    rng = np.random.default_rng(1)
    stream = cache.Stream(rng.normal(size=[50, 3]), rng.integers(0, 4, 50), np.log(rng.uniform(0.1, 0.9, 50)))
    got = cache.log_probs(stream, cache.CacheParams(size=10, theta=0.5, weight=0.0))
    np.testing.assert_array_equal(got, stream.model_log_probs)


def test_the_grid_chooses_the_cache_on_a_repetitive_stream_and_leaves_it_out_on_noise():
    rng = np.random.default_rng(2)
    words = rng.integers(0, 50, 20)
    targets = np.tile(words, 10)  # one phrase of 20 words repeated: the cache has seen every target
    hidden = np.eye(20)[np.tile(np.arange(20), 10)]  # the same state at the same place of the phrase
    repetitive = cache.Stream(hidden, targets, np.full(200, math.log(1 / 50)))
    grid_points = {"sizes": (10, 100), "thetas": (0.0, 1.0), "weights": (0.0, 0.5)}
    params, grid = cache.choose([repetitive], {"": cache.log_likelihood}, **grid_points)[""]
    assert params.weight == 0.5 and params.size == 100 and params.theta == 1.0
    assert grid["100/1/0.5"] < grid["100/1/0"] == pytest.approx(50)
    # Targets no held position predicts better than the model: the grid keeps the model alone.
    noise = cache.Stream(rng.normal(size=[200, 3]), np.arange(200), np.full(200, math.log(0.5)))
    grid_points = {"sizes": (10,), "thetas": (1.0,), "weights": (0.0, 0.1)}
    assert cache.choose([noise], {"": cache.log_likelihood}, **grid_points)[""][0].weight == 0.0


def test_each_objective_chooses_the_cache_for_what_is_mixed_on_top():
    # Streams as concatenated in order reach each objective: one that counts the second (noise) stream alone keeps
    # the model alone, where the sum over both takes the cache the repetitive first stream gains from.
    rng = np.random.default_rng(3)
    targets = np.tile(rng.integers(0, 50, 20), 10)
    repetitive = cache.Stream(np.eye(20)[np.tile(np.arange(20), 10)], targets, np.full(200, math.log(1 / 50)))
    noise = cache.Stream(rng.normal(size=[200, 3]), np.arange(200), np.full(200, math.log(0.5)))
    grid = {"sizes": (10, 100), "thetas": (1.0,), "weights": (0.0, 0.5)}
    seen = []

    def noise_only(mixed: np.ndarray) -> float:
        seen.append(len(mixed))
        return float(mixed[200:].sum())

    chosen = cache.choose([repetitive, noise], {"both": cache.log_likelihood, "noise": noise_only}, **grid)
    assert chosen["both"][0].weight == 0.5
    params, by_point = chosen["noise"]
    assert params.weight == 0.0 and set(seen) == {400} and len(seen) == 4
    assert by_point["10/1/0"] == pytest.approx(math.exp(200 * math.log(2) / 400))  # the objective's perplexity
