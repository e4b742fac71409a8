"""The model bundle's metadata: what `trainer.export` writes and every consumer checks.

Pure (no TensorFlow): loading the SavedModel itself is the consumer's business;
this module proves that a directory is a complete, consistent bundle first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from nextword import storage
from nextword.artifacts import versioned
from nextword.artifacts.data_dir import Manifest
from nextword.ngram import ArpaTables
from nextword.text import contract
from nextword.text.contract import TextSettings

FORMAT_VERSION = 3  # 2: bundle.json holds the CRC32C of the SavedModel files; 3: `score` answers known_log_prob
SAVED_MODEL_FILE = "saved_model.pb"
VARIABLES_DIR = "variables"
VARIABLES_INDEX = f"{VARIABLES_DIR}/variables.index"
_VARIABLES_DATA = f"{VARIABLES_DIR}/variables.data-"
# Files a complete bundle has, relative to its directory; bundle.json is written last.
META_FILES = (contract.VOCAB_FILE, contract.MANIFEST_FILE, contract.CONFIG_FILE, contract.BUNDLE_INFO_FILE)
REQUIRED_FILES = (SAVED_MODEL_FILE, VARIABLES_INDEX) + tuple(
    f"{contract.BUNDLE_META_DIR}/{name}" for name in META_FILES
)
# The n-gram tables of document scoring (nextword/ngram.py), where bundle.json's `ngram` names a weight.
NGRAM_FILE = "ngram.npz"
NGRAM_PATH = f"{contract.BUNDLE_META_DIR}/{NGRAM_FILE}"
# Signatures beyond contract's three (trainer/export.py documents them all).
SIGNATURE_SCORE_TOKENS = "score_tokens"
SIGNATURE_SCORE_STREAM = "score_stream"
SIGNATURE_ADVANCE_STREAM = "advance_stream"
_HOW_TO_FIX = "point predict.bundle_dir at the bundle that `nextword train` exported"


SIGNATURES = (
    contract.SIGNATURE_NEXT_WORDS,
    contract.SIGNATURE_SCORE,
    contract.SIGNATURE_GENERATE,
    SIGNATURE_SCORE_TOKENS,
    SIGNATURE_SCORE_STREAM,
    SIGNATURE_ADVANCE_STREAM,
)
RERUN = "re-export the bundle (nextword export)"


@dataclass(frozen=True)
class BundleInfo(versioned.Versioned):
    """bundle.json: written last by the export (the bundle's commit marker), checked by every consumer."""

    fingerprint: str  # vocabulary + text settings (contract.fingerprint)
    text: TextSettings
    window_length: int  # the training window
    context_tokens: int  # ids the signatures condition on
    vocab_size: int
    created_unix: int
    signatures: list[str] = dataclasses.field(default_factory=lambda: list(SIGNATURES))
    # CRC32C of the SavedModel files by path relative to the bundle ({}: an export before checksums, refused)
    checksums: dict[str, str] = dataclasses.field(default_factory=dict)
    state_size: int = 0  # floats of the stream signatures' state (0: exported before they existed)
    weights_sha256: str = ""  # taken at export ("": exported before model fingerprints)
    # the continuous cache of document scoring (nextword/cache.py): size, theta, weight ({}: none)
    cache: dict[str, float] = dataclasses.field(default_factory=dict)
    # the n-gram mixed into document scoring (nextword/ngram.py, NGRAM_FILE): order, and weights_by_order (the
    # weight by the context's order 1..order, ngram.scores; "weight", one for all, in bundles before it) ({}: none)
    ngram: dict[str, float | list[float]] = dataclasses.field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    READS: ClassVar[int] = FORMAT_VERSION
    RERUN: ClassVar[str] = RERUN

    def ngram_weights(self, where: str) -> np.ndarray:
        """[order + 1] the n-gram's weight by the context's order (index 0 unused); a `ngram` that gives no
        weight in [0, 1) for each order is one error naming `where`."""
        order = self.ngram.get("order")
        weights = self.ngram.get("weights_by_order", [self.ngram.get("weight")] * (order or 0))
        if (
            not isinstance(order, int) or order < 1 or not isinstance(weights, list) or len(weights) != order
            or not all(isinstance(w, int | float) and 0 <= w < 1 for w in weights)
        ):  # fmt: skip
            raise ValueError(f"{where}: `ngram` needs an order and a weight in [0, 1) for each; re-export the bundle")
        return np.array([0.0, *weights])

    @property
    def model_fingerprint(self) -> str:
        """What makes a bundle's scores: vocabulary + text contract (the data fingerprint), the context
        length and the weights (their sha256, taken at export), as 16 hex digits.

        Re-exporting the same weights keeps it, wherever the bundle is written; any change of vocabulary,
        normalization, <eos>, context or a single weight changes it. Every prediction record and
        summary.json carry it, so scores of two models are never mixed silently. "" for a bundle exported
        before fingerprints (batch prediction refuses it: check_scoring).
        """
        if not self.weights_sha256:
            return ""
        content = {
            "fingerprint": self.fingerprint,
            "text": self.text.to_dict(),
            "context_tokens": self.context_tokens,
            "weights_sha256": self.weights_sha256,
        }
        if self.cache:  # document scores mix in the cache (absent before it, so older fingerprints stay)
            content["cache"] = self.cache
        if self.ngram:  # and the n-gram: its weight and its tables (their checksum)
            content["ngram"] = self.ngram | {"crc32c": self.checksums.get(NGRAM_PATH, "")}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Bundle:
    """A checked bundle: its path, vocabulary and bundle.json."""

    path: str
    tokens: list[str]
    info: BundleInfo

    @property
    def settings(self) -> TextSettings:
        return self.info.text

    @property
    def window_length(self) -> int:
        return self.info.window_length

    @property
    def context_tokens(self) -> int:
        return self.info.context_tokens

    @property
    def fingerprint(self) -> str:
        return self.info.fingerprint

    @property
    def model_fingerprint(self) -> str:
        return self.info.model_fingerprint

    @property
    def state_size(self) -> int:
        return self.info.state_size


def check_scoring(bundle: Bundle) -> None:
    """Batch prediction needs the stream signatures and the model fingerprint: one line if they are missing."""
    if not bundle.state_size or not bundle.model_fingerprint:
        raise ValueError(
            f"{bundle.path}: exported before document scoring and model fingerprints; export it again with "
            "`nextword export` (same weights, same scores) or point predict.bundle_dir at a newer bundle"
        )


def savedmodel_checksums(path: str) -> dict[str, str]:
    """CRC32C of saved_model.pb and of every file in variables/, by path relative to the bundle.

    CRC32C, not a cryptographic hash: it proves a file whole (not truncated, not
    half-copied), and on gs:// it is the object's metadata, so a worker checks a
    large bundle without downloading it once more.
    """
    path = path.rstrip("/")
    variables = [found.rsplit("/", 1)[1] for found, _ in storage.match(storage.join(path, VARIABLES_DIR, "*"))]
    files = [SAVED_MODEL_FILE] + [f"{VARIABLES_DIR}/{name}" for name in variables]
    return {rel: storage.crc32c(storage.join(path, rel)) for rel in files}


def _check_savedmodel(path: str, info_path: str, checksums: object) -> None:
    """The SavedModel files are whole: a truncated one crashes TensorFlow (even with a segfault) when loaded."""
    if (
        not isinstance(checksums, dict)
        or not {SAVED_MODEL_FILE, VARIABLES_INDEX} <= set(checksums)
        or not any(str(rel).startswith(_VARIABLES_DATA) for rel in checksums)
    ):
        raise ValueError(
            f"{info_path}: no checksums of {SAVED_MODEL_FILE} and {VARIABLES_DIR}/ "
            "(exported by an older nextword, or edited); re-export the bundle"
        )
    for rel, expected in sorted(checksums.items()):
        file = storage.join(path, rel)
        if not storage.exists(file):
            raise FileNotFoundError(f"{path}: not a nextword bundle: missing {rel}; {_HOW_TO_FIX}")
        actual = storage.crc32c(file)
        if actual != expected:
            raise ValueError(
                f"{file}: checksum mismatch (CRC32C {actual}, {contract.BUNDLE_INFO_FILE} says {expected}): "
                "the file is truncated or modified; re-export the bundle"
            )


def load_bundle(path: str) -> Bundle:
    """Checks that `path` holds a complete bundle whose vocabulary matches its fingerprint.

    Complete: every file is there, and the SavedModel's files have the checksums
    the export recorded (a bundle copied halfway or truncated is refused here,
    before a job clears anything).
    """
    path = path.rstrip("/")
    for rel in REQUIRED_FILES:
        if not storage.exists(storage.join(path, rel)):
            raise FileNotFoundError(f"{path}: not a nextword bundle: missing {rel}; {_HOW_TO_FIX}")
    meta = storage.join(path, contract.BUNDLE_META_DIR)
    info_path = storage.join(meta, contract.BUNDLE_INFO_FILE)
    info = BundleInfo.from_dict(versioned.read_json(info_path, RERUN), info_path)
    manifest_path = storage.join(meta, contract.MANIFEST_FILE)
    manifest = Manifest.from_dict(versioned.read_json(manifest_path, RERUN), manifest_path)
    vocab_path = storage.join(meta, contract.VOCAB_FILE)
    tokens = contract.parse_vocab_text(storage.read_text(vocab_path), vocab_path)
    fingerprint, vocab_size = info.fingerprint, info.vocab_size
    _check_savedmodel(path, info_path, info.checksums)
    if info.ngram and NGRAM_PATH not in info.checksums:
        raise ValueError(f"{info_path}: `ngram` without the checksum of {NGRAM_PATH}; re-export the bundle")
    if info.ngram:
        info.ngram_weights(info_path)
    recomputed = contract.fingerprint(tokens, info.text)
    if recomputed != fingerprint:
        raise ValueError(
            f"{path}: fingerprint mismatch: {contract.VOCAB_FILE} and the text settings give {recomputed}, "
            f"{contract.BUNDLE_INFO_FILE} says {fingerprint}; the bundle was modified, re-export it"
        )
    if manifest.fingerprint != fingerprint:
        raise ValueError(
            f"{path}: fingerprint mismatch: {contract.MANIFEST_FILE} says {manifest.fingerprint}, "
            f"{contract.BUNDLE_INFO_FILE} says {fingerprint}; the bundle was modified, re-export it"
        )
    if vocab_size != len(tokens) or len(set(tokens)) != len(tokens):
        raise ValueError(
            f"{vocab_path}: {len(tokens)} tokens ({len(set(tokens))} distinct), bundle.json says {vocab_size}; "
            "re-export the bundle"
        )
    return Bundle(path, tokens, info)


def read_ngram(bundle: Bundle) -> ArpaTables | None:
    """The n-gram tables document scoring mixes in (bundle.json's `ngram`), or None; checked whole by
    load_bundle (their CRC32C is among the checksums)."""
    if not bundle.info.ngram:
        return None
    path = storage.join(bundle.path, NGRAM_PATH)
    with storage.open_read(path) as f:
        return ArpaTables.from_bytes(f.read(), path)
