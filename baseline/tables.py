"""The distributed Kneser-Ney estimation's pure cores: numpy over id arrays, one bucket at a time.

The same model as kneser_ney.estimate (the single-process reference), in the
three keyed passes of Heafield et al. 2013 ("Scalable modified Kneser-Ney
language model estimation") laid out as in Brants et al. 2007's MapReduce:

- Ids are *codes*: BOS is 0, vocabulary id i is i + 1; `radix` = vocab_size + 1.
- An n-gram (n >= 2) lives in the bucket of a hash of its last two words
  (`bucket_of`). Its suffix (the last n - 1 words), which gives its
  continuation count and its lower-order probability, then lives in the same
  bucket; unigrams are one small global vector.
- In a bucket, the order-n table is a sorted int64 array of *keys*:
  key(w1..wn) = rank(w2..wn) * radix + code(w1), rank being the suffix's row in
  the bucket's order n-1 table (a unigram's rank is its code). Sorting keys
  groups an order by suffix, and key // radix is the suffix's row: the joins
  down the orders are array indexing, not dictionaries.
- Per-context sums (denominator, numbers of continuations with adjusted count
  1, 2, 3+) need the n-grams grouped by their first n - 1 words instead: the
  n-grams travel to their context's bucket (`context_sums`) and the sums come
  back (`interpolate`). Bigram contexts are single words: global vectors.

Memory: a step holds one chunk of tokens or one bucket's tables, never an order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np

from baseline import kneser_ney
from nextword.text import contract

_HASH_A = np.uint64(0x9E3779B97F4A7C15)
_HASH_B = np.uint64(0xC2B2AE3D27D4EB4F)


def radix_of(vocab_size: int) -> int:
    return vocab_size + 1


def bucket_of(second_last: np.ndarray, last: np.ndarray, buckets: int) -> np.ndarray:
    """The bucket of n-grams ending in (second_last, last) (codes); the same in every process."""
    with np.errstate(over="ignore"):  # multiplication modulo 2**64 is the point of the hash
        mixed = (second_last.astype(np.uint64) * _HASH_A) ^ (last.astype(np.uint64) * _HASH_B)
    return ((mixed >> np.uint64(32)) % np.uint64(buckets)).astype(np.int64)


def code_chunks(windows: Iterable, overlap: int, order: int, chunk_tokens: int) -> Iterator[tuple[np.ndarray, int]]:
    """The training stream as (codes, first counted) chunks of about `chunk_tokens` counted positions each.

    Windows are chained as ngrams.chained chains them; a stream start is a 0
    (BOS) before its first id. Each chunk after the first starts with the
    order - 1 codes before it (its history, not counted again).
    """
    history = max(order - 1, 0)
    parts: list[np.ndarray] = []
    size = carried = 0  # carried: codes at the head that the previous chunk counted
    previous = None
    start = np.zeros(1, dtype=np.int64)
    for window in windows:
        window = np.asarray(window, dtype=np.int64)
        fresh = not (overlap and previous is not None and np.array_equal(previous[-overlap:], window[:overlap]))
        ids = window if fresh else window[overlap:]
        padding = np.flatnonzero(ids == contract.PAD_ID)  # ends the segment: the next window starts a stream
        real = ids[: padding[0]] if len(padding) else ids
        if fresh:
            parts.append(start)
        parts.append(real + 1)
        size += len(real) + fresh
        previous = window
        if size - carried >= chunk_tokens:
            codes = np.concatenate(parts)
            yield codes, carried
            parts = [codes[max(len(codes) - history, 0) :]]
            size = carried = len(parts[0])
    if size > carried:
        yield np.concatenate(parts), carried


def count_chunk(codes: np.ndarray, first: int, order: int, radix: int) -> tuple[np.ndarray, list[tuple]]:
    """Raw counts of the n-grams ending at codes[first:] (as ngrams.count_ngrams counts them).

    Returns the unigram counts (a vector by code) and, per order 2..order, the
    chunk's table as (first word, suffix, counts) per row: the suffix is the
    row of the order below (the last word's code at order 2).
    """
    positions = np.arange(len(codes))
    last_bos = np.maximum.accumulate(np.where(codes == 0, positions, -len(codes) - order))
    reach = positions - last_bos  # how many codes back the stream goes from each position
    counted = (positions >= first) & (codes != 0)
    unigrams = np.bincount(codes[counted], minlength=radix).astype(np.int64)
    tables: list[tuple] = []
    rank = codes  # the row of the (n-1)-gram ending at each position: codes for unigrams
    for n in range(2, order + 1):
        valid = np.flatnonzero(counted & (reach >= n - 1))
        keys = rank[valid] * radix + codes[valid - n + 1]
        if n < order:
            unique, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
            rank = np.full(len(codes), -1, dtype=np.int64)
            rank[valid] = inverse
        else:  # no order above needs the rows: a sort, not an argsort
            unique, counts = np.unique(keys, return_counts=True)
        tables.append(((unique % radix).astype(np.int32), unique // radix, counts.astype(np.int64)))
    return unigrams, tables


def split_chunk(chunk: list[tuple], buckets: int) -> list[list[tuple]]:
    """A chunk's tables per bucket (by the rows' last two words), each row's suffix renumbered within its bucket.

    An n-gram's suffix ends in the same two words, so it is in the same bucket (n >= 3).
    """
    parts: list[list[tuple]] = [[] for _ in range(buckets)]
    where = rows = renumber = None
    for n, (first, suffix, counts) in enumerate(chunk, start=2):
        if n == 2:
            where = bucket_of(first, suffix, buckets)
        else:  # the order below's rows, numbered within their bucket
            renumber = np.empty(len(where), dtype=np.int64)
            for part in rows:
                renumber[part] = np.arange(len(part))
            where = where[suffix]
        rows = rows_by(where, buckets)
        for b, part in enumerate(rows):
            parts[b].append((first[part], suffix[part] if n == 2 else renumber[suffix[part]], counts[part]))
    return parts


def rows_by(where: np.ndarray, buckets: int) -> list[np.ndarray]:
    """Row indices per bucket, each in row order."""
    small = where.astype(np.uint16) if buckets < 1 << 16 else where  # numpy's stable sort of these is a radix sort
    order = np.argsort(small, kind="stable")
    bounds = np.searchsorted(where[order], np.arange(buckets + 1))
    return [order[bounds[b] : bounds[b + 1]] for b in range(buckets)]


def table_buckets(words: np.ndarray, buckets: int) -> np.ndarray:
    return bucket_of(words[:, -2], words[:, -1], buckets)


def rank_rows(keys: list[np.ndarray], words: np.ndarray, radix: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, found) of each row of `words` (k >= 2 codes) in the bucket's order-k table.

    keys[n] is the bucket's sorted order-n key array. Walks from the last two
    words outwards; a row is found only if every suffix on the way is.
    """
    width = words.shape[1]
    rank = words[:, -1].astype(np.int64)
    found = np.ones(len(words), dtype=bool)
    for n in range(2, width + 1):
        table = keys[n]
        target = rank * radix + words[:, width - n]
        row = np.searchsorted(table, target)
        inside = row < len(table)
        found &= inside
        found[inside] &= table[row[inside]] == target[inside]
        rank = np.where(found, row, 0)
    return rank, found


