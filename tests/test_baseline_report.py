"""How a run's metrics are set beside the n-gram baseline (metrics.json "baseline"): every status, never a crash."""

from __future__ import annotations

import pytest

from nextword.artifacts.baseline_report import BaselineReport, compare

pytestmark = pytest.mark.unit


def report(valid_tokens: int = 90, test_tokens: int = 100) -> BaselineReport:
    def split(perplexity, tokens):
        return {"perplexity": perplexity, "tokens": tokens, "loss": 0.0, "unknown_tokens": 0, "unknown_rate": 0.0}

    evaluation = {
        p: {"valid": split(200.0, valid_tokens), "test": split(180.0, test_tokens)} for p in ("carried", "window")
    }
    return BaselineReport(order=5, data_dir="d", data_fingerprint="f", manifest_sha256="sha", train_tokens=1000,
                          ngrams=[10], discounts=[[0.5, 1.0, 1.5]], fallback_orders=[], evaluation=evaluation,
                          count_seconds=1.0, estimate_seconds=1.0)  # fmt: skip


METRICS = {"valid": {"perplexity": 150.0, "tokens": 90}, "test": {"perplexity": 135.0, "tokens": 100}}


def test_ratio_is_lstm_over_ngram_perplexity_on_the_same_tokens():
    section = compare(report(), METRICS, carried=True, manifest_sha256="sha")
    assert section["status"] == "ok" and section["protocol"] == "carried"
    assert section["test"]["ratio"] == pytest.approx(0.75) and section["valid"]["ratio"] == pytest.approx(0.75)


@pytest.mark.parametrize(
    "baseline, sha, status, hint",
    [
        (None, "sha", "missing", "run `nextword baseline"),
        (report(), "other", "stale", "rerun `nextword baseline`"),
        (report(test_tokens=99), "sha", "mismatch", "baseline test: 99 tokens scored where the LSTM scored 100"),
    ],
)
def test_a_baseline_that_cannot_be_compared_is_a_status_with_the_fix(baseline, sha, status, hint):
    section = compare(baseline, METRICS, carried=False, manifest_sha256=sha)
    assert section["status"] == status and hint in section["hint"] and "test" not in section
