"""The continuous cache in the bundle's document scoring (batch_predict/predictor.py `Document`)."""

from __future__ import annotations

import json
import shutil

import numpy as np

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
