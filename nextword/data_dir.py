"""The preprocessed data directory as later stages read it: manifest.json + vocab.txt, checked together.

TensorFlow-free, so the n-gram baseline and the trainer share one reader.
"""

from __future__ import annotations

import hashlib
import json

from nextword import contract, storage
from nextword.contract import TextSettings


def read_manifest_and_vocab(data_dir: str) -> tuple[dict, list[str]]:
    """Reads the manifest and vocabulary; refuses a vocabulary the data was not made with."""
    manifest_path = storage.join(data_dir, contract.MANIFEST_FILE)
    vocab_path = storage.join(data_dir, contract.VOCAB_FILE)
    if not storage.exists(manifest_path):
        raise FileNotFoundError(
            f"{manifest_path}: not found; preprocessing has not finished there "
            "(run `nextword preprocess` into it, or set train.data_dir)"
        )
    try:
        manifest = json.loads(storage.read_text(manifest_path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{manifest_path}: not valid JSON ({err.msg}); rerun preprocessing") from None
    vocab = contract.parse_vocab_text(storage.read_text(vocab_path), vocab_path)
    actual = contract.fingerprint(vocab, TextSettings.from_dict(manifest["text"]))
    if actual != manifest["fingerprint"]:
        raise ValueError(
            f"{vocab_path}: vocabulary fingerprint {actual} does not match {manifest['fingerprint']} "
            f"in {manifest_path}; they come from different preprocessing runs: rerun preprocessing"
        )
    return manifest, vocab


def manifest_sha256(data_dir: str) -> str:
    """Digest of the manifest file: changes whenever preprocessing reruns, even with the same vocabulary."""
    text = storage.read_text(storage.join(data_dir, contract.MANIFEST_FILE))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def shard_paths(data_dir: str, manifest: dict, split: str) -> list[str]:
    """A split's shard files, in the manifest's order (the order every stage reads them in)."""
    return [storage.join(data_dir, name) for name in manifest["shards"][split]]
