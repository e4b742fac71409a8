"""The in-graph text contract agrees exactly with the Python one."""

from __future__ import annotations

import sys

import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextword.text import contract, graph_text
from nextword.text.contract import TextSettings

pytestmark = pytest.mark.unit

SEED = TextSettings(normalization="seed", eos=False)
SEED_EOS = TextSettings(normalization="seed", eos=True)
WHITESPACE = TextSettings(normalization="whitespace", eos=False)
WHITESPACE_EOS = TextSettings(normalization="whitespace", eos=True)
# Every normalization of the table, with and without <eos>: a new one is tested by being added.
ALL_SETTINGS = [TextSettings(normalization=name, eos=eos) for name in contract.NORMALIZATIONS for eos in (False, True)]
VOCAB = ["<???>", "<eos>", "the", "cat", "don't", "a-b", "é", "x"]

_GRAPHS: dict = {}


def graph_tokens(texts: list[str], text_settings: TextSettings) -> list[list[str]]:
    """Runs graph_text.line_tokens in a tf.function, as the exported bundle does."""
    if text_settings not in _GRAPHS:
        _GRAPHS[text_settings] = tf.function(
            lambda t: graph_text.line_tokens(t, text_settings),
            input_signature=[tf.TensorSpec([None], tf.string)],
        )
    ragged = _GRAPHS[text_settings](tf.constant(texts, dtype=tf.string))
    return [[w.decode("utf-8") for w in row] for row in ragged.to_list()]


def python_tokens(texts: list[str], text_settings: TextSettings) -> list[list[str]]:
    return [contract.line_tokens(t, text_settings) for t in texts]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Some of them LOOKS like", ["some", "of", "them", "looks", "like"]),
        ("Hello, World!\n-dash  don't  a-b", ["hello", "world", "don't", "a-b"]),
        ("ÀBC Éric straße", ["bc", "ric", "strae"]),  # ASCII-only lowercase; other letters deleted
        ("  \t\r\n  ", []),
        ("", []),
        ("x\x00y -- - 'q", ["xy", "'q"]),
        ("a\u00a0b\u2028c", ["abc"]),
    ],
)
def test_seed_tokenize_exact(text, expected):
    assert contract.tokenize(text, SEED) == expected
    assert graph_tokens([text], SEED) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The  CAT\tsat\r\n", ["The", "CAT", "sat"]),
        ("a\u00a0b\u2028c\x1cd\u3000e", ["a", "b", "c", "d", "e"]),
        ("x\x00y <eos> <???>", ["x\x00y", "<eos>", "<???>"]),
        ("\u200bzero-width is not space", ["\u200bzero-width", "is", "not", "space"]),
        ("", []),
    ],
)
def test_whitespace_tokenize_exact(text, expected):
    assert contract.tokenize(text, WHITESPACE) == expected
    assert graph_tokens([text], WHITESPACE) == [expected]


def test_eos_appended_to_every_line_of_a_batch():
    texts = ["The cat.", "", "!!"]
    expected = [["the", "cat", "<eos>"], ["<eos>"], ["<eos>"]]
    assert python_tokens(texts, SEED_EOS) == expected
    assert graph_tokens(texts, SEED_EOS) == expected


def test_whitespace_chars_are_exactly_python_isspace():
    python_space = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
    assert graph_text.WHITESPACE_CHARS == python_space


def test_lookup_ids_match_vocabulary_with_unknown_as_zero():
    vocab = contract.Vocabulary(VOCAB)
    table = graph_text.vocab_table(VOCAB)
    tokens = [["the", "dog", "<eos>"], [], ["é", "<???>", "X", "x"]]
    ragged = tf.ragged.constant(tokens, dtype=tf.string, ragged_rank=1, inner_shape=())
    got = graph_text.lookup_ids(ragged, table).to_list()
    assert got == [vocab.ids(row) for row in tokens]
    assert got == [[2, 0, 1], [], [6, 0, 0, 7]]


def test_every_normalization_has_its_graph_twin():
    assert set(graph_text.GRAPH_WORDS) == set(contract.NORMALIZATION_TABLE)
    assert {SEED, SEED_EOS, WHITESPACE, WHITESPACE_EOS} <= set(ALL_SETTINGS)


def test_eos_before_and_after_in_the_graph_as_the_contract_places_it():
    words = tf.ragged.constant([["a", "b"], []], dtype=tf.string)
    before = graph_text.with_eos(words, SEED_EOS, contract.EOS_TOKEN, before=True, after=False).to_list()
    both = graph_text.with_eos(words, SEED_EOS, contract.EOS_TOKEN, before=True).to_list()
    assert before == [[b"<eos>", b"a", b"b"], [b"<eos>"]]
    assert both == [[b"<eos>", b"a", b"b", b"<eos>"], [b"<eos>", b"<eos>"]]
    assert graph_text.with_eos(words, SEED, contract.EOS_TOKEN, before=True).to_list() == [[b"a", b"b"], []]


def test_unknown_normalization_is_a_one_line_error():
    with pytest.raises(ValueError, match="text.normalization: unknown value 'bpe'"):
        graph_text.tokenize(tf.constant(["x"]), TextSettings(normalization="bpe"))
    with pytest.raises(ValueError, match="text.normalization: unknown value 'bpe'"):
        contract.tokenize("x", TextSettings(normalization="bpe"))


# Text drawn from every Unicode category except surrogates (which Python cannot
# encode to UTF-8), weighted towards the characters the contract treats specially.
_special = st.sampled_from(list("azAZ'- -\n\r\t\x00") + list(graph_text.WHITESPACE_CHARS) + ["<eos>", "É", "ß"])
_any_char = st.characters(blacklist_categories=("Cs",))
_texts = st.lists(st.one_of(_special, _any_char), max_size=40).map("".join)
_byte_texts = st.binary(max_size=60).map(lambda b: b.decode("utf-8", "replace"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(st.one_of(_texts, _byte_texts), min_size=1, max_size=6))
def test_graph_and_python_agree_on_arbitrary_text(texts):
    vocab = contract.Vocabulary(VOCAB)
    table = graph_text.vocab_table(VOCAB)
    for text_settings in ALL_SETTINGS:
        expected = python_tokens(texts, text_settings)
        assert graph_tokens(texts, text_settings) == expected
        bound = contract.normalization(text_settings).word_bound  # batch prediction sizes lines by it
        assert all(bound(text) >= len(contract.tokenize(text, text_settings)) for text in texts)
        ragged = tf.ragged.constant(expected, dtype=tf.string, ragged_rank=1, inner_shape=())
        assert graph_text.lookup_ids(ragged, table).to_list() == [vocab.ids(row) for row in expected]
