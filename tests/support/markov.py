"""Windows of a random Markov chain (4 likely successors per word): n-gram tests' corpora of any size."""

from __future__ import annotations

import random


def markov_windows(seed: int, tokens: int, vocab: int, length: int) -> list[list[int]]:
    """Consecutive windows of `length` + 1 ids over one stream (each starts with the id the previous ends with)."""
    rng = random.Random(seed)
    successors = {w: rng.sample(range(vocab), 4) for w in range(vocab)}
    stream, w = [], 1
    for _ in range(tokens):
        w = rng.choice(successors[w]) if rng.random() < 0.9 else rng.randrange(vocab)
        stream.append(w)
    return [stream[i : i + length + 1] for i in range(0, len(stream) - length, length)]
