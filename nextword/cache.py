"""A continuous cache over a stream's hidden states (Grave et al. 2017, "Improving neural language models with
a continuous cache"): pure NumPy, no model.

For the target w_{t+1} predicted from the hidden state h_t (the output head's input at position t):

    p(w) = (1 - weight) * p_model(w) + weight * p_cache(w)
    p_cache(w) = sum_i [w_{i+1} = w] exp(theta * h_t . h_i) / sum_i exp(theta * h_t . h_i)

over the `size` positions i < t just before t in the same stream, each stored with the word that followed
it. A stream is what the recurrent state is carried along (an evaluation row, a document): the cache starts
empty where the state starts from zero, and holds only earlier positions, so every token is still predicted
once, from what came before it. Where the cache is empty (a stream's first position) p is the model's alone.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Positions scored per block of dot products: [BLOCK, BLOCK + size] floats at a time.
_BLOCK = 256
# Positions whose [positions, size] score arrays are held at once: memory stays bounded whatever a stream's length.
_CHUNK = 4096

# The validation grid (Grave et al. tune size, theta and weight on validation the same way).
SIZES = (100, 500, 2000)
THETAS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
WEIGHTS = (0.05, 0.1, 0.15, 0.2, 0.3)


@dataclass(frozen=True)
class CacheParams:
    size: int  # N: earlier positions held
    theta: float  # flatness: 0 weighs every held position alike
    weight: float  # lambda: the cache's share of the mixture; 0 is the model alone


@dataclass(frozen=True)
class Stream:
    """One stream's scored positions, in order: hidden [T, units], targets [T] (word ids), model_log_probs [T]."""

    hidden: np.ndarray
    targets: np.ndarray
    model_log_probs: np.ndarray


