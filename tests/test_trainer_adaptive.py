"""The adaptive input and softmax (trainer/adaptive.py): a distribution, tied, its fast loss exact, exported exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from nextword import config as config_lib
from nextword.config import ModelConfig
from tests.support.tiny_bundle import TINY_MODEL, corpus_lines, line_ids, reference_next, reference_score
from trainer import lm, steps
from trainer.adaptive import AdaptiveEmbedding, clusters
from trainer.export import export_bundle
from trainer.model import build_model

VOCAB = 40
ADAPTIVE = ModelConfig(
    num_layers=1, embedding_dim=16, units=16, dropout=0.0, head="adaptive", adaptive_cutoffs=(6, 20), adaptive_factor=2
)


def random_ids(shape, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, shape).astype("int32")


@pytest.mark.unit
def test_clusters_cut_the_vocabulary_and_drop_cutoffs_past_it():
    assert clusters(40, (6, 20)) == [(0, 6), (6, 20), (20, 40)]
    assert clusters(10, (6, 20)) == [(0, 6), (6, 10)]
    assert clusters(5, (6, 20)) == [(0, 5)]  # all cutoffs past the vocabulary: one full softmax


@pytest.mark.unit
def test_cutoffs_are_checked_and_round_trip_through_yaml():
    config = config_lib.from_dict({"train": {"model": {"head": "adaptive", "adaptive_cutoffs": [100, 400]}}})
    assert config.train.model.adaptive_cutoffs == (100, 400)
    assert config_lib.from_dict(config_lib.section_to_dict(config)) == config
    with pytest.raises(config_lib.ConfigError, match=r"^train.model.adaptive_cutoffs: must be increasing"):
        config_lib.from_dict({"train": {"model": {"adaptive_cutoffs": [400, 100]}}})
    with pytest.raises(config_lib.ConfigError, match=r"^train.model.adaptive_cutoffs\[1\]: expected int"):
        config_lib.from_dict({"train": {"model": {"adaptive_cutoffs": [100, "x"]}}})
    with pytest.raises(config_lib.ConfigError, match="^train.model.adaptive_cutoffs: the full head has none"):
        config_lib.from_dict({"train": {"model": {"adaptive_cutoffs": [100], "head": "full"}}})
    with pytest.raises(config_lib.ConfigError, match="^train.model.adaptive_cutoffs: the tied head has none"):
        config_lib.from_dict({"train": {"model": {"adaptive_cutoffs": [100]}}})  # the default head: not ignored


@pytest.mark.train
def test_output_is_a_distribution_over_every_word_from_the_tied_vectors():
    model = build_model(VOCAB, ADAPTIVE)
    log_probs = model(random_ids((3, 7))).numpy()  # [3, 7, VOCAB]
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-5)
    embedding = model.get_layer("embedding")
    assert isinstance(embedding, AdaptiveEmbedding) and embedding.tail_dims == [8, 4]
    # Tied: within a cluster, log-probability differences are h . (v_a - v_b) + bias differences,
    # with v the very vectors the input embedding gives those words.
    hidden = np.random.default_rng(1).normal(size=(1, 1, 16)).astype("float32")
    vectors = embedding(np.arange(VOCAB, dtype="int32")[None]).numpy()[0]  # [VOCAB, 16]
    output = model.get_layer("logits")
    out = output(hidden).numpy()[0, 0]
    biases = np.concatenate([b.numpy() for b in output.tail_biases])
    a, b = 25, 33  # both in the last cluster
    expected = hidden[0, 0] @ (vectors[a] - vectors[b]) + biases[a - 6] - biases[b - 6]
    np.testing.assert_allclose(out[a] - out[b], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.train
def test_training_loss_computes_only_the_targets_and_equals_the_full_cross_entropy():
    model = build_model(VOCAB, ADAPTIVE, with_state=True)
    inputs, targets = tf.constant(random_ids((4, 9), 2)), tf.constant(random_ids((4, 9), 3))
    states = steps.zero_states(model, 4)
    fast, fast_states = steps.train_losses(model, inputs, states, targets)
    logits, full_states = steps.forward(model, inputs, states, training=True)
    np.testing.assert_allclose(fast.numpy(), lm.token_losses(logits, targets).numpy(), rtol=1e-5, atol=1e-5)
    for got, want in zip(fast_states, full_states, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    # The gradients agree too: the step trains the same model either way.
    with tf.GradientTape(persistent=True) as tape:
        fast_loss = tf.reduce_sum(steps.train_losses(model, inputs, states, targets)[0])
        full_loss = tf.reduce_sum(lm.token_losses(steps.forward(model, inputs, states, True)[0], targets))
    for got, want in zip(tape.gradient(fast_loss, model.trainable_variables),
                         tape.gradient(full_loss, model.trainable_variables), strict=True):  # fmt: skip
        np.testing.assert_allclose(tf.convert_to_tensor(got).numpy(), tf.convert_to_tensor(want).numpy(), atol=1e-5)


@pytest.mark.train
def test_adaptive_model_exports_and_its_bundle_matches_keras(tiny_bundle, tmp_path):
    adaptive = dataclasses.replace(TINY_MODEL, embedding_dim=TINY_MODEL.units, head="adaptive", adaptive_cutoffs=(3, 5))
    model = build_model(len(tiny_bundle.vocab.tokens), adaptive)  # untrained: the arithmetic is what is tested
    config = dataclasses.replace(
        tiny_bundle.config, train=dataclasses.replace(tiny_bundle.config.train, model=adaptive)
    )
    bundle_dir = export_bundle(model, tiny_bundle.data_dir, config, str(tmp_path / "adaptive"))
    bundle = tf.saved_model.load(bundle_dir)
    texts = [*corpus_lines(tiny_bundle)[:4], "zzz unknownword"]
    nxt = bundle.signatures["next_words"](text=tf.constant(texts), k=tf.constant(3))
    score = bundle.signatures["score"](text=tf.constant(texts))
    window = tiny_bundle.config.preprocess.window_length
    for i, text in enumerate(texts):
        ids = line_ids(text, tiny_bundle.vocab, tiny_bundle.settings)
        probs = reference_next(model, ids[:-1] if tiny_bundle.settings.eos else ids, window)
        np.testing.assert_allclose(nxt["probs"].numpy()[i], np.sort(probs)[::-1][:3], rtol=1e-4, atol=1e-6)
        log_prob, count = reference_score(model, ids, window)
        assert score["tokens"].numpy()[i] == count
        np.testing.assert_allclose(score["log_prob"].numpy()[i], log_prob, rtol=1e-4, atol=1e-4)