def merge_counts(pieces: list[list[tuple]], order: int, radix: int) -> tuple[list, list]:
    """One bucket's tables from its chunks' (first word, suffix, counts) per order: (keys, raw counts) by order.

    A piece's suffixes point into its own rows of the order below, whose rows in
    the merged table the order below's merge gave. Index n of each list is order
    n (0 and 1 are unused: unigrams are global).
    """
    keys: list = [None, None]
    raw: list = [None, None]
    placed = None  # per piece, the merged row of each of its rows of the order below
    for n in range(2, order + 1):
        firsts = [piece[n - 2][0] for piece in pieces]
        if n == 2:
            suffixes = [piece[0][1] for piece in pieces]
        else:
            suffixes = [rows[piece[n - 2][1]] for rows, piece in zip(placed, pieces, strict=True)]
        joined = np.concatenate([s * radix + f for s, f in zip(suffixes, firsts, strict=True)]) if pieces else []
        unique, inverse = np.unique(np.asarray(joined, dtype=np.int64), return_inverse=True)
        counts = np.concatenate([piece[n - 2][2] for piece in pieces]) if pieces else np.zeros(0, np.int64)
        keys.append(unique)
        raw.append(np.bincount(inverse.ravel(), weights=counts, minlength=len(unique)).astype(np.int64))
        placed = np.split(inverse.ravel(), np.cumsum([len(f) for f in firsts])[:-1]) if pieces else []
    return keys, raw