def offset_scores(hidden: np.ndarray, targets: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each position t and offset j = 1..size: h_t . h_{t-j}, whether w_{t-j+1} is w_{t+1}, and whether t-j >= 0.

    hidden [T, units], targets [T] -> scores [T, size] float64, matches [T, size] bool, held [T, size] bool.
    """
    length = len(targets)
    hidden = np.asarray(hidden, np.float64)
    scores = np.zeros([length, size])
    for start in range(0, length, _BLOCK):
        stop = min(start + _BLOCK, length)
        first = max(0, start - size)
        products = hidden[start:stop] @ hidden[first:stop].T  # [block, context]
        rows = np.arange(start, stop)[:, None]
        earlier = rows - np.arange(1, size + 1)[None, :]  # [block, size] absolute positions t - j
        columns = np.clip(earlier - first, 0, stop - first - 1)
        scores[start:stop] = np.take_along_axis(products, columns, axis=1)
    earlier = np.arange(length)[:, None] - np.arange(1, size + 1)[None, :]
    held = earlier >= 0
    matches = held & (targets[np.clip(earlier, 0, None)] == targets[:, None])
    return np.where(held, scores, 0.0), matches, held


def cache_log_probs(
    scores: np.ndarray, matches: np.ndarray, held: np.ndarray, theta: float, size: int | None = None
) -> np.ndarray:
    """log p_cache(target) per position [T] from offset_scores' outputs (the first `size` offsets of them):
    -inf where no held position was followed by the target, nan where the cache is empty."""
    if size is not None:
        scores, matches, held = scores[:, :size], matches[:, :size], held[:, :size]
    logits = np.where(held, theta * scores, -np.inf)
    top = np.max(logits, axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    weights = np.exp(logits - top)  # 0 where not held
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log((weights * matches).sum(axis=1)) - np.log(weights.sum(axis=1))


def mix(model_log_probs: np.ndarray, cache: np.ndarray, weight: float | np.ndarray) -> np.ndarray:
    """log((1 - weight) p_model + weight p_cache) per position (`weight`: one, or one per position); the model's
    alone where the cache is empty (nan) and wherever weight is 0. The n-gram is mixed in the same way
    (trainer/evaluate.py, document scoring), its weight by the context's order (nextword/ngram.py, scores)."""
    weight = np.asarray(weight, np.float64)
    if not weight.any():
        return np.asarray(model_log_probs, np.float64)
    empty = np.isnan(cache)
    with np.errstate(divide="ignore"):  # a weight of 0 or 1: log 0 is -inf, and logaddexp keeps the other side
        mixed = np.logaddexp(np.log1p(-weight) + model_log_probs, np.log(weight) + np.where(empty, -np.inf, cache))
    return np.where(empty | (weight == 0), model_log_probs, mixed)


def _chunks(stream: Stream, size: int):
    """offset_scores of the stream a chunk of positions at a time, each with its model log-probabilities."""
    for start in range(0, len(stream.targets), _CHUNK):
        first, stop = max(0, start - size), start + _CHUNK
        scores, matches, held = offset_scores(stream.hidden[first:stop], stream.targets[first:stop], size)
        own = slice(start - first, None)  # the chunk's positions; those before are only its context
        yield scores[own], matches[own], held[own], stream.model_log_probs[start:stop]


def log_probs(stream: Stream, params: CacheParams) -> np.ndarray:
    """The stream's log-probabilities with the cache: [T] float64."""
    if not len(stream.targets) or params.weight == 0:
        return np.asarray(stream.model_log_probs, np.float64)
    parts = [
        mix(model, cache_log_probs(scores, matches, held, params.theta), params.weight)
        for scores, matches, held, model in _chunks(stream, params.size)
    ]
    return np.concatenate(parts)


def perplexity(log_prob_sum: float, tokens: int) -> float:
    return math.exp(-log_prob_sum / tokens) if tokens else float("nan")


def log_likelihood(log_probs: np.ndarray) -> float:
    """The plain objective of `choose`: the log-probabilities' sum."""
    return float(log_probs.sum())


def choose(
    streams: Sequence[Stream],
    objectives: Mapping[str, Callable[[np.ndarray], float]],
    sizes: Sequence[int] = SIZES,
    thetas: Sequence[float] = THETAS,
    weights: Sequence[float] = WEIGHTS,
) -> dict[str, tuple[CacheParams, dict[str, float]]]:
    """For each named objective, the grid point with its highest value over `streams` (validation), and every
    grid point's perplexity (of that objective) by "size/theta/weight".

    objective(mixed): a log-likelihood from the mixture's log-probabilities at every position of `streams`,
    concatenated in order (log_likelihood: their sum). A caller that mixes more on top passes its own, so the
    cache is chosen for the whole mixture (trainer/evaluate.py: the n-gram by context order). Each stream's dot
    products are made once, at the largest size, for every objective; [positions] floats are held per
    (size, theta)."""
    pairs = list(itertools.product(sizes, thetas))
    caches: dict[tuple, list[np.ndarray]] = {pair: [] for pair in pairs}
    models = []
    for stream in streams:
        for scores, matches, held, model in _chunks(stream, max(sizes)):
            models.append(model)
            for size, theta in pairs:
                caches[size, theta].append(cache_log_probs(scores, matches, held, theta, size))
    model = np.concatenate(models) if models else np.zeros([0])
    totals: dict[str, dict[tuple, float]] = {name: {} for name in objectives}
    for (size, theta), parts in caches.items():
        held = np.concatenate(parts) if parts else np.zeros([0])
        for weight in weights:
            mixed = mix(model, held, weight)
            for name, objective in objectives.items():
                totals[name][size, theta, weight] = objective(mixed)
    chosen = {}
    for name, by_point in totals.items():
        best = max(by_point, key=by_point.__getitem__)
        grid = {"/".join(f"{v:g}" for v in key): perplexity(total, len(model)) for key, total in by_point.items()}
        chosen[name] = (CacheParams(*best), grid)
    return chosen


class Window:
    """The last `size` (hidden state, next word) pairs of one stream, for scoring it a part at a time (a
    document's calls): each part's positions get what `log_probs` of the whole stream would give them."""

    def __init__(self, params: CacheParams):
        self.params = params
        self.hidden: np.ndarray | None = None  # [held, units]
        self.targets = np.zeros([0], np.int64)

    def log_probs(self, hidden: np.ndarray, targets: np.ndarray, model_log_probs: np.ndarray) -> np.ndarray:
        """The part's log-probabilities with the cache [m] float64; the part is then held (its last `size`)."""
        held = len(self.targets)
        stream = Stream(
            hidden if self.hidden is None else np.concatenate([self.hidden, hidden]),
            np.concatenate([self.targets, targets]),
            np.concatenate([np.zeros(held), model_log_probs]),  # the held positions are context only
        )
        self._keep(stream.hidden, stream.targets)
        return log_probs(stream, self.params)[held:]

    def hold(self, hidden: np.ndarray, targets: np.ndarray) -> None:
        """Adds positions as context without scoring them (a warm-up)."""
        if self.hidden is not None:
            hidden, targets = np.concatenate([self.hidden, hidden]), np.concatenate([self.targets, targets])
        self._keep(hidden, targets)

    def _keep(self, hidden: np.ndarray, targets: np.ndarray) -> None:
        self.hidden, self.targets = hidden[-self.params.size :], targets[-self.params.size :]
