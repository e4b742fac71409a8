"""Reading an ARPA file (the baseline stage's model.arpa, or KenLM's over the same vocabulary) into the n-gram
tables of nextword/ngram.py."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from baseline.arpa import ARPA_BOS, arpa_words
from nextword import storage
from nextword.ngram import ArpaTables, hash_codes
from nextword.text import contract

_ROWS_PER_BATCH = 1 << 17  # ARPA lines parsed into arrays at a time


def _sections(lines: Iterator[str], path: str) -> Iterator[tuple[int, Iterator[str]]]:
    """(n, the n-gram lines of the `\\n-grams:` section) in file order."""
    for line in lines:
        line = line.strip()
        if line.startswith("\\") and line.endswith("-grams:"):
            n = int(line[1:].split("-")[0])

            def body() -> Iterator[str]:
                for entry in lines:
                    entry = entry.strip()
                    if not entry:
                        return
                    yield entry

            yield n, body()
        elif line == "\\end\\":
            return
    raise ValueError(f"{path}: no \\end\\ line: the ARPA file is cut short; rerun `nextword baseline`")


def _parse(entries: Iterator[str], n: int, code_of: dict[str, int], path: str) -> Iterator[tuple]:
    """Batches of (codes [rows, n], log10 [rows], backoff [rows]); n-grams with a word outside the vocabulary
    (`</s>`) are left out."""
    codes, log10, backoff = [], [], []
    for entry in entries:
        fields = entry.split("\t") if "\t" in entry else entry.split()
        if "\t" not in entry:  # space-separated: probability, n words, optional back-off
            fields = [fields[0], " ".join(fields[1 : n + 1]), *fields[n + 1 :]]
        words = fields[1].split(" ")
        if len(words) != n:
            raise ValueError(f"{path}: {entry[:80]!r} is not a {n}-gram line; rerun `nextword baseline`")
        try:
            row = [code_of[w] for w in words]
        except KeyError:
            continue
        codes.append(row)
        log10.append(float(fields[0]))
        backoff.append(float(fields[2]) if len(fields) > 2 else 0.0)
        if len(codes) == _ROWS_PER_BATCH:
            yield np.array(codes, np.int64), np.array(log10, np.float32), np.array(backoff, np.float32)
            codes, log10, backoff = [], [], []
    if codes:
        yield np.array(codes, np.int64), np.array(log10, np.float32), np.array(backoff, np.float32)


def load(path: str, vocab: list[str]) -> ArpaTables:
    """The ARPA file at `path` over the data directory's vocabulary, as tables."""
    code_of = {word: code + 1 for code, word in enumerate(arpa_words(vocab))}
    code_of[ARPA_BOS] = 0
    unigram_log10 = np.zeros(len(vocab) + 1, np.float32)
    unigram_backoff = np.zeros(len(vocab) + 1, np.float32)
    listed = np.zeros(len(vocab) + 1, bool)
    tables: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with storage.open_read(path) as raw:
        lines = (line.decode("utf-8") for line in raw)
        for n, entries in _sections(lines, path):
            if n != len(tables) + 1 + listed.any():
                raise ValueError(f"{path}: section \\{n}-grams: out of order; rerun `nextword baseline`")
            parts = list(_parse(entries, n, code_of, path))
            if n == 1:
                for codes, log10, backoff in parts:
                    unigram_log10[codes[:, 0]], unigram_backoff[codes[:, 0]] = log10, backoff
                    listed[codes[:, 0]] = True
                continue
            hashes = np.concatenate([np.zeros(0, np.uint64), *(hash_codes(codes) for codes, _, _ in parts)])
            log10 = np.concatenate([np.zeros(0, np.float32), *(p[1] for p in parts)])
            backoff = np.concatenate([np.zeros(0, np.float32), *(p[2] for p in parts)])
            order = np.argsort(hashes, kind="stable")
            tables.append((hashes[order], log10[order], backoff[order]))
    unk = contract.UNK_ID + 1
    if not listed[unk]:
        raise ValueError(f"{path}: no <unk> unigram: not a model of this vocabulary; rerun `nextword baseline`")
    unigram_log10[~listed] = unigram_log10[unk]  # a word the model does not list is its <unk>, as in KenLM
    return ArpaTables(len(tables) + 1, unigram_log10, unigram_backoff, tables)
