"""Interpolated modified Kneser-Ney estimation (Chen & Goodman 1998), as KenLM's lmplz does it.

- Adjusted counts: the top order and n-grams that start with BOS keep their
  raw counts; every other n-gram counts its distinct left extensions
  (continuation counts, N1+(. w)).
- Three discounts per order from the count-of-counts n1..n4 of the adjusted
  counts: Y = n1 / (n1 + 2 n2), D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2,
  D3+ = 3 - 4Y n4/n3. Where they are undefined (a zero count-of-counts) or
  out of range, KenLM's `--discount_fallback` values (0.5, 1, 1.5) are used.
- p(w | h) = max(a(hw) - D(a(hw)), 0) / A(h) + gamma(h) p(w | h'), where
  A(h) = sum_w a(hw), gamma(h) = (D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.)) / A(h),
  h' is h without its first word; unigrams interpolate with the uniform
  distribution over the vocabulary. An unseen history backs off with weight 1.

Stored in backoff form (the ARPA layout): the interpolated probability of
every observed n-gram, and gamma(h) as the backoff weight of every context h.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from baseline.ngrams import BOS

FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


@dataclass(frozen=True)
class NgramModel:
    order: int
    vocab_size: int
    probs: dict[tuple, float]  # observed n-gram (all orders) -> interpolated p(w | h)
    backoffs: dict[tuple, float]  # context h (orders 1..order-1) -> gamma(h)
    discounts: tuple[tuple[float, float, float], ...]  # per order 1..order
    fallback_orders: tuple[int, ...]  # orders whose count-of-counts made KenLM's fallback necessary

    def log_prob(self, context: tuple, token: int) -> float:
        """ln p(token | context), context the preceding ids (only the last order - 1 are used)."""
        context = context[max(len(context) - self.order + 1, 0) :]
        log_backoff = 0.0
        for start in range(len(context) + 1):
            history = context[start:]
            p = self.probs.get((*history, token))
            if p is not None:
                return log_backoff + math.log(p)
            log_backoff += math.log(self.backoffs.get(history, 1.0)) if history else 0.0
        raise ValueError(f"token id {token} is outside the vocabulary of {self.vocab_size}")

    def ngram_counts(self) -> list[int]:
        """Entries per order, as the ARPA header lists them (BOS counted as a unigram)."""
        sizes = Counter(len(gram) for gram in self.probs)
        sizes[1] += 1  # BOS: a context, never predicted
        return [sizes[n] for n in range(1, self.order + 1)]


def discounts(adjusted: Iterable[int]) -> tuple[tuple[float, float, float], bool]:
    """(D1, D2, D3+) from one order's adjusted counts, and whether the fallback was used."""
    coc = Counter(min(a, 4) for a in adjusted if a <= 4)
    return discounts_from_coc(*(coc[k] for k in (1, 2, 3, 4)))


def discounts_from_coc(n1: int, n2: int, n3: int, n4: int) -> tuple[tuple[float, float, float], bool]:
    """(D1, D2, D3+) from one order's count-of-counts n1..n4, and whether the fallback was used."""
    try:
        y = n1 / (n1 + 2 * n2)
        found = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    except ZeroDivisionError:
        return FALLBACK_DISCOUNTS, True
    if all(0 < d <= k for k, d in zip((1, 2, 3), found, strict=True)):
        return found, False
    return FALLBACK_DISCOUNTS, True


def adjusted_counts(raw: Mapping[tuple, int], order: int) -> dict[tuple, int]:
    """Raw counts at the top order and for BOS-initial n-grams; continuation counts elsewhere."""
    continuation: Counter = Counter()
    for gram in raw:
        if len(gram) > 1:
            continuation[gram[1:]] += 1
    return {gram: count if len(gram) == order or gram[0] == BOS else continuation[gram] for gram, count in raw.items()}


def estimate(raw: Mapping[tuple, int], order: int, vocab_size: int) -> NgramModel:
    """The model from raw n-gram counts of all orders 1..order (count_ngrams)."""
    if not any(len(g) == 1 for g in raw):
        raise ValueError("no training token to estimate an n-gram model from")
    adjusted = adjusted_counts(raw, order)
    by_order: list[dict[tuple, int]] = [{} for _ in range(order + 1)]
    for gram, a in adjusted.items():
        by_order[len(gram)][gram] = a
    probs: dict[tuple, float] = {}
    backoffs: dict[tuple, float] = {}
    order_discounts = []
    fallback = []
    for n in range(1, order + 1):
        d, used_fallback = discounts(by_order[n].values())
        order_discounts.append(d)
        if used_fallback:
            fallback.append(n)
        gamma = _interpolate(by_order[n], d, probs, vocab_size if n == 1 else 0)
        if n > 1:
            backoffs.update(gamma)
    return NgramModel(order, vocab_size, probs, backoffs, tuple(order_discounts), tuple(fallback))


def _interpolate(grams: Mapping[tuple, int], d: tuple, probs: dict, vocab_size: int) -> dict[tuple, float]:
    """Adds one order's interpolated probabilities to `probs` (lower orders already there); returns gamma(h).

    `vocab_size` > 0 marks the unigram order, interpolated with the uniform distribution.
    """
    totals: dict[tuple, float] = defaultdict(float)
    kinds: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for gram, a in grams.items():
        totals[gram[:-1]] += a
        kinds[gram[:-1]][min(a, 3) - 1] += 1
    gamma = {h: (d[0] * k[0] + d[1] * k[1] + d[2] * k[2]) / totals[h] for h, k in kinds.items()}
    for gram, a in grams.items():
        discounted = max(a - d[min(a, 3) - 1], 0.0) / totals[gram[:-1]]
        lower = gamma[()] / vocab_size if vocab_size else gamma[gram[:-1]] * probs[gram[1:]]
        probs[gram] = discounted + lower
    if vocab_size:  # vocabulary words never seen in training get the uniform share only
        for token in range(vocab_size):
            probs.setdefault((token,), gamma[()] / vocab_size)
    return gamma
