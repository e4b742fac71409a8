"""Token streams from the preprocessed windows, and the n-grams counted over them (pure Python).

The baseline sees exactly the ids the LSTM sees: the windows of the data
directory's shards, in shard order. Consecutive windows that continue each
other (they share `overlap` = record_length - stride ids) are one stream of
running text; anywhere else a new stream starts, with the context symbol
`BOS` before its first token, as KenLM puts `<s>` before a sentence.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from nextword.text import contract

BOS = -1  # stream-start context: never predicted, never a vocabulary id


def overlap_of(record_length: int, stride: int) -> int:
    """Ids a window shares with the one before it when both come from running text (0: cannot tell)."""
    return max(record_length - stride, 0)


def chained(windows: Iterable[list[int]], overlap: int, carry: bool) -> Iterator[tuple[bool, list[int]]]:
    """(starts a stream, ids it adds) per window.

    A window continues the previous one when `carry` is set and it begins with
    the `overlap` ids the previous one ended with; it then adds only the ids
    after them. Otherwise it starts a stream and adds all its ids.
    """
    previous: list[int] | None = None
    for window in windows:
        window = list(window)
        if carry and overlap and previous is not None and previous[-overlap:] == window[:overlap]:
            yield False, window[overlap:]
        else:
            yield True, window
        previous = window


def _real(ids: list[int]) -> list[int]:
    """The ids before a window's padding (which ends its segment: the next window starts a stream)."""
    return ids[: ids.index(contract.PAD_ID)] if contract.PAD_ID in ids else ids


def _tail(history: tuple, keep: int) -> tuple:
    return history[max(len(history) - keep, 0) :] if keep else ()


def count_ngrams(windows: Iterable[list[int]], order: int, overlap: int) -> Counter:
    """Raw counts of every n-gram (n = 1..order) ending at each token of the running text.

    N-grams never reach before a stream's BOS; those that start with it are
    kept (they count stream starts, as KenLM's `<s> w` does).
    """
    counts: Counter = Counter()
    history: tuple = ()
    for fresh, ids in chained(windows, overlap, carry=True):
        if fresh:
            history = _tail((BOS,), order - 1)
        for token in _real(ids):
            gram = (*history, token)
            for n in range(1, len(gram) + 1):
                counts[gram[-n:]] += 1
            history = _tail(gram, order - 1)
    return counts


def targets(windows: Iterable[list[int]], order: int, overlap: int, carry: bool) -> Iterator[tuple[tuple, int]]:
    """(context, token) for every token the LSTM predicts, in the trainer's protocol.

    The LSTM predicts ids[1:] of each window from what came before: with
    carried state (`carry`) that includes the previous windows of the stream,
    otherwise only the window's own ids. The context is the last order - 1
    ids of that history (BOS first at a stream start).
    """
    history: tuple = ()
    for fresh, ids in chained(windows, overlap, carry):
        if fresh:
            history = _tail((BOS, ids[0]), order - 1)
            ids = ids[1:]
        for token in _real(ids):
            yield history, token
            history = _tail((*history, token), order - 1)
