"""The model as an ARPA file, the standard n-gram format that KenLM's tools load.

Our ids become words: the unknown symbol is written as `<unk>` and BOS as
`<s>` (a context only: log10 probability -99, as KenLM writes it). KenLM
refuses a model without `</s>`, so it is listed too, with log10 probability
-99: our streams have no sentence end (`<eos>`, where the data has it, is an
ordinary word). Score with KenLM as `model.score(text, bos=True, eos=False)`.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterator
from typing import BinaryIO, TextIO

import numpy as np

from baseline import tables
from baseline.kneser_ney import NgramModel
from baseline.ngrams import BOS
from nextword import storage
from nextword.text import contract

ARPA_UNK, ARPA_BOS, ARPA_EOS = "<unk>", "<s>", "</s>"
_RESERVED = (ARPA_UNK, ARPA_BOS, ARPA_EOS)


def arpa_words(vocab: list[str]) -> list[str]:
    """The ARPA spelling of each vocabulary id; refuses words KenLM reserves for itself."""
    words = [ARPA_UNK if i == contract.UNK_ID else w for i, w in enumerate(vocab)]
    clash = [w for i, w in enumerate(words) if i != contract.UNK_ID and w in _RESERVED]
    if clash:
        raise ValueError(f"vocabulary word {clash[0]!r} is reserved in ARPA files; it cannot be exported")
    return words


def _log10(value: float) -> str:
    return f"{math.log10(value):.7g}"


def _lines(model: NgramModel, words: list[str]) -> Iterator[str]:
    def spell(gram: tuple) -> str:
        return " ".join(ARPA_BOS if i == BOS else words[i] for i in gram)

    yield "\\data\\"
    for n, size in enumerate(model.ngram_counts(), start=1):
        yield f"ngram {n}={size + 1 if n == 1 else size}"  # + </s>
    by_order: list[list[tuple]] = [[] for _ in range(model.order + 1)]
    for gram in model.probs:
        by_order[len(gram)].append(gram)
    for n in range(1, model.order + 1):
        yield ""
        yield f"\\{n}-grams:"
        if n == 1:
            yield f"-99\t{ARPA_BOS}\t{_log10(model.backoffs[(BOS,)])}" if model.order > 1 else f"-99\t{ARPA_BOS}"
            yield f"-99\t{ARPA_EOS}"
        for gram in sorted(by_order[n]):
            line = f"{_log10(model.probs[gram])}\t{spell(gram)}"
            if n < model.order and gram in model.backoffs:
                line += f"\t{_log10(model.backoffs[gram])}"
            yield line
    yield ""
    yield "\\end\\"


def write_arpa(model: NgramModel, vocab: list[str], out: TextIO) -> None:
    words = arpa_words(vocab)
    for line in _lines(model, words):
        out.write(line + "\n")


def spelled_codes(vocab: list[str]) -> np.ndarray:
    """Each code's ARPA word (code 0: `<s>`, code i + 1: id i), an object array of strings."""
    return np.array([ARPA_BOS, *arpa_words(vocab)], dtype=object)


def write_from_shards(model: dict, sizes: list[int], vocab: list[str], shards: Callable[[int], list[str]],
                      out: BinaryIO) -> None:  # fmt: skip
    """The ARPA file of the distributed estimation, streamed: the global unigrams, then each order's shards.

    `sizes`: n-grams kept per order 2..order; `shards(n)`: order n's shard
    files (each one bucket's lines, sorted by the bucket's keys).
    """
    spelled = spelled_codes(vocab)
    order = len(sizes) + 1
    head = ["\\data\\", f"ngram 1={len(vocab) + 2}"] + [f"ngram {n}={size}" for n, size in enumerate(sizes, start=2)]
    out.write(("\n".join(head) + "\n\n\\1-grams:\n").encode("utf-8"))
    bos = f"-99\t{ARPA_BOS}\t{_log10(model['bigram_gamma'][0])}" if order > 1 else f"-99\t{ARPA_BOS}"
    out.write(f"{bos}\n-99\t{ARPA_EOS}\n".encode())
    backoffs = model["bigram_gamma"][1:] if order > 1 else None
    unigrams = tables.arpa_lines(spelled[1:], np.full(len(vocab), "", dtype=object), model["unigram_p"][1:], backoffs)
    out.write(unigrams.encode("utf-8"))
    for n in range(2, order + 1):
        out.write(f"\n\\{n}-grams:\n".encode())
        for shard in shards(n):
            _append(shard, out)
    out.write(b"\n\\end\\\n")


def _append(path: str, out: BinaryIO) -> None:
    """Copies a shard to the end of `out`: in the kernel (sendfile) between local files, else through a buffer."""
    try:
        target = out.fileno()
    except (AttributeError, OSError):
        target = None
    if target is None or storage.is_remote(path):
        with storage.open_read(path) as shard:
            shutil.copyfileobj(shard, out, 1 << 20)
        return
    out.flush()
    with open(path, "rb") as shard:
        size, done = os.fstat(shard.fileno()).st_size, 0
        while done < size:
            done += os.sendfile(target, shard.fileno(), done, size - done)
