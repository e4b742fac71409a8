"""The text contract inside a TensorFlow graph, for the exported model bundle.

Each function here mirrors one in `nextword.text.contract` and is proved equal to
it by tests/test_graph_text.py (exact cases and a hypothesis property over
arbitrary Unicode). Inputs are UTF-8 strings, as Python `str` encodes them.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from nextword.text import contract
from nextword.text.contract import TextSettings

# Exactly the characters for which Python's str.isspace() is true: what
# str.split() (the "whitespace" normalization) splits on. tf.strings.split's
# own whitespace is ASCII only, so the graph replaces these by " " first.
WHITESPACE_CHARS = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
WHITESPACE_PATTERN = "[" + "".join(f"\\x{{{ord(c):04x}}}" for c in WHITESPACE_CHARS) + "]+"


def _keep(pieces: tf.RaggedTensor, keep: tf.RaggedTensor) -> tf.RaggedTensor:
    return tf.ragged.boolean_mask(pieces, keep)


def _seed_words(text: tf.Tensor) -> tf.RaggedTensor:
    # tf.strings.lower without an encoding lowercases ASCII only, as the contract does.
    cleaned = tf.strings.regex_replace(tf.strings.lower(text), "\n", " ")
    cleaned = tf.strings.regex_replace(cleaned, contract.SEED_DELETE_PATTERN, "")
    pieces = tf.strings.split(cleaned, sep=" ")  # [batch, (pieces)], empty pieces between spaces
    first = tf.ragged.map_flat_values(tf.strings.substr, pieces, 0, 1)
    keep = tf.ragged.map_flat_values(
        lambda p, f: tf.logical_and(tf.not_equal(p, ""), tf.not_equal(f, "-")), pieces, first
    )
    return _keep(pieces, keep)


def _whitespace_words(text: tf.Tensor) -> tf.RaggedTensor:
    pieces = tf.strings.split(tf.strings.regex_replace(text, WHITESPACE_PATTERN, " "), sep=" ")
    return _keep(pieces, tf.ragged.map_flat_values(tf.not_equal, pieces, ""))


# The twin of each contract.NORMALIZATION_TABLE entry's `words`: string [batch] -> string [batch, (words)].
GRAPH_WORDS: dict[str, Callable[[tf.Tensor], tf.RaggedTensor]] = {
    "seed": _seed_words,
    "whitespace": _whitespace_words,
}


def tokenize(text: tf.Tensor, settings: TextSettings) -> tf.RaggedTensor:
    """text: string [batch] -> words: string [batch, (words)], as `contract.tokenize`."""
    contract.normalization(settings)  # the same one-line error for an unknown name
    return GRAPH_WORDS[settings.normalization](text)


def with_eos(
    pieces: tf.RaggedTensor, settings: TextSettings, eos, before: bool = False, after: bool = True
) -> tf.RaggedTensor:
    """pieces [batch, (n)] -> [batch, (n + before + after)]: `eos` (contract.EOS_ID or EOS_TOKEN) after each
    row as `contract.line_tokens` puts it, and before it if asked (the previous line's end, as context),
    when the settings use `<eos>`; unchanged without."""
    if not settings.eos:
        return pieces
    column = tf.RaggedTensor.from_tensor(tf.fill(tf.stack([pieces.nrows(), 1]), eos))
    return tf.concat([column] * before + [pieces] + [column] * after, axis=1)


def line_tokens(text: tf.Tensor, settings: TextSettings) -> tf.RaggedTensor:
    """text: string [batch] -> tokens: string [batch, (tokens)], as `contract.line_tokens`."""
    return with_eos(tokenize(text, settings), settings, contract.EOS_TOKEN)


def vocab_table(tokens: list[str]) -> tf.lookup.StaticHashTable:
    """token -> id (int64) for a vocabulary in id order; unknown tokens get contract.UNK_ID."""
    keys = tf.constant(tokens, dtype=tf.string)
    values = tf.range(len(tokens), dtype=tf.int64)
    initializer = tf.lookup.KeyValueTensorInitializer(keys, values)
    return tf.lookup.StaticHashTable(initializer, default_value=contract.UNK_ID)


def lookup_ids(tokens: tf.RaggedTensor, table: tf.lookup.StaticHashTable) -> tf.RaggedTensor:
    """tokens: string [batch, (n)] -> ids: int32 [batch, (n)], as `contract.Vocabulary.ids`."""
    return tf.ragged.map_flat_values(lambda flat: tf.cast(table.lookup(flat), tf.int32), tokens)
