"""The continuous cache and the n-gram in the bundle's document scoring (batch_predict/predictor.py `Document`)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from batch_predict.predictor import Predictor
from nextword.text import contract


def _with_cache(bundle_dir: str, dest, params: dict) -> str:
    """A copy of the bundle whose bundle.json carries cache parameters, as an export after `nextword evaluate`."""
    shutil.copytree(bundle_dir, dest)
    info = dest / contract.BUNDLE_META_DIR / contract.BUNDLE_INFO_FILE
    info.write_text(json.dumps(json.loads(info.read_text()) | {"cache": params}))
    return str(dest)


def test_the_cache_raises_a_repetitive_documents_log_prob_and_leaves_line_context_alone(tiny_bundle, tmp_path):
    cached_dir = _with_cache(tiny_bundle.bundle_dir, tmp_path / "cached", {"size": 200, "theta": 1.0, "weight": 0.3})
    plain, cached = Predictor.load(tiny_bundle.bundle_dir), Predictor.load(cached_dir)
    rng = np.random.default_rng(0)
    words = [tiny_bundle.vocab.tokens[i] for i in rng.integers(4, len(tiny_bundle.vocab.tokens), 8)]
    document = [" ".join(words)] * 12  # a phrase the chain would rarely write, again and again
    alone = plain.score(document, context="document")
    mixed = cached.score(document, context="document")
    assert [line.tokens for line in mixed] == [line.tokens for line in alone]
    # From the second line on, every word has been seen after the same context: the cache predicts it.
    assert all(m.log_prob > a.log_prob + 1 for m, a in zip(mixed[1:], alone[1:], strict=True))
    assert sum(m.log_prob for m in mixed) > sum(a.log_prob for a in alone)
    assert [line.log_prob for line in cached.score(document)] == [line.log_prob for line in plain.score(document)]
    # Scored a few lines per call, the cache carries across calls: the same scores as in one call.
    small = Predictor.load(cached_dir, max_batch_tokens=20)
    np.testing.assert_allclose(
        [line.log_prob for line in small.score(document, context="document")],
        [line.log_prob for line in mixed],
        rtol=1e-4,
    )
    lines = small.score(document[:2], context="document", per_token=True)
    for line in lines:  # each line's total is its tokens' mixed log-probabilities
        assert np.isclose(sum(lp for _text, _unknown, lp in line.token_scores), line.log_prob, rtol=1e-5)


def test_the_ngram_is_mixed_into_document_scores_by_its_weight(tiny_bundle, tmp_path):
    from baseline import arpa, kneser_ney, lookup, ngrams, score
    from nextword import storage
    from nextword.artifacts import bundle as bundle_lib
    from nextword.artifacts import data_dir
    from tests.support.tiny_bundle import corpus_lines, document_ids

    tokens, settings = tiny_bundle.vocab.tokens, tiny_bundle.settings
    manifest, _ = data_dir.read_manifest_and_vocab(tiny_bundle.data_dir)
    windows = score.read_windows(data_dir.shard_paths(tiny_bundle.data_dir, manifest, "train"))
    overlap = ngrams.overlap_of(manifest.record_length, manifest.stride)
    model = kneser_ney.estimate(ngrams.count_ngrams(windows, 3, overlap), 3, len(tokens))
    with (tmp_path / "model.arpa").open("w", encoding="utf-8") as out:
        arpa.write_arpa(model, tokens, out)
    tables = lookup.load(str(tmp_path / "model.arpa"), tokens)
    mixed_dir = tmp_path / "mixed"
    shutil.copytree(tiny_bundle.bundle_dir, mixed_dir)
    (mixed_dir / bundle_lib.NGRAM_PATH).write_bytes(tables.to_bytes())
    info = mixed_dir / contract.BUNDLE_META_DIR / contract.BUNDLE_INFO_FILE
    content = json.loads(info.read_text())
    content["checksums"][bundle_lib.NGRAM_PATH] = storage.crc32c(str(mixed_dir / bundle_lib.NGRAM_PATH))
    by_order = [0.05, 0.2, 0.4]  # the weight where the n-gram model holds 0, 1 or 2 words of the context
    info.write_text(json.dumps(content | {"ngram": {"weights_by_order": by_order, "order": 3}}))
    plain, mixed = Predictor.load(tiny_bundle.bundle_dir), Predictor.load(str(mixed_dir))
    assert mixed.bundle.model_fingerprint != plain.bundle.model_fingerprint

    lines = corpus_lines(tiny_bundle)[:8]
    alone = plain.score(lines, context="document", per_token=True)
    with_ngram = Predictor.load(str(mixed_dir), max_batch_tokens=20).score(lines, context="document", per_token=True)
    ids = [i for line in document_ids(lines, tiny_bundle.vocab, settings) for i in line]
    targets = np.array(ids if settings.eos else ids[1:])  # without <eos> a document's first word is context only
    history = np.array([0, contract.EOS_ID + 1] if settings.eos else [-1])
    ngram_log_probs, orders, _ = tables.continued_log_probs(history, targets)
    assert {2, 3} <= set(orders.tolist())  # two weights in use (1: no word of the context known)
    model_log_probs = np.array([lp for line in alone for _text, _unknown, lp in line.token_scores])
    weight = np.array([0.0, *by_order])[orders]
    expected = np.logaddexp(np.log1p(-weight) + model_log_probs, np.log(weight) + ngram_log_probs)
    got = np.array([lp for line in with_ngram for _text, _unknown, lp in line.token_scores])
    np.testing.assert_allclose(got, expected, atol=2e-4)
    # A bundle of before the weights by order (one "weight") reads as that weight for every order.
    info.write_text(json.dumps(content | {"ngram": {"weight": 0.2, "order": 3}}))
    old_style = Predictor.load(str(mixed_dir)).score(lines, context="document", per_token=True)
    expected = np.logaddexp(np.log(0.8) + model_log_probs, np.log(0.2) + ngram_log_probs)
    got = np.array([lp for line in old_style for _text, _unknown, lp in line.token_scores])
    np.testing.assert_allclose(got, expected, atol=2e-4)
    info.write_text(json.dumps(content | {"ngram": {"weights_by_order": [0.1, 0.2], "order": 3}}))
    with pytest.raises(ValueError, match=r"bundle.json: `ngram` needs an order and a weight in \[0, 1\) for each"):
        bundle_lib.load_bundle(str(mixed_dir))
    assert [line.log_prob for line in mixed.score(lines)] == [line.log_prob for line in plain.score(lines)]
    # Damaged tables are refused with the bundle, before any scoring.
    info.write_text(json.dumps(content | {"ngram": {"weights_by_order": by_order, "order": 3}}))
    (mixed_dir / bundle_lib.NGRAM_PATH).write_bytes(tables.to_bytes()[:-10])
    with pytest.raises(ValueError, match="checksum mismatch"):
        bundle_lib.load_bundle(str(mixed_dir))
