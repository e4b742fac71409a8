"""The text contract: the one place that defines how text becomes token ids.

Every stage (preprocessing, training, export, batch prediction) imports this
module; it imports neither Beam nor Keras so that it stays cheap and pure.
The in-graph normalization used by the exported model lives in
`nextword.text.graph_text` and is tested against the functions here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass

from nextword.setting import setting

# --- Special tokens and ids -------------------------------------------------
# The unknown symbol always has id 0, so no stage ever assumes it is "the last
# id" (a defect of the seed). The end-of-line token, when enabled, has id 1.
UNK_ID = 0
EOS_ID = 1
DEFAULT_UNKNOWN_TOKEN = "<???>"
EOS_TOKEN = "<eos>"


# --- Artifact file names ----------------------------------------------------
VOCAB_FILE = "vocab.txt"
VOCAB_COUNTS_FILE = "vocab_counts.tsv"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.yaml"
SPLITS = ("train", "valid", "test")
SHARD_PREFIX = "windows"  # shards are <split>/windows-00000-of-00004.tfrecord.gz
SHARD_SUFFIX = ".tfrecord.gz"

# --- TFRecord features ------------------------------------------------------
# One tf.train.Example per window: `window_length + 1` consecutive token ids.
FEATURE_IDS = "ids"

# The seed keeps a-z, space, apostrophe and hyphen, and deletes everything else.
_SEED_DELETE = re.compile(r"[^a-z' -]+")
_SPACES = re.compile(r" +")
# Pattern strings shared with the in-graph (RE2) normalization.
SEED_DELETE_PATTERN = _SEED_DELETE.pattern
_ASCII_UPPER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def normalize_seed(text: str) -> str:
    """The seed's normalization, returning the cleaned text.

    Lowercase (ASCII letters; other letters are deleted anyway, and ASCII-only
    lowercasing is what the in-graph version can match exactly), newlines
    become spaces, every character outside a-z, space, apostrophe and hyphen is
    deleted, runs of spaces collapse to one.
    """
    text = text.translate(_ASCII_UPPER).replace("\n", " ")
    return _SPACES.sub(" ", _SEED_DELETE.sub("", text)).strip(" ")


def _seed_words(text: str) -> list[str]:
    return [w for w in normalize_seed(text).split(" ") if w and not w.startswith("-")]


def _split_count(text: str) -> int:
    """Words of str.split(): no normalization here splits where str.split() does not."""
    return len(text.split())


@dataclass(frozen=True)
class Normalization:
    """One way a line becomes words. Its TensorFlow twin is `graph_text.GRAPH_WORDS[name]`, proved equal to
    `words` by tests/test_graph_text.py for every entry of NORMALIZATION_TABLE; adding one here and there
    is all a new normalization takes."""

    words: Callable[[str], list[str]]  # one line -> its words, without <eos>
    # >= len(words(text)) for every text, without normalizing: what batch prediction sizes a line by
    word_bound: Callable[[str], int]


NORMALIZATION_TABLE = {
    "seed": Normalization(_seed_words, _split_count),
    "whitespace": Normalization(str.split, _split_count),
}
NORMALIZATIONS = tuple(NORMALIZATION_TABLE)


@dataclass(frozen=True)
class TextSettings:
    """Everything that decides which id a piece of text gets.

    It travels with the data (manifest.json) and the model bundle, so no later
    stage repeats it in its own config.
    """

    normalization: str = setting("seed", choices=NORMALIZATIONS)
    eos: bool = setting(False)
    unknown_token: str = setting(DEFAULT_UNKNOWN_TOKEN)
    min_count: int = setting(3, low=0)
    max_size: int | None = setting(None, low=2, high=10_000_000, why="the output layer is vocabulary x units")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> TextSettings:
        return cls(**values)


def normalization(settings: TextSettings) -> Normalization:
    try:
        return NORMALIZATION_TABLE[settings.normalization]
    except KeyError:
        raise ValueError(
            f"text.normalization: unknown value {settings.normalization!r}; use one of {NORMALIZATIONS}"
        ) from None


def tokenize(text: str, settings: TextSettings) -> list[str]:
    """Splits one line of text into words (without the end-of-line token)."""
    return normalization(settings).words(text)


def line_end_tokens(settings: TextSettings) -> list[str]:
    """What follows every line's words: `<eos>` when the settings have it."""
    return [EOS_TOKEN] if settings.eos else []