def words_of(keys: list, order: int, radix: int) -> list:
    """The codes of every row, per order (from the keys: first word and suffix row)."""
    words: list = [None, np.arange(radix, dtype=np.int32)[:, None]]
    for n in range(2, order + 1):
        words.append(np.concatenate([(keys[n] % radix).astype(np.int32)[:, None], words[n - 1][keys[n] // radix]], 1))
    return words


def adjusted_counts(keys: list, raw: list, order: int, radix: int) -> tuple[list, np.ndarray]:
    """Adjusted counts per order 2..order, and this bucket's share of the unigrams' (continuation counts).

    As kneser_ney.adjusted_counts: raw at the top order and for BOS-initial
    n-grams, elsewhere the number of distinct left extensions, which share the
    suffix and therefore the bucket.
    """
    adjusted: list = [None, None]
    for n in range(2, order + 1):
        if n == order:
            adjusted.append(raw[n])
        else:
            continuation = np.bincount(keys[n + 1] // radix, minlength=len(keys[n]))
            adjusted.append(np.where(keys[n] % radix == 0, raw[n], continuation))
    unigram_continuation = (
        np.bincount(keys[2] // radix, minlength=radix).astype(np.int64) if order >= 2 else np.zeros(radix, np.int64)
    )
    return adjusted, unigram_continuation


def count_of_counts(adjusted: np.ndarray) -> np.ndarray:
    """n1..n4 of one order's adjusted counts (a global sum of these gives the discounts)."""
    return np.bincount(np.minimum(adjusted, 5), minlength=6)[1:5].astype(np.int64)


def kept(raw: np.ndarray, threshold: int) -> np.ndarray:
    """lmplz --prune: an n-gram whose raw count is at most its order's threshold is dropped.

    With thresholds non-decreasing by order, an n-gram kept has its prefix and
    suffix kept (their raw counts are at least its own), so the model stays whole.
    """
    return raw > threshold


def context_parts(a: np.ndarray, keep: np.ndarray, rows: np.ndarray, size: int) -> np.ndarray:
    """Per context row: total, kept continuations with adjusted count 1, 2, 3+, adjusted mass pruned."""
    return np.stack(
        [
            np.bincount(rows, weights=a, minlength=size),
            np.bincount(rows[keep & (a == 1)], minlength=size),
            np.bincount(rows[keep & (a == 2)], minlength=size),
            np.bincount(rows[keep & (a >= 3)], minlength=size),
            np.bincount(rows, weights=np.where(keep, 0, a), minlength=size),
        ]
    ).astype(np.float64)


def gammas(parts: np.ndarray, d: tuple) -> np.ndarray:
    """gamma(h) per context from context_parts (NaN where h is no context): the backoff weight.

    A pruned n-gram's whole adjusted count goes to gamma, so p(. | h) still sums to one.
    """
    total, k1, k2, k3, pruned = parts
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, (d[0] * k1 + d[1] * k2 + d[2] * k3 + pruned) / total, np.nan)


def discounted(a: np.ndarray, total: np.ndarray, d: tuple) -> np.ndarray:
    """max(a - D(a), 0) / A(h), as kneser_ney._interpolate computes it."""
    table = np.array((0.0, *d))
    return np.maximum(a - table[np.minimum(a, 3)], 0.0) / total


def global_model(unigram_raw: np.ndarray, unigram_continuation: np.ndarray, coc: np.ndarray, bigram_parts, order: int,
                 vocab_size: int) -> dict:  # fmt: skip
    """The small, global part: discounts of every order, unigram probabilities, bigram contexts' sums.

    coc: n1..n4 per order (row n; rows 0 and 1 unused); bigram_parts:
    context_parts of the bigrams by first word (None at order 1).
    """
    if not unigram_raw[1:].any():
        raise ValueError("no training token to estimate an n-gram model from")
    a = unigram_raw if order == 1 else unigram_continuation
    coc = coc.copy()
    coc[1] = np.bincount(np.minimum(a[1:], 5), minlength=6)[1:5]
    found = [kneser_ney.discounts_from_coc(*(int(c) for c in coc[n])) for n in range(1, order + 1)]
    d = [None] + [f[0] for f in found]
    seen = a[1:] > 0
    total = float(a[1:].sum())
    k = [int(np.count_nonzero(a[1:] == 1)), int(np.count_nonzero(a[1:] == 2)), int(np.count_nonzero(a[1:] >= 3))]
    gamma = (d[1][0] * k[0] + d[1][1] * k[1] + d[1][2] * k[2]) / total
    uniform = gamma / vocab_size
    p = np.full(vocab_size + 1, np.nan)
    p[1:] = np.where(seen, discounted(a[1:], np.full(vocab_size, total), d[1]) + uniform, uniform)
    model = {
        "discounts": np.array(d[1:]),
        "fallback_orders": np.array([n for n in range(1, order + 1) if found[n - 1][1]], dtype=np.int64),
        "unigram_p": p,
    }
    if order >= 2:
        model["bigram_total"] = bigram_parts[0]
        model["bigram_gamma"] = gammas(bigram_parts, d[2])
    return model


def context_sums(keys: list, contexts: list, order: int, radix: int, d: np.ndarray) -> tuple[list, list]:
    """In the bucket of their contexts: (total, gamma) of each arriving n-gram's context, and this bucket's backoffs.

    contexts[n] = (first n - 1 words, adjusted counts, kept) of order-n
    n-grams (n >= 3) whose context (an (n-1)-gram) this bucket holds. Returns
    per order n the arrays (total, gamma) in arrival order, and per order
    n - 1 the gamma of each row of this bucket's table (NaN: no context).
    """
    answers: list = [None, None, None]
    backoffs: list = [None] * (order + 1)
    for n in range(3, order + 1):
        words, a, keep = contexts[n]
        rows, _ = rank_rows(keys, words, radix)
        parts = context_parts(a, keep, rows, len(keys[n - 1]))
        gamma = gammas(parts, tuple(d[n - 1]))
        backoffs[n - 1] = gamma
        answers.append((parts[0][rows], gamma[rows]))
    return answers, backoffs


def interpolate(keys: list, adjusted: list, arriving: list, model: dict, order: int, radix: int) -> list:
    """p(w | h) of every row, order 2..order: discounted(hw) + gamma(h) p(w | h'), down the orders.

    arriving[n]: (total, gamma) of each order-n row's context (n >= 3, from
    context_sums); bigram contexts come from the global model. p(w | h') is
    the suffix's probability: row key // radix of the order below.
    """
    d = model["discounts"]
    probs: list = [None, model["unigram_p"]]
    for n in range(2, order + 1):
        if n == 2:
            first = keys[2] % radix
            total, gamma = model["bigram_total"][first], model["bigram_gamma"][first]
        else:
            total, gamma = arriving[n]
        probs.append(discounted(adjusted[n], total, tuple(d[n - 1])) + gamma * probs[n - 1][keys[n] // radix])
    return probs


def query_arrays(targets: Iterable[tuple[tuple, int]], order: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(contexts, lengths, tokens) as codes; contexts right-aligned in order - 1 columns (-1: none)."""
    width = max(order - 1, 1)
    pad = (-2,) * width  # -1 once shifted to codes
    pairs = list(targets)
    rows = np.array([(pad + context)[-width:] for context, _ in pairs], dtype=np.int64).reshape(-1, width) + 1
    tokens = np.fromiter((token for _, token in pairs), dtype=np.int64, count=len(pairs)) + 1
    return rows, (rows >= 0).sum(axis=1), tokens


def query_buckets(contexts: np.ndarray, lengths: np.ndarray, tokens: np.ndarray, buckets: int):
    """The bucket that answers each position's n-grams (all end in its last context word and token),
    and the one that answers its contexts (all end in its last two context words); -1: global only."""
    token_bucket = np.where(lengths >= 1, bucket_of(contexts[:, -1].clip(0), tokens, buckets), -1)
    context_bucket = (
        np.where(lengths >= 2, bucket_of(contexts[:, -2].clip(0), contexts[:, -1], buckets), -1)
        if contexts.shape[1] >= 2
        else np.full(len(tokens), -1)
    )
    return token_bucket, context_bucket


def answer_tokens(keys: list, probs: list, keep: list, contexts: np.ndarray, lengths: np.ndarray, tokens: np.ndarray,
                  radix: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(longest n-gram length found, its probability) per position: the model's n-grams joined in."""
    width = contexts.shape[1]
    longest = np.ones(len(tokens), dtype=np.int64)
    p = np.full(len(tokens), np.nan)
    rank = tokens.copy()
    alive = np.ones(len(tokens), dtype=bool)
    for n in range(2, min(width + 1, len(keys) - 1) + 1):
        alive &= lengths >= n - 1
        table = keys[n]
        target = rank * radix + contexts[:, width - n + 1]
        row = np.minimum(np.searchsorted(table, target), max(len(table) - 1, 0))
        hit = alive & (len(table) > 0)
        hit[hit] &= (table[row[hit]] == target[hit]) & keep[n][row[hit]]
        p = np.where(hit, probs[n][row] if len(table) else p, p)
        longest += hit
        rank = np.where(hit, row, 0)
        alive = hit
    return longest, p


def answer_contexts(keys: list, backoffs: list, contexts: np.ndarray, lengths: np.ndarray, radix: int) -> np.ndarray:
    """ln gamma of each position's context of length j (column j - 2, j = 2..order-1; 0: none)."""
    width = contexts.shape[1]
    log_backoff = np.zeros((len(lengths), max(width - 1, 0)))
    rank = contexts[:, -1].clip(0)
    alive = np.ones(len(lengths), dtype=bool)
    for j in range(2, width + 1):
        alive &= lengths >= j
        table = keys[j]
        target = rank * radix + contexts[:, width - j].clip(0)
        row = np.minimum(np.searchsorted(table, target), max(len(table) - 1, 0))
        hit = alive & (len(table) > 0)
        hit[hit] &= table[row[hit]] == target[hit]
        gamma = backoffs[j][row] if len(table) else np.full(len(row), np.nan)
        log_backoff[:, j - 2] = np.where(hit & ~np.isnan(gamma), np.log(np.where(hit, gamma, 1.0)), 0.0)
        rank = np.where(hit, row, 0)
        alive = hit
    return log_backoff


def log_probs(model: dict, contexts: np.ndarray, lengths: np.ndarray, tokens: np.ndarray, longest: np.ndarray,
              p: np.ndarray, log_backoff: np.ndarray) -> np.ndarray:  # fmt: skip
    """ln p(token | context) per position, as NgramModel.log_prob backs off.

    The longest n-gram found gives p; every longer history adds ln gamma
    (contexts of length j >= 2 from their bucket, the one-word one global).
    """
    p = np.where(longest == 1, model["unigram_p"][tokens], p)
    result = np.log(p)
    if "bigram_gamma" in model:
        one_word = model["bigram_gamma"][contexts[:, -1].clip(0)]
        has = (lengths >= 1) & (longest <= 1) & ~np.isnan(one_word)
        result += np.where(has, np.log(np.where(has, one_word, 1.0)), 0.0)
    for j in range(2, log_backoff.shape[1] + 2):
        result += np.where((lengths >= j) & (longest <= j), log_backoff[:, j - 2], 0.0)
    return result


def arpa_orders(keys: list, probs: list, keep: list, backoffs: list, order: int, radix: int,
                spelled: np.ndarray) -> Iterator[str]:  # fmt: skip
    """One bucket's ARPA lines per order 2..order, formatted as arpa.write_arpa formats them.

    A row's words are its first word before its suffix's text (spelled: each code's word, an object
    array); the top order's text is never kept whole, only joined into its lines.
    """
    spaced = spelled + " "
    text = spelled
    for n in range(2, order + 1):
        rows = np.flatnonzero(keep[n])
        first, suffix = keys[n] % radix, keys[n] // radix
        yield arpa_lines(
            spaced[first[rows]], text[suffix[rows]], probs[n][rows], None if n == order else backoffs[n][rows]
        )
        if n < order:
            text = spaced[first] + text[suffix]


def arpa_lines(heads: np.ndarray, tails: np.ndarray, probs: np.ndarray, backoffs: np.ndarray | None) -> str:
    """ARPA lines 'log10 p<TAB>head tail[<TAB>log10 backoff]' (backoffs None: the top order; NaN: no context).

    Numbers formatted by Python (math.log10, not numpy's, whose last bit differs at times); the
    lines joined from their pieces at once.
    """
    rows = len(probs)
    form = "{:.7g}".format
    pieces: list = [None] * (4 * rows)
    pieces[0::4] = map("{:.7g}\t".format, map(math.log10, probs.tolist()))
    pieces[1::4] = heads.tolist()
    pieces[2::4] = tails.tolist()
    if backoffs is None:
        pieces[3::4] = ["\n"] * rows
    else:
        pieces[3::4] = ["\t" + form(math.log10(b)) + "\n" if b == b else "\n" for b in backoffs.tolist()]
    return "".join(pieces)
