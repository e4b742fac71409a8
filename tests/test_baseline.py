"""The Kneser-Ney baseline: hand-computed estimates, normalization, KenLM agreement, the Beam stage."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from baseline import arpa, kneser_ney, ngrams, score
from baseline.ngrams import BOS
from nextword import storage
from tests.support.markov import markov_windows

A, B = 1, 2  # ids of the hand-computed case; 0 is the unknown symbol


def tiny_model(order: int = 2) -> kneser_ney.NgramModel:
    """One window `a b a b` (record length 4): the stream <s> a b a b."""
    return kneser_ney.estimate(ngrams.count_ngrams([[A, B, A, B]], order, overlap=1), order, vocab_size=3)


@pytest.mark.unit
def test_counts_of_the_tiny_stream_written_out():
    raw = ngrams.count_ngrams([[A, B, A, B]], 2, overlap=1)
    assert raw == {(A,): 2, (B,): 2, (BOS, A): 1, (A, B): 2, (B, A): 1}
    adjusted = kneser_ney.adjusted_counts(raw, 2)
    # top order: raw counts; unigrams: distinct left neighbours (a after <s> and b; b after a)
    assert adjusted == {(A,): 2, (B,): 1, (BOS, A): 1, (A, B): 2, (B, A): 1}


@pytest.mark.unit
def test_hand_computed_probabilities_with_discount_fallback():
    model = tiny_model()
    # Both orders lack n3 (count-of-counts), so D is undefined: KenLM's fallback 0.5, 1, 1.5.
    assert model.discounts == (kneser_ney.FALLBACK_DISCOUNTS,) * 2
    assert model.fallback_orders == (1, 2)
    # Unigrams: A = 2 + 1 = 3, gamma = (0.5 * 1 + 1.0 * 1) / 3 = 0.5, uniform share 0.5 / 3.
    p = {w: math.exp(model.log_prob((), w)) for w in (0, A, B)}
    assert p[A] == pytest.approx((2 - 1.0) / 3 + 0.5 / 3)  # 0.5
    assert p[B] == pytest.approx((1 - 0.5) / 3 + 0.5 / 3)  # 1/3
    assert p[0] == pytest.approx(0.5 / 3)  # the unknown symbol, never seen: the uniform share only
    # Bigrams: p(b | a) = (2 - 1) / 2 + gamma(a) p(b), gamma(a) = 1.0 * 1 / 2.
    assert math.exp(model.log_prob((A,), B)) == pytest.approx(0.5 + 0.5 * (1 / 3))
    assert math.exp(model.log_prob((B,), A)) == pytest.approx(0.5 + 0.5 * 0.5)
    assert math.exp(model.log_prob((BOS,), A)) == pytest.approx(0.5 + 0.5 * 0.5)
    # An unseen bigram backs off with gamma(h); an unseen history with weight 1.
    assert math.exp(model.log_prob((A,), A)) == pytest.approx(0.5 * 0.5)
    assert math.exp(model.log_prob((0,), A)) == pytest.approx(0.5)


@pytest.mark.unit
def test_discounts_from_count_of_counts():
    adjusted = [1] * 10 + [2] * 5 + [3] * 3 + [4] * 2 + [7]
    d, fallback = kneser_ney.discounts(adjusted)
    y = 10 / (10 + 2 * 5)
    assert d == pytest.approx((1 - 2 * y * 5 / 10, 2 - 3 * y * 3 / 5, 3 - 4 * y * 2 / 3))
    assert not fallback


@pytest.mark.unit
def test_evaluation_follows_the_trainer_protocols():
    model = tiny_model()
    windows = [[A, B, A, B], [B, A, B, A]]  # the second continues the first (overlap 1)
    carried = list(ngrams.targets(windows, 2, 1, carry=True))
    assert carried == [((A,), B), ((B,), A)] * 3  # order 2: one id of context, <s> a cut to a
    reset = list(ngrams.targets(windows, 2, 1, carry=False))
    assert len(reset) == len(carried) == 6  # each window predicts ids[1:], either way
    assert reset[3] == ((B,), A)  # the second window restarts: <s> b is cut to its last id
    assert list(ngrams.targets(windows, 3, 1, carry=True))[:2] == [((BOS, A), B), ((A, B), A)]
    result = score.evaluate(model, iter(windows), 1, carried=True)
    expected = -sum(model.log_prob(c, t) for c, t in carried) / 6
    assert result["tokens"] == 6 and result["loss"] == pytest.approx(expected)


@pytest.mark.unit
@pytest.mark.parametrize("order", [1, 3, 5])
def test_probabilities_sum_to_one_at_every_order(order):
    vocab = 30
    windows = markov_windows(1, 4000, vocab, 10)
    model = kneser_ney.estimate(ngrams.count_ngrams(windows, order, 1), order, vocab)
    rng = random.Random(2)
    contexts = [(), (BOS,), (BOS, 3)] + [
        tuple(rng.choice(w[: n + 1]) for n in range(k)) for w in windows[:5] for k in (1, 2, 4)
    ]
    contexts += [tuple(w[:k]) for w in windows[:20] for k in range(1, order)]  # seen histories too
    for context in contexts:
        total = sum(math.exp(model.log_prob(context, token)) for token in range(vocab))
        assert total == pytest.approx(1.0, abs=1e-9), context


@pytest.mark.unit
def test_kenlm_loads_the_arpa_and_agrees(tmp_path):
    kenlm = pytest.importorskip("kenlm", reason="the kenlm package (test extra) did not build")
    vocab_size = 40
    vocab = ["<???>"] + [f"w{i}" for i in range(1, vocab_size)]
    windows = markov_windows(3, 20000, vocab_size, 12)
    model = kneser_ney.estimate(ngrams.count_ngrams(windows, 5, 1), 5, vocab_size)
    path = tmp_path / "model.arpa"
    with path.open("w", encoding="utf-8") as out:
        arpa.write_arpa(model, vocab, out)
    lm = kenlm.Model(str(path))
    assert lm.order == 5
    test = markov_windows(4, 600, vocab_size, 12)
    stream = test[0] + [t for w in test[1:] for t in w[1:]]
    words = arpa.arpa_words(vocab)
    theirs = [s for s, _, _ in lm.full_scores(" ".join(words[t] for t in stream), bos=True, eos=False)]
    ours = [lp / math.log(10) for _, lp in _log_probs_along(model, stream)]
    assert len(theirs) == len(ours) == len(stream)
    per_token = abs(sum(theirs) - sum(ours)) / len(stream)
    assert per_token < 1e-4
    assert max(abs(a - b) for a, b in zip(theirs, ours, strict=True)) < 1e-4


def _log_probs_along(model, stream):
    history = (BOS,)
    for token in stream:
        yield token, model.log_prob(history, token)
        history = (*history, token)[-(model.order - 1) :]


@pytest.mark.unit
def test_arpa_refuses_reserved_words():
    with pytest.raises(ValueError, match="'</s>'"):
        arpa.arpa_words(["<???>", "</s>"])


@pytest.mark.beam
def test_beam_stage_matches_the_pure_core_and_learns_the_chain(synthetic, tmp_path, monkeypatch):
    from baseline import pipeline
    from nextword.artifacts import data_dir
    from tests.support.beam import local_test_pipeline
    from tests.support.trainer import GENERATOR

    # Splits scored in parts of the smallest size (1024 positions), as a budget far below a split scores them.
    monkeypatch.setattr(pipeline, "_QUERY_BYTES_PER_POSITION", 1 << 40)
    out = tmp_path / "baseline"
    args = ["--set", f"train.data_dir={synthetic}", "--set", f"baseline.output_dir={out}", "--set", "baseline.order=3"]
    report = pipeline.run(args, test_pipeline=local_test_pipeline())
    assert json.loads((out / "baseline.json").read_text()) == report
    manifest, _ = data_dir.read_manifest_and_vocab(str(synthetic))
    assert min(manifest.count("targets", split) for split in ("valid", "test")) > 2 * 1024  # several parts each
    for protocol in ("carried", "window"):
        for split in ("valid", "test"):  # exactly the tokens the LSTM predicts
            assert report["evaluation"][protocol][split]["tokens"] == manifest.count("targets", split)
    # The same model in one process: the Beam counts are the pure counts.
    train = score.read_windows(data_dir.shard_paths(str(synthetic), manifest, "train"))
    model = kneser_ney.estimate(ngrams.count_ngrams(train, 3, 1), 3, manifest.vocab_size)
    test = score.read_windows(data_dir.shard_paths(str(synthetic), manifest, "test"))
    assert report["evaluation"]["carried"]["test"]["loss"] == pytest.approx(
        score.evaluate(model, test, 1, True)["loss"]
    )
    assert report["ngrams"] == model.ngram_counts()
    # Its model.arpa as the evaluation's hash tables (baseline/lookup.py) scores the same tokens the same.
    from baseline import lookup

    _, vocab = data_dir.read_manifest_and_vocab(str(synthetic))
    pairs = list(ngrams.targets(score.read_windows(data_dir.shard_paths(str(synthetic), manifest, "test")), 3, 1, True))
    contexts = np.array([[-1] * (2 - len(c)) + [w + 1 for w in c] for c, _ in pairs])  # BOS (-1) is code 0
    log10 = lookup.load(str(out / "model.arpa"), vocab).log10_probs(contexts, np.array([t + 1 for _, t in pairs]))
    assert -log10.mean() * math.log(10) == pytest.approx(report["evaluation"]["carried"]["test"]["loss"], rel=1e-6)
    # A first-order Markov chain: the n-gram model gets within 3% of the generator's perplexity.
    assert report["evaluation"]["carried"]["test"]["perplexity"] < GENERATOR["perplexity"] * 1.03
    assert (out / "model.arpa").read_text().startswith("\\data\\\nngram 1=")
    assert json.loads((out / storage.OWNER_FILE).read_text())["stage"] == "baseline"  # the folder is marked ours
    # A folder nextword did not write, holding a file a run would replace: refused, the file stays.
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "model.arpa").write_text("my own model\n")
    args = ["--set", f"train.data_dir={synthetic}", "--set", f"baseline.output_dir={theirs}"]
    with pytest.raises(ValueError, match=rf"^{theirs / 'model.arpa'}: not written by nextword: choose an empty"):
        pipeline.run(args, test_pipeline=local_test_pipeline())
    assert [p.name for p in theirs.iterdir()] == ["model.arpa"]
    assert (theirs / "model.arpa").read_text() == "my own model\n"


@pytest.mark.unit
def test_records_round_trip_and_damage_is_named(tmp_path):
    import io

    from beam_preprocess import core

    windows = [[0, 1, 2**40], [5] * 30]
    data = b"".join(core.tfrecord_frame(core.encode_example(w)) for w in windows)
    records = list(core.iter_tfrecords(io.BytesIO(data), "shard-x"))
    assert [core.decode_example(r) for r in records] == windows
    damaged = data[:-3] + b"\0\0\0"
    with pytest.raises(ValueError, match="shard-x: record 1 is truncated or corrupt"):
        list(core.iter_tfrecords(io.BytesIO(damaged), "shard-x"))
