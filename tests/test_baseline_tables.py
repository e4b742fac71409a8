"""The distributed estimation's keyed steps (baseline/tables.py), composed in memory as the Beam stage composes
them, against the single-process reference (kneser_ney.estimate): same counts, probabilities, backoffs, scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from baseline import kneser_ney, ngrams, tables
from baseline.ngrams import BOS
from tests.support.markov import markov_windows

pytestmark = pytest.mark.unit


def _markov_windows(seed: int, tokens: int, vocab: int, length: int) -> list[list[int]]:
    windows = markov_windows(seed, tokens, vocab, length)
    windows[7] = windows[7][:4] + [-1] * (length - 3)  # padding ends a segment: the next window starts a stream
    return windows


def _distributed(windows, order, vocab_size, buckets, chunk_tokens, prune=None):
    """Every keyed step in turn, each bucket's work apart, exchanging only what the Beam stage exchanges."""
    radix = tables.radix_of(vocab_size)
    thresholds = [0] * (order + 1) if prune is None else [0, *prune]
    pieces = [[] for _ in range(buckets)]
    unigram_raw = np.zeros(radix, np.int64)
    for codes, first in tables.code_chunks(windows, 1, order, chunk_tokens):
        uni, counted = tables.count_chunk(codes, first, order, radix)
        unigram_raw += uni
        for b, part in enumerate(tables.split_chunk(counted, buckets)):
            pieces[b].append(part)
    own, coc, continuation = [], np.zeros((order + 1, 4), np.int64), np.zeros(radix, np.int64)
    bigram_parts = np.zeros((5, radix)) if order >= 2 else None
    for b in range(buckets):
        keys, raw = tables.merge_counts(pieces[b], order, radix)
        adjusted, cont = tables.adjusted_counts(keys, raw, order, radix)
        keep = [None, None] + [tables.kept(raw[n], thresholds[n]) for n in range(2, order + 1)]
        continuation += cont
        for n in range(2, order + 1):
            coc[n] += tables.count_of_counts(adjusted[n])
        if order >= 2:
            bigram_parts += tables.context_parts(adjusted[2], keep[2], keys[2] % radix, radix)
        own.append((keys, adjusted, keep, tables.words_of(keys, order, radix)))
    model = tables.global_model(unigram_raw, continuation, coc, bigram_parts, order, vocab_size)
    # To the contexts' buckets and back, in arrival order.
    arriving = [[None] * (order + 1) for _ in range(buckets)]
    backoffs = []
    for d in range(buckets):
        contexts: list = [None] * (order + 1)
        sent: list = [None] * (order + 1)
        for n in range(3, order + 1):
            sent[n] = [np.flatnonzero(tables.table_buckets(words[n][:, :-1], buckets) == d) for _, _, _, words in own]
            contexts[n] = tuple(
                np.concatenate(part)
                for part in zip(
                    *((w[n][i, :-1], a[n][i], k[n][i]) for (_, a, k, w), i in zip(own, sent[n], strict=True)),
                    strict=True,
                )
            )
        answers, bo = tables.context_sums(own[d][0], contexts, order, radix, model["discounts"])
        backoffs.append(bo)
        for n in range(3, order + 1):
            start = 0
            for s, i in enumerate(sent[n]):
                if arriving[s][n] is None:
                    arriving[s][n] = (np.zeros(len(own[s][0][n])), np.zeros(len(own[s][0][n])))
                for k in range(2):
                    arriving[s][n][k][i] = answers[n][k][start : start + len(i)]
                start += len(i)
    probs, gammas = {}, {}
    results = []
    for s in range(buckets):
        keys, adjusted, keep, words = own[s]
        p = tables.interpolate(keys, adjusted, arriving[s], model, order, radix)
        results.append((keys, p, keep, backoffs[s]))
        for n in range(2, order + 1):
            for row in np.flatnonzero(keep[n]):
                gram = tuple(int(c) - 1 for c in words[n][row])
                probs[gram] = p[n][row]
                if n < order and not math.isnan(backoffs[s][n][row]):
                    gammas[gram] = backoffs[s][n][row]
    for code in range(1, radix):
        probs[(code - 1,)] = model["unigram_p"][code]
        if order >= 2 and not math.isnan(model["bigram_gamma"][code]):
            gammas[(code - 1,)] = model["bigram_gamma"][code]
    if order >= 2:
        gammas[(BOS,)] = model["bigram_gamma"][0]
    return model, probs, gammas, results


def _scores(model, results, targets, order, buckets, radix):
    contexts, lengths, tokens = tables.query_arrays(targets, order)
    token_bucket, context_bucket = tables.query_buckets(contexts, lengths, tokens, buckets)
    longest = np.ones(len(tokens), np.int64)
    p = np.full(len(tokens), np.nan)
    log_backoff = np.zeros((len(tokens), max(contexts.shape[1] - 1, 0)))
    for b, (keys, probs, keep, backoffs) in enumerate(results):
        here = token_bucket == b
        longest[here], p[here] = tables.answer_tokens(
            keys, probs, keep, contexts[here], lengths[here], tokens[here], radix
        )
        here = context_bucket == b
        log_backoff[here] = tables.answer_contexts(keys, backoffs, contexts[here], lengths[here], radix)
    return tables.log_probs(model, contexts, lengths, tokens, longest, p, log_backoff)


