"""The preprocessed data directory: manifest.json (typed, versioned) + vocab.txt, checked together.

Written by `nextword preprocess` (manifest.json last, as its commit marker); read by the trainer, the
n-gram baseline and the export (which copies the manifest into the bundle). TensorFlow-free.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import ClassVar

from nextword import storage
from nextword.artifacts import versioned
from nextword.text import contract
from nextword.text.contract import TextSettings

FORMAT_VERSION = 1
RERUN = "rerun `nextword preprocess` into it"


@dataclass(frozen=True)
class Manifest(versioned.Versioned):
    """Every figure of a preprocessing run, and the settings later stages need."""

    created_unix: int
    corpus_glob: str
    text: TextSettings
    window_length: int  # tokens of context per window
    record_length: int  # ids per TFRecord example: window_length + 1
    stride: int  # tokens between the starts of consecutive windows
    pad_id: int | None  # the id of padding in a last, short window (None: no padding)
    vocab_size: int
    fingerprint: str  # vocabulary + text settings (contract.fingerprint)
    # file figures (core.FILE_STATS), ignored_files, and {tokens, unknown_tokens, windows, targets} -> split -> n
    counts: dict
    shards: dict[str, list[str]]  # split -> shard files, relative to the data directory, in reading order
    format_version: int = FORMAT_VERSION
    # The corpus files not read, by why: "binary", "not_regular" (FIFOs, sockets, devices), "dangling_links"
    skipped: dict[str, list[str]] = field(default_factory=dict)
    # split -> windows in each file of `shards` (empty in manifests from before it): where a reader starting
    # at window n opens its first file
    shard_windows: dict[str, list[int]] = field(default_factory=dict)

    READS: ClassVar[int] = FORMAT_VERSION
    RERUN: ClassVar[str] = RERUN

    def count(self, name: str, split: str) -> int:
        """A per-split figure: tokens, unknown_tokens, windows or targets."""
        return int(self.counts[name][split])


def read_manifest(data_dir: str) -> Manifest:
    path = storage.join(data_dir, contract.MANIFEST_FILE)
    if not storage.exists(path):
        raise FileNotFoundError(
            f"{path}: not found; preprocessing has not finished there "
            "(run `nextword preprocess` into it, or set train.data_dir)"
        )
    return Manifest.from_dict(versioned.read_json(path, RERUN), path)


def read_manifest_and_vocab(data_dir: str) -> tuple[Manifest, list[str]]:
    """Reads the manifest and vocabulary; refuses a vocabulary the data was not made with."""
    manifest = read_manifest(data_dir)
    vocab_path = storage.join(data_dir, contract.VOCAB_FILE)
    vocab = contract.parse_vocab_text(storage.read_text(vocab_path), vocab_path)
    actual = contract.fingerprint(vocab, manifest.text)
    if actual != manifest.fingerprint:
        raise ValueError(
            f"{vocab_path}: vocabulary fingerprint {actual} does not match {manifest.fingerprint} "
            f"in {storage.join(data_dir, contract.MANIFEST_FILE)}; they come from different preprocessing runs: "
            "rerun preprocessing"
        )
    return manifest, vocab


def manifest_sha256(data_dir: str) -> str:
    """Digest of the manifest file: changes whenever preprocessing reruns, even with the same vocabulary."""
    text = storage.read_text(storage.join(data_dir, contract.MANIFEST_FILE))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def shard_paths(data_dir: str, manifest: Manifest, split: str) -> list[str]:
    """A split's shard files, in the manifest's order (the order every stage reads them in)."""
    return [storage.join(data_dir, name) for name in manifest.shards[split]]
