"""An n-gram back-off model as sorted hash tables, queried a whole array of positions at a time (pure NumPy).

What evaluation mixes with the LSTM (trainer/evaluate.py) and what a bundle's document scoring may carry
(batch_predict/predictor.py): one table per order, the sorted 64-bit hashes of its n-grams beside their log10
probability and back-off weight, 16 bytes per n-gram (baseline/lookup.py reads them from an ARPA file). A
query is the ARPA back-off rule, vectorized:

    log10 p(w | c_1..c_k) = log10 p(c_j..c_k w) + sum of log10 bo(c_i..c_k) for i < j,

c_j..c_k w being the longest n-gram of the model that ends the query (a missing context's back-off is 0).

Words are codes as in baseline/tables.py: `<s>` is 0, vocabulary id i is i + 1. Two different n-grams of an
order share a hash with probability about entries**2 / 2**65 (1e-7 at a few million n-grams): the price of
not holding the words.
"""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np

_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
LN_10 = math.log(10.0)


def _extend(hashes: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The hash of each sequence with one more code in front: n-grams are hashed from their last word back,
    so that a query's n-grams of every order are one running hash."""
    with np.errstate(over="ignore"):  # arithmetic modulo 2**64 is the point
        mixed = (hashes ^ (codes.astype(np.uint64) + np.uint64(1))) * _MULTIPLIER
        return mixed ^ (mixed >> np.uint64(29))


def hash_codes(codes: np.ndarray) -> np.ndarray:
    """[rows, n] codes -> [rows] uint64 hashes of each row read last word first."""
    hashes = np.zeros(len(codes), np.uint64)
    for column in range(codes.shape[1] - 1, -1, -1):
        hashes = _extend(hashes, codes[:, column])
    return hashes


class ArpaTables:
    """Per order n >= 2: sorted hashes, log10 probabilities and back-offs; order 1: arrays indexed by code."""

    def __init__(self, order: int, unigram_log10: np.ndarray, unigram_backoff: np.ndarray,
                 tables: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):  # fmt: skip
        self.order = order
        self.unigram_log10 = unigram_log10  # [codes] float32
        self.unigram_backoff = unigram_backoff  # [codes] float32
        self.tables = tables  # tables[n - 2] for order n: (hashes [m] uint64 sorted, log10 [m], backoff [m])

    @property
    def nbytes(self) -> int:
        arrays = [self.unigram_log10, self.unigram_backoff, *(a for table in self.tables for a in table)]
        return sum(a.nbytes for a in arrays)

    def _find(self, n: int, hashes: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found, log10, backoff) of the order-n n-grams with these hashes, where `present`."""
        keys, log10, backoff = self.tables[n - 2]
        if not len(keys):
            return np.zeros(len(hashes), bool), np.zeros(len(hashes), np.float32), np.zeros(len(hashes), np.float32)
        rows = np.minimum(np.searchsorted(keys, hashes), len(keys) - 1)
        found = present & (keys[rows] == hashes)
        return found, np.where(found, log10[rows], 0.0), np.where(found, backoff[rows], 0.0)

    def log10_probs(self, contexts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """contexts [T, order - 1] codes, -1 where the history is shorter (on the left); tokens [T] codes ->
        log10 p(token | context) [T] float64."""
        return self.scores(contexts, tokens)[0]

    def scores(self, contexts: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log10_probs, and each context's order [T] int64: 1 + the words of the longest end of the context
        that the model holds as an n-gram (1: no word of it known). It depends on the context alone, never on
        the token, so a mixture weighted by it is still a distribution over the next word; it says how much of
        the context the model has seen, which decides how far the n-gram is to be trusted."""
        width = self.order - 1
        best = self.unigram_log10[tokens].astype(np.float64)
        matched = np.ones(len(tokens), np.int64)  # words in the longest n-gram found
        seen = np.zeros(len(tokens), np.int64)  # words in the longest end of the context the model holds
        backoffs = np.zeros([len(tokens), width + 1])  # [:, j]: back-off of the last j context words
        gram = _extend(np.zeros(len(tokens), np.uint64), tokens)
        context = np.zeros(len(tokens), np.uint64)
        present = np.ones(len(tokens), bool)
        for j in range(1, width + 1):
            word = contexts[:, width - j]
            present = present & (word >= 0)  # a gap ends the known history
            safe = np.maximum(word, 0)
            gram, context = _extend(gram, safe), _extend(context, safe)
            found, log10, _ = self._find(j + 1, gram, present)
            best, matched = np.where(found, log10, best), np.where(found, j + 1, matched)
            if j == 1:
                held, backoffs[:, 1] = present, np.where(present, self.unigram_backoff[safe], 0.0)
            else:
                held, _, backoffs[:, j] = self._find(j, context, present)
            seen = np.where(held, j, seen)
        # The back-offs of every context longer than the matched n-gram's: lengths matched .. width.
        longer = np.arange(width + 1)[None, :] >= matched[:, None]
        return best + (backoffs * longer).sum(axis=1), seen + 1

    def to_bytes(self) -> bytes:
        """The tables as an .npz file (no pickled objects)."""
        arrays = {"unigram_log10": self.unigram_log10, "unigram_backoff": self.unigram_backoff}
        for n, (hashes, log10, backoff) in enumerate(self.tables, start=2):
            arrays |= {f"hashes_{n}": hashes, f"log10_{n}": log10, f"backoff_{n}": backoff}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> ArpaTables:
        """to_bytes' file; a damaged one is one error naming `where`."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                order = 1 + sum(name.startswith("hashes_") for name in arrays.files)
                tables = [
                    tuple(arrays[f"{key}_{n}"] for key in ("hashes", "log10", "backoff")) for n in range(2, order + 1)
                ]
                return cls(order, arrays["unigram_log10"], arrays["unigram_backoff"], tables)
        except (ValueError, KeyError, OSError, zipfile.BadZipFile) as err:
            raise ValueError(f"{where}: not an n-gram table file ({err}); re-export the bundle") from err

    def _after(self, codes: np.ndarray, last: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Natural log-probabilities [T] of targets (word ids), target t predicted from the order - 1 codes
        ending at codes[last[t]] (-1 before the array's start, or where codes holds -1: no word known), and the
        context orders [T] (scores)."""
        index = last[:, None] + np.arange(2 - self.order, 1)[None, :]  # [T, order - 1]
        contexts = np.where(index >= 0, codes[np.maximum(index, 0)], -1)
        log10, orders = self.scores(contexts, np.asarray(targets, np.int64) + 1)
        return log10 * LN_10, orders

    def stream_log_probs(self, inputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Natural log-probabilities [T] of a stream's targets (word ids), each predicted from the stream's
        earlier words: `<s>`, then inputs[0..t] (the trainer's protocol, baseline/ngrams.targets); and the
        context orders [T] (scores)."""
        codes = np.concatenate([[0], np.asarray(inputs, np.int64) + 1])  # [T + 1]: <s>, then the inputs
        return self._after(codes, np.arange(1, len(targets) + 1), targets)

    def continued_log_probs(
        self, history: np.ndarray, targets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Natural log-probabilities [T] of targets (word ids) that follow each other after `history` (codes,
        -1 for a word not known), their context orders [T] (scores), and the history after them (its last
        order - 1 codes): a document scored a part at a time."""
        codes = np.concatenate([np.asarray(history, np.int64), np.asarray(targets, np.int64) + 1])
        scored, orders = self._after(codes, np.arange(len(history) - 1, len(codes) - 1), targets)
        return scored, orders, codes[max(len(codes) - self.order + 1, 0) :]