@pytest.mark.parametrize("order, buckets, chunk_tokens", [(1, 1, 100), (2, 3, 500), (3, 4, 997), (5, 5, 1500)])
def test_distributed_estimate_equals_the_single_process_one(order, buckets, chunk_tokens):
    vocab = 30
    windows = _markov_windows(5, 6000, vocab, 10)
    reference = kneser_ney.estimate(ngrams.count_ngrams(windows, order, 1), order, vocab)
    model, probs, gammas, results = _distributed(windows, order, vocab, buckets, chunk_tokens)
    assert set(probs) == set(reference.probs)
    assert all(probs[g] == pytest.approx(reference.probs[g], rel=1e-12) for g in probs)
    assert gammas.keys() == reference.backoffs.keys() | ({(BOS,)} if order > 1 else set())
    assert all(gammas[g] == pytest.approx(reference.backoffs[g], rel=1e-12) for g in reference.backoffs)
    assert model["discounts"].ravel().tolist() == pytest.approx(np.ravel(reference.discounts).tolist())
    assert tuple(model["fallback_orders"]) == reference.fallback_orders
    # Scoring joins the n-grams each position needs: the reference's log-probabilities, both protocols.
    test = _markov_windows(6, 900, vocab, 10)
    for carry in (True, False):
        targets = list(ngrams.targets(test, order, 1, carry))
        ours = _scores(model, results, targets, order, buckets, tables.radix_of(vocab))
        theirs = [reference.log_prob(c, t) for c, t in targets]
        assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-12)


def test_chunks_count_what_one_pass_counts():
    windows = _markov_windows(7, 3000, 20, 10)
    whole = ngrams.count_ngrams(windows, 4, 1)
    radix = tables.radix_of(20)
    counted: dict = {}
    for codes, first in tables.code_chunks(windows, 1, 4, 333):
        unigrams, orders = tables.count_chunk(codes, first, 4, radix)
        for code in np.flatnonzero(unigrams):
            counted[(int(code) - 1,)] = counted.get((int(code) - 1,), 0) + int(unigrams[code])
        words = np.arange(radix)[:, None]
        for first_words, suffixes, counts in orders:
            words = np.concatenate([first_words[:, None], words[suffixes]], axis=1)
            for row, count in zip(words.tolist(), counts.tolist(), strict=True):
                gram = tuple(c - 1 for c in row)
                counted[gram] = counted.get(gram, 0) + count
    assert counted == dict(whole)


def test_prune_drops_rare_ngrams_and_keeps_the_model_normalized():
    vocab, order = 30, 3
    windows = _markov_windows(5, 6000, vocab, 10)
    raw = ngrams.count_ngrams(windows, order, 1)
    _, full, _, _ = _distributed(windows, order, vocab, 2, 2000)
    model, probs, gammas, results = _distributed(windows, order, vocab, 2, 2000, prune=[0, 1, 2])
    # lmplz --prune 0 1 2: bigrams seen once and trigrams seen at most twice are gone, nothing else.
    assert {g for g in full if g not in probs} == {g for g in full if len(g) > 1 and raw[g] <= len(g) - 1}
    assert any(len(g) == 3 for g in full if g not in probs) and any(len(g) == 3 for g in probs)
    radix = tables.radix_of(vocab)
    for context in [(BOS, 3), (4, 5), (3,), (BOS,)] + [tuple(g[:-1]) for g in list(probs)[-50:] if len(g) == 3]:
        targets = [(context, t) for t in range(vocab)]
        total = np.exp(_scores(model, results, targets, order, 2, radix)).sum()
        assert total == pytest.approx(1.0, abs=1e-9), context


def test_prune_and_memory_budget_are_checked_where_the_config_is_read():
    from nextword import config

    assert config.load(None, ["baseline.prune=[0, 0, 1]"]).baseline.prune == (0, 0, 1)
    for bad in ("baseline.prune=[1, 1]", "baseline.prune=[0, 2, 1]", "baseline.memory_budget_mb=32"):
        with pytest.raises(config.ConfigError, match=bad.split("=")[0]):
            config.load(None, [bad])


def test_the_budget_not_the_corpus_bounds_a_step():
    from baseline import pipeline
    from nextword import config

    small = config.load(None, ["baseline.memory_budget_mb=256"])
    chunk, buckets, _ = pipeline.sizing(small, 1_000_000)
    assert chunk * pipeline._CHUNK_BYTES_PER_TOKEN <= 256 << 20 and buckets == small.baseline.buckets
    for tokens in (10**7, 10**8, 10**9):  # more buckets, each the same bounded size
        _, buckets, _ = pipeline.sizing(small, tokens)
        per_bucket = tokens * 5 * pipeline._BUCKET_BYTES_PER_NGRAM * pipeline._BUCKET_SKEW / buckets
        assert per_bucket <= 256 << 20 and buckets > small.baseline.buckets


def test_window_arrays_decode_what_the_record_reader_decodes(tmp_path):
    import gzip

    from baseline import score
    from beam_preprocess import core

    windows = [[0, 1, 2**40, 127, 128, 300], [5, -1, -1], [7] * 40, [2**63 - 1, 3]]
    path = tmp_path / "shard.tfrecord.gz"
    with gzip.open(path, "wb") as out:
        for w in windows:
            out.write(core.tfrecord_frame(core.encode_example(w)))
    for batch in (1, 3, 100):
        assert [w.tolist() for w in score.read_window_arrays([str(path)], batch)] == windows
    assert list(score.read_windows([str(path)])) == windows