def line_tokens(line: str, settings: TextSettings) -> list[str]:
    """Words of one line plus the end-of-line token when enabled."""
    return tokenize(line, settings) + line_end_tokens(settings)


# --- Vocabulary -------------------------------------------------------------
def special_tokens(settings: TextSettings) -> list[str]:
    """Tokens with fixed ids, in id order."""
    return [settings.unknown_token] + ([EOS_TOKEN] if settings.eos else [])


def build_vocab(counts: Mapping[str, int], settings: TextSettings) -> list[str]:
    """Vocabulary in id order: specials, then words with count > min_count.

    Words are ordered by count descending, then alphabetically, so the id order
    never depends on the order counts were merged in.
    """
    specials = special_tokens(settings)
    kept = [w for w, c in counts.items() if c > settings.min_count and w not in specials]
    kept.sort(key=lambda w: (-counts[w], w))
    if settings.max_size is not None:
        kept = kept[: max(settings.max_size - len(specials), 0)]
    return specials + kept


class Vocabulary:
    """Token <-> id lookup for a vocabulary list in id order."""

    def __init__(self, tokens: list[str]):
        if not tokens:
            raise ValueError("vocabulary is empty")
        self.tokens = tokens
        self._ids = {t: i for i, t in enumerate(tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        return self._ids.get(token, UNK_ID)

    def ids(self, tokens: Iterable[str]) -> list[int]:
        return [self._ids.get(t, UNK_ID) for t in tokens]


def vocab_text(tokens: list[str]) -> str:
    """vocab.txt content: one token per line; the line number is the id."""
    return "".join(f"{t}\n" for t in tokens)


def parse_vocab_text(text: str, source: str) -> list[str]:
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    if not tokens:
        raise ValueError(f"{source}: vocabulary file is empty; rerun preprocessing")
    return tokens


def vocab_counts_text(tokens: list[str], counts: Mapping[str, int]) -> str:
    return "".join(f"{i}\t{t}\t{counts.get(t, 0)}\n" for i, t in enumerate(tokens))


def fingerprint(tokens: list[str], settings: TextSettings) -> str:
    """Hash of the normalization settings and the vocabulary."""
    payload = json.dumps({"text": settings.to_dict(), "vocab": tokens}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


# --- Windows ----------------------------------------------------------------
# Fills the end of a segment's last window, so that its last tokens are
# predicted too; never a vocabulary id. Readers mask it: as a target it is not
# scored, as an input it comes after every real target of its window.
PAD_ID = -1


def iter_windows(ids: Iterable[int], length: int, stride: int, pad_tail: bool = False) -> Iterator[list[int]]:
    """Windows of `length` consecutive ids every `stride` ids, streaming.

    With `pad_tail`, ids after the last full window (at least two: one to
    predict from, one to predict) make one more window, filled with PAD_ID.
    Memory is one window, whatever the length of the stream.
    """
    window: list[int] = []
    skip = 0
    unseen = 0  # ids in `window` that no emitted window has yet
    for token_id in ids:
        if skip:
            skip -= 1
            continue
        window.append(token_id)
        unseen += 1
        if len(window) == length:
            yield list(window)
            unseen = 0
            if stride < length:
                del window[:stride]
            else:
                window.clear()
                skip = stride - length
    if pad_tail and unseen and len(window) >= 2:
        yield window + [PAD_ID] * (length - len(window))


def split_of(key: str, valid_fraction: float, test_fraction: float) -> str:
    """Deterministic split of a block key; adding other keys never moves it."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + valid_fraction:
        return "valid"
    return "train"


# --- The model bundle (trainer export -> batch prediction) -----------------
# A SavedModel directory whose signatures take raw strings, among them:
#   next_words(text: string [batch], k: int32 []) -> words: string [batch, k], probs: float32 [batch, k]
#   score(text: string [batch]) -> log_prob, known_log_prob: float32 [batch], tokens, unknown_tokens: int32 [batch]
# Both also return word_count and unknown_count (int32 [batch]); every signature, and the exact
# semantics (context length, <eos>, empty texts), are in trainer/export.py.
# Beside the SavedModel files, BUNDLE_META_DIR holds vocab.txt, manifest.json,
# config.yaml and bundle.json (fingerprint, text settings, window length).
SIGNATURE_NEXT_WORDS = "next_words"
SIGNATURE_SCORE = "score"
SIGNATURE_GENERATE = "generate"
BUNDLE_META_DIR = "nextword"
BUNDLE_INFO_FILE = "bundle.json"
