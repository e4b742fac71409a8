"""Dynamic evaluation (trainer/dynamic_eval.py): each token scored once, before the weights see it."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from nextword.config import ModelConfig
from trainer import lm
from trainer.dynamic_eval import DynamicEvaluator, DynamicParams
from trainer.model import build_model

pytestmark = pytest.mark.unit


def _model(with_state: bool = True):
    tf.keras.utils.set_random_seed(3)
    return build_model(30, ModelConfig(num_layers=1, embedding_dim=16, units=16, dropout=0.0), with_state=with_state)


def _static(model, tokens: np.ndarray) -> np.ndarray:
    """The trained weights' log-probabilities of tokens[1:], the whole stream in one call."""
    view = lm.of(model)
    ids = tf.constant(tokens[None, :], tf.int32)
    hidden, _ = view.hidden(ids[:, :-1], view.zero_states(1), training=False)
    return view.head.target_log_probs(hidden, ids[:, 1:])[0].numpy()


@pytest.mark.parametrize("with_state", [True, False])  # a model built without state inputs carries it too
def test_learning_rate_zero_is_the_static_model_and_the_weights_come_back(with_state):
    model = _model(with_state)
    tokens = np.random.default_rng(0).integers(1, 30, size=100)
    before = [v.numpy().copy() for v in model.trainable_variables]
    evaluator = DynamicEvaluator(model)
    stream, inputs = evaluator.stream(tokens, DynamicParams(0.0, 0.0, segment=7))  # 99 targets: a short last one
    np.testing.assert_allclose(stream.model_log_probs, _static(model, tokens), atol=1e-5)
    np.testing.assert_array_equal(stream.targets, tokens[1:])
    np.testing.assert_array_equal(inputs, tokens[:-1])
    assert stream.hidden.shape == (99, 16)
    adapted, _ = evaluator.stream(tokens, DynamicParams(0.3, 0.0, segment=7))
    assert not np.allclose(adapted.model_log_probs, stream.model_log_probs)
    for variable, value in zip(model.trainable_variables, before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_a_repeated_passage_is_learned_from_its_first_readings_only():
    model = _model()
    passage = np.random.default_rng(1).integers(1, 30, size=40)
    tokens = np.tile(passage, 12)
    evaluator = DynamicEvaluator(model)
    static, _ = evaluator.stream(tokens, DynamicParams(0.0, 0.0, segment=10))
    adapted, _ = evaluator.stream(tokens, DynamicParams(1.0, 0.0, segment=10))
    # The first segment is scored before any update: the same; the last readings far better than static.
    np.testing.assert_allclose(adapted.model_log_probs[:10], static.model_log_probs[:10], atol=1e-5)
    assert adapted.model_log_probs[-80:].mean() > static.model_log_probs[-80:].mean() + 0.5
    # Each position is scored before its own segment's update: changing a later token leaves it as it was.
    changed = tokens.copy()
    changed[205] = (changed[205] % 29) + 1
    again, _ = evaluator.stream(changed, DynamicParams(1.0, 0.0, segment=10))
    np.testing.assert_allclose(again.model_log_probs[:200], adapted.model_log_probs[:200], atol=1e-5)


def test_a_diverging_learning_rate_is_recorded_and_never_chosen(monkeypatch):
    from trainer import dynamic_eval

    monkeypatch.setattr(dynamic_eval, "LEARNING_RATES", (0.3, 1e9))
    monkeypatch.setattr(dynamic_eval, "DECAYS", (0.0,))
    tokens = np.random.default_rng(2).integers(1, 30, size=200)
    params, grid = DynamicEvaluator(_model()).choose([tokens], segment=10, tokens=200)
    assert grid["1e+09/0"] is None and grid["0.3/0"] is not None and np.isfinite(grid["0.3/0"])
    assert (params.learning_rate, params.decay) == (0.3, 0.0)


def test_the_progress_lines_leave_the_scores_as_they_are(monkeypatch, caplog):
    from trainer import dynamic_eval

    tokens = np.random.default_rng(4).integers(1, 30, size=120)
    quiet, _ = DynamicEvaluator(_model()).stream(tokens, DynamicParams(0.3, 0.01, segment=10))
    monkeypatch.setattr(dynamic_eval, "PROGRESS_SECONDS", -1.0)  # a progress line after every segment
    with caplog.at_level("INFO", logger="trainer.dynamic_eval"):
        logged, _ = DynamicEvaluator(_model()).stream(tokens, DynamicParams(0.3, 0.01, segment=10))
    assert sum("tokens/s so far" in record.getMessage() for record in caplog.records) >= 10
    np.testing.assert_allclose(logged.model_log_probs, quiet.model_log_probs, atol=1e-6)
