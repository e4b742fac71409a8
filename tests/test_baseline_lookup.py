"""The ARPA model as hash tables (baseline/lookup.py): the back-off rule of the reference model, per token."""

from __future__ import annotations

import math

import numpy as np
import pytest

from baseline import arpa, kneser_ney, lookup, ngrams
from baseline.ngrams import BOS
from nextword.ngram import ArpaTables
from tests.support.markov import markov_windows

VOCAB_SIZE = 40
VOCAB = ["<???>"] + [f"w{i}" for i in range(1, VOCAB_SIZE)]


def _written(model: kneser_ney.NgramModel, tmp_path) -> ArpaTables:
    path = tmp_path / "model.arpa"
    with path.open("w", encoding="utf-8") as out:
        arpa.write_arpa(model, VOCAB, out)
    return lookup.load(str(path), VOCAB)


@pytest.mark.unit
@pytest.mark.parametrize("order", [1, 2, 5])
def test_every_token_of_a_stream_as_the_reference_model_scores_it(order, tmp_path):
    model = kneser_ney.estimate(ngrams.count_ngrams(markov_windows(3, 20000, VOCAB_SIZE, 12), order, 1), order,
                                VOCAB_SIZE)  # fmt: skip
    tables = _written(model, tmp_path)
    assert tables.order == order
    test = markov_windows(4, 500, VOCAB_SIZE, 12)
    stream = np.array(test[0] + [t for w in test[1:] for t in w[1:]])
    stream[::37] = 0  # the unknown word, in contexts and as a target
    ours, _ = tables.stream_log_probs(stream[:-1], stream[1:])
    history: tuple = (BOS, int(stream[0]))
    theirs = []
    for token in stream[1:]:
        theirs.append(model.log_prob(history, int(token)))
        history = (*history, int(token))[-max(order - 1, 1) :] if order > 1 else ()
    # ARPA keeps 7 significant digits of each log10 probability and back-off.
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-6 * order)
    assert all(len(np.unique(hashes)) == len(hashes) for hashes, _, _ in tables.tables)  # no two share a hash


@pytest.mark.unit
def test_a_hand_made_arpa_file_with_spaces_and_a_missing_context(tmp_path):
    path = tmp_path / "hand.arpa"
    path.write_text(
        "\\data\\\nngram 1=5\nngram 2=2\n\n\\1-grams:\n-1.0 <unk>\n-99 <s> -0.5\n-99 </s>\n-0.5 a -0.25\n-0.7 b\n\n"
        "\\2-grams:\n-0.1 <s> a\n-0.2 a b\n\n\\end\\\n"
    )
    tables = lookup.load(str(path), ["<unk>", "a", "b"])
    inputs, targets = np.array([1, 2, 1]), np.array([2, 1, 1])  # <s> a | b a a
    log_probs, orders = tables.stream_log_probs(inputs, targets)
    # a b: listed; b a: b has no back-off (0), unigram a; a a: back-off of a, then unigram a.
    np.testing.assert_allclose(log_probs / math.log(10), [-0.2, -0.5, -0.25 - 0.5], atol=1e-6)
    assert orders.tolist() == [2, 2, 2]  # every context word is known to a bigram model
    first, _ = tables.stream_log_probs(np.array([1]), np.array([1]))  # <s> a | a: back-off of a + p(a)
    assert first[0] / math.log(10) == pytest.approx(-0.75, abs=1e-6)


@pytest.mark.unit
def test_a_cut_short_file_is_one_error(tmp_path):
    path = tmp_path / "cut.arpa"
    path.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0 <unk>\n-0.5 a\n")
    with pytest.raises(ValueError, match="cut short"):
        lookup.load(str(path), ["<unk>", "a"])


@pytest.mark.unit
def test_the_tables_round_trip_through_their_file_and_a_damaged_one_is_named(tmp_path):
    model = kneser_ney.estimate(ngrams.count_ngrams(markov_windows(3, 3000, VOCAB_SIZE, 12), 3, 1), 3, VOCAB_SIZE)
    tables = _written(model, tmp_path)
    again = ArpaTables.from_bytes(tables.to_bytes(), "bundle/meta/ngram.npz")
    stream = np.array(markov_windows(5, 200, VOCAB_SIZE, 12)[0])
    for ours, theirs in zip(again.stream_log_probs(stream[:-1], stream[1:]),
                            tables.stream_log_probs(stream[:-1], stream[1:]), strict=True):  # fmt: skip
        np.testing.assert_array_equal(ours, theirs)
    assert again.order == 3 and again.nbytes == tables.nbytes
    with pytest.raises(ValueError, match=r"^bundle/meta/ngram.npz: not an n-gram table file"):
        ArpaTables.from_bytes(tables.to_bytes()[:100], "bundle/meta/ngram.npz")


@pytest.mark.unit
def test_a_document_scored_in_parts_is_the_stream_scored_at_once(tmp_path):
    model = kneser_ney.estimate(ngrams.count_ngrams(markov_windows(3, 5000, VOCAB_SIZE, 12), 4, 1), 4, VOCAB_SIZE)
    tables = _written(model, tmp_path)
    stream = np.array(markov_windows(6, 300, VOCAB_SIZE, 12)[0] + markov_windows(7, 300, VOCAB_SIZE, 12)[0])
    whole, whole_orders = tables.stream_log_probs(stream[:-1], stream[1:])
    assert len(set(whole_orders.tolist())) >= 2  # the context orders differ along the stream
    history, parts, part_orders = np.array([0, stream[0] + 1]), [], []
    for part in np.split(stream[1:], [1, 2, 7, 50]):
        scored, orders, history = tables.continued_log_probs(history, part)
        parts.append(scored)
        part_orders.append(orders)
        assert len(history) <= 3
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(np.concatenate(part_orders), whole_orders)
    # A document whose first word is not known: its first targets back off to what is known, never past a gap.
    unknown_first, _, _ = tables.continued_log_probs(np.array([-1]), stream[1:4])
    history: tuple = ()
    for got, token in zip(unknown_first, stream[1:4], strict=True):
        assert got == pytest.approx(model.log_prob(history, int(token)), abs=1e-5)
        history = (*history, int(token))


@pytest.mark.unit
def test_the_context_order_depends_on_the_context_alone_so_a_mixture_stays_a_distribution(tmp_path):
    model = kneser_ney.estimate(ngrams.count_ngrams(markov_windows(3, 4000, VOCAB_SIZE, 12), 4, 1), 4, VOCAB_SIZE)
    tables = _written(model, tmp_path)
    test = markov_windows(8, 60, VOCAB_SIZE, 12)[0]
    vocab_codes = np.arange(1, VOCAB_SIZE + 1)  # every word the model predicts (code = id + 1)
    weights = np.array([0.0, 0.1, 0.3, 0.6, 0.9])  # by context order 1..4
    uniform = np.full(VOCAB_SIZE, 1.0 / VOCAB_SIZE)  # any model distribution over the same words
    orders_seen = set()
    for end in range(3, len(test)):
        context = np.array([[-1 if c < 0 else test[c] + 1 for c in range(end - 3, end)]] * VOCAB_SIZE)
        log10, orders = tables.scores(context, vocab_codes)
        assert len(set(orders.tolist())) == 1  # the same weight whatever word is scored
        orders_seen.add(int(orders[0]))
        mixed = (1 - weights[orders]) * uniform + weights[orders] * 10.0**log10
        assert mixed.sum() == pytest.approx(1.0, abs=1e-4)
    assert len(orders_seen) >= 2
