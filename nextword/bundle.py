"""The model bundle's metadata: what `trainer.export` writes and every consumer checks.

Pure (no TensorFlow): loading the SavedModel itself is the consumer's business;
this module proves that a directory is a complete, consistent bundle first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from nextword import contract, storage
from nextword.contract import TextSettings

FORMAT_VERSION = 1
SAVED_MODEL_FILE = "saved_model.pb"
# Files a complete bundle has, relative to its directory; bundle.json is written last.
META_FILES = (contract.VOCAB_FILE, contract.MANIFEST_FILE, contract.CONFIG_FILE, contract.BUNDLE_INFO_FILE)
REQUIRED_FILES = (SAVED_MODEL_FILE,) + tuple(f"{contract.BUNDLE_META_DIR}/{name}" for name in META_FILES)
_HOW_TO_FIX = "point predict.bundle_dir at the bundle that `nextword train` exported"


@dataclass(frozen=True)
class Bundle:
    """A checked bundle: its path, text settings, vocabulary and window length."""

    path: str
    settings: TextSettings
    tokens: list[str]
    window_length: int  # the training window
    context_tokens: int  # ids the signatures condition on
    fingerprint: str
    info: dict


def bundle_info(
    fingerprint: str,
    settings: TextSettings,
    window_length: int,
    context_tokens: int,
    vocab_size: int,
    created_unix: int,
) -> dict:
    """bundle.json content."""
    return {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "text": settings.to_dict(),
        "window_length": window_length,
        "context_tokens": context_tokens,
        "vocab_size": vocab_size,
        "signatures": [contract.SIGNATURE_NEXT_WORDS, contract.SIGNATURE_SCORE],
        "created_unix": created_unix,
    }


def _read_json(path: str) -> dict:
    try:
        data = json.loads(storage.read_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); re-export the bundle") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object; re-export the bundle")
    return data


def load_bundle(path: str) -> Bundle:
    """Checks that `path` holds a complete bundle whose vocabulary matches its fingerprint."""
    path = path.rstrip("/")
    for rel in REQUIRED_FILES:
        if not storage.exists(storage.join(path, rel)):
            raise FileNotFoundError(f"{path}: not a nextword bundle: missing {rel}; {_HOW_TO_FIX}")
    meta = storage.join(path, contract.BUNDLE_META_DIR)
    info_path = storage.join(meta, contract.BUNDLE_INFO_FILE)
    info = _read_json(info_path)
    manifest = _read_json(storage.join(meta, contract.MANIFEST_FILE))
    vocab_path = storage.join(meta, contract.VOCAB_FILE)
    tokens = contract.parse_vocab_text(storage.read_text(vocab_path), vocab_path)
    try:
        settings = TextSettings.from_dict(info["text"])
        fingerprint, vocab_size = info["fingerprint"], info["vocab_size"]
        window_length, context_tokens = int(info["window_length"]), int(info["context_tokens"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{info_path}: incomplete or invalid ({err!r}); re-export the bundle") from None
    recomputed = contract.fingerprint(tokens, settings)
    if recomputed != fingerprint:
        raise ValueError(
            f"{path}: fingerprint mismatch: {contract.VOCAB_FILE} and the text settings give {recomputed}, "
            f"{contract.BUNDLE_INFO_FILE} says {fingerprint}; the bundle was modified, re-export it"
        )
    if manifest.get("fingerprint") != fingerprint:
        raise ValueError(
            f"{path}: fingerprint mismatch: {contract.MANIFEST_FILE} says {manifest.get('fingerprint')}, "
            f"{contract.BUNDLE_INFO_FILE} says {fingerprint}; the bundle was modified, re-export it"
        )
    if vocab_size != len(tokens) or len(set(tokens)) != len(tokens):
        raise ValueError(
            f"{vocab_path}: {len(tokens)} tokens ({len(set(tokens))} distinct), bundle.json says {vocab_size}; "
            "re-export the bundle"
        )
    return Bundle(path, settings, tokens, window_length, context_tokens, fingerprint, info)
