"""The text contract: exact outputs of the pure functions every stage relies on."""

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nextword.text import contract
from nextword.text.contract import TextSettings

pytestmark = pytest.mark.unit

SEED = TextSettings()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Hello World", ["hello", "world"]),  # lowercase
        ("one\ntwo\n", ["one", "two"]),  # newline -> space
        ("it's a well-known fact.", ["it's", "a", "well-known", "fact"]),  # apostrophe, hyphen kept
        ("price: $3.50!!", ["price"]),  # digits and punctuation deleted
        ("a    b  \n\n c", ["a", "b", "c"]),  # runs of spaces collapse
        ("-dash --double x- y", ["x-", "y"]),  # words starting with '-' dropped
        ("tab\tjoined", ["tabjoined"]),  # a tab is deleted, not a separator (seed rule)
        ("café naïve", ["caf", "nave"]),  # non a-z letters deleted
        ("\ufeffBOM start\r\n", ["bom", "start"]),  # BOM and CR deleted
        ("---- --", []),  # all-dash words vanish
        ("Don\u2019t STOP \u2014 now", ["dont", "stop", "now"]),  # curly apostrophe and em dash deleted
        ("", []),
    ],
)
def test_seed_normalization(text, words):
    assert contract.tokenize(text, SEED) == words


def test_whitespace_normalization_keeps_tokens_verbatim():
    settings = TextSettings(normalization="whitespace")
    assert contract.tokenize(" The <unk> N\tcat\r\n", settings) == ["The", "<unk>", "N", "cat"]


def test_line_tokens_appends_eos_only_when_enabled():
    assert contract.line_tokens("a b", TextSettings(eos=True)) == ["a", "b", "<eos>"]
    assert contract.line_tokens("", TextSettings(eos=True)) == ["<eos>"]
    assert contract.line_tokens("a b", SEED) == ["a", "b"]


def test_vocab_threshold_is_strictly_more_than_min_count():
    counts = Counter({"three": 3, "four": 4, "five": 5})
    assert contract.build_vocab(counts, SEED) == ["<???>", "five", "four"]
    assert contract.build_vocab(counts, TextSettings(min_count=2)) == ["<???>", "five", "four", "three"]


def test_vocab_id_order_is_count_desc_then_word_and_unknown_is_zero():
    counts = {"b": 9, "a": 9, "c": 20, "<eos>": 50, "rare": 1}
    settings = TextSettings(eos=True, min_count=0)
    assert contract.build_vocab(counts, settings) == ["<???>", "<eos>", "c", "a", "b", "rare"]
    vocab = contract.Vocabulary(contract.build_vocab(counts, settings))
    assert vocab.id("<???>") == contract.UNK_ID == 0
    assert vocab.id("<eos>") == contract.EOS_ID == 1
    assert vocab.ids(["c", "never-seen"]) == [2, 0]


def test_max_size_counts_the_special_tokens():
    counts = {"a": 9, "b": 8, "c": 7}
    assert contract.build_vocab(counts, TextSettings(min_count=0, max_size=3)) == ["<???>", "a", "b"]


def test_vocab_text_round_trip_and_fingerprint_sensitivity():
    tokens = ["<???>", "a", "b"]
    assert contract.parse_vocab_text(contract.vocab_text(tokens), "vocab.txt") == tokens
    base = contract.fingerprint(tokens, SEED)
    assert base == contract.fingerprint(list(tokens), TextSettings())
    assert base != contract.fingerprint(["<???>", "b", "a"], SEED)
    assert base != contract.fingerprint(tokens, TextSettings(min_count=2))


@pytest.mark.parametrize(
    ("length", "stride", "windows"),
    [
        (3, 1, [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]]),
        (3, 2, [[0, 1, 2], [2, 3, 4]]),
        (3, 3, [[0, 1, 2], [3, 4, 5]]),
        (2, 4, [[0, 1], [4, 5]]),
        (7, 1, []),
    ],
)
def test_iter_windows(length, stride, windows):
    assert list(contract.iter_windows(range(6), length, stride)) == windows


@pytest.mark.parametrize(
    ("length", "stride", "ids", "windows"),
    [
        (3, 2, 6, [[0, 1, 2], [2, 3, 4], [4, 5, -1]]),  # 5 had no window: one more, padded
        (3, 2, 5, [[0, 1, 2], [2, 3, 4]]),  # every id is in a window already
        (4, 3, 2, [[0, 1, -1, -1]]),  # shorter than one window
        (4, 3, 1, []),  # a single id: nothing to predict
    ],
)
def test_iter_windows_pads_the_tail(length, stride, ids, windows):
    assert list(contract.iter_windows(range(ids), length, stride, pad_tail=True)) == windows


def test_split_of_is_deterministic_and_follows_fractions():
    splits = Counter(contract.split_of(f"file.txt:{i}", 0.1, 0.2) for i in range(5000))
    assert splits["test"] / 5000 == pytest.approx(0.2, abs=0.02)
    assert splits["valid"] / 5000 == pytest.approx(0.1, abs=0.02)
    assert contract.split_of("x:1", 0.1, 0.2) == contract.split_of("x:1", 0.1, 0.2)


@given(st.text())
def test_tokenize_never_raises_and_yields_only_allowed_characters(text):
    for word in contract.tokenize(text, SEED):
        assert word and not word.startswith("-")
        assert set(word) <= set("abcdefghijklmnopqrstuvwxyz'-")
