"""The preprocessing pipeline: corpus glob -> vocabulary + sharded TFRecord windows.

    python -m beam_preprocess --config configs/local.yaml --set preprocess.num_shards=8 [Beam options]

`manifest.json` is written last: an output directory without it is incomplete.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import NamedTuple

import apache_beam as beam

from beam_preprocess import core
from beam_preprocess.transforms import BINARY_NAME, CountVocabulary, ShardPiece, WriteWindows
from nextword import cloud, storage
from nextword.artifacts.data_dir import Manifest
from nextword.beam import pipelines
from nextword.config import Config, PreprocessConfig, to_yaml
from nextword.text import contract

_LOG = logging.getLogger(__name__)
TEMP_DIR = "_parts"  # per-bundle shard parts, deleted before the manifest is written
# The names this stage gives its files (beam_preprocess/transforms.py): all that its clearing deletes.
SHARD_NAMES = re.escape(contract.SHARD_PREFIX) + r"-\d{5,}-of-\d{5,}(-\d{5,})?" + re.escape(contract.SHARD_SUFFIX)
TEMP_PARTS = storage.Owned(TEMP_DIR, "(?:" + "|".join(contract.SPLITS) + r")-\d{5,}-[0-9a-f]{32}\.tfrecord", True)
OWNED = (
    storage.Owned("", storage.temp_names(contract.MANIFEST_FILE, contract.VOCAB_FILE, contract.VOCAB_COUNTS_FILE,
                                         contract.CONFIG_FILE)),
    *(storage.Owned(split, SHARD_NAMES) for split in contract.SPLITS),
    TEMP_PARTS,
)  # fmt: skip


# What the stage overwrites besides OWNED and the manifest: checked as its own before a run (storage.claim).
WRITTEN = (contract.VOCAB_FILE, contract.VOCAB_COUNTS_FILE, contract.CONFIG_FILE)


def _glob_folder(glob: str) -> str:
    """The folder part of a glob before its first wildcard."""
    head = glob
    for char in "*?[":
        head = head.split(char, 1)[0]
    return head.rsplit("/", 1)[0] + "/" if "/" in head else ""


def _relative_key(path: str, folder: str) -> str:
    if storage.is_remote(path):
        return path[len(folder) :] if path.startswith(folder) else path
    return os.path.relpath(path, os.path.abspath(folder or "."))


class Unread(NamedTuple):
    """What the corpus glob leaves unread besides the binary files (which only reading finds)."""

    ignored: int = 0  # files under the glob's folder that the glob leaves out (non-.txt files)
    not_regular: tuple[str, ...] = ()  # FIFOs, sockets, devices: never opened
    dangling_links: tuple[str, ...] = ()


def list_corpus(cfg: PreprocessConfig) -> tuple[list[core.CorpusFile], Unread, str]:
    """Matched regular corpus files, what is left unread, and the glob shown in errors."""
    split = cfg.split
    globs = (
        [("train", split.train_glob), ("valid", split.valid_glob), ("test", split.test_glob)]
        if split.train_glob
        else [("", cfg.corpus_glob)]
    )
    files: list[core.CorpusFile] = []
    unread = Unread()
    for fixed_split, glob in globs:
        matched = storage.match_regular(glob)
        if not matched.files:
            regular = "regular " if matched.not_regular or matched.dangling_links else ""
            raise FileNotFoundError(f"{glob}: the corpus glob matches no {regular}file")
        folder = _glob_folder(glob)
        files += [core.CorpusFile(path, _relative_key(path, folder), fixed_split, size) for path, size in matched.files]
        ignored = unread.ignored
        if folder and not fixed_split:
            every = len(storage.match(folder + "**"))
            ignored = max(every - len(matched.files) - len(matched.not_regular), 0)
        unread = Unread(ignored, unread.not_regular + tuple(matched.not_regular),
                        unread.dangling_links + tuple(matched.dangling_links))  # fmt: skip
    for path in unread.not_regular:
        _LOG.warning("%s: not a regular file (a FIFO, socket or device): skipped, never opened", path)
    for path in unread.dangling_links:
        _LOG.warning("%s: a symbolic link to nothing: skipped", path)
    return files, unread, " ".join(glob for _, glob in globs)


def make_manifest(
    cfg: PreprocessConfig,
    glob: str,
    vocab_tokens: list[str],
    counts: tuple[Counter, Counter],
    window_figures: Counter,
    pieces: list[ShardPiece],
    unread: Unread,
    output_dir: str,
) -> Manifest:
    """The manifest: every figure of the run, the files it skipped, and the settings later stages need."""
    _, figures = counts
    binary = sorted(key[len(BINARY_NAME) :] for key in figures if key.startswith(BINARY_NAME))
    per_split = {
        name: {split: int(figures[f"{name}.{split}"] + window_figures[f"{name}.{split}"]) for split in contract.SPLITS}
        for name in ("tokens", "unknown_tokens", "windows", "targets")
    }
    prefix = output_dir.rstrip("/") + "/"

    def relative(path: str) -> str:
        return path[len(prefix) :] if path.startswith(prefix) else path

    ordered = sorted(pieces, key=lambda p: (p.shard, p.piece))
    return Manifest(
        created_unix=int(time.time()),
        corpus_glob=glob,
        text=cfg.text,
        window_length=cfg.window_length,
        record_length=cfg.window_length + 1,
        stride=cfg.window_stride,
        pad_id=contract.PAD_ID if cfg.pad_last_window else None,
        vocab_size=len(vocab_tokens),
        fingerprint=contract.fingerprint(vocab_tokens, cfg.text),
        counts={
            **{name: int(figures[name]) for name in core.FILE_STATS},
            "ignored_files": unread.ignored,
            "not_regular_files": len(unread.not_regular),
            "dangling_links": len(unread.dangling_links),
            **per_split,
        },
        skipped={
            "binary": binary,
            "not_regular": sorted(unread.not_regular),
            "dangling_links": sorted(unread.dangling_links),
        },
        shards={split: [relative(p.path) for p in ordered if p.split == split] for split in contract.SPLITS},
        shard_windows={split: [p.windows for p in ordered if p.split == split] for split in contract.SPLITS},
    )


def _write_vocab(vocab_tokens: list[str], counts: tuple[Counter, Counter], output_dir: str) -> int:
    storage.write_text(storage.join(output_dir, contract.VOCAB_FILE), contract.vocab_text(vocab_tokens))
    storage.write_text(
        storage.join(output_dir, contract.VOCAB_COUNTS_FILE), contract.vocab_counts_text(vocab_tokens, counts[0])
    )
    return len(vocab_tokens)


def _write_manifest(
    _,
    output_dir: str,
    config_text: str,
    pieces: list[ShardPiece],
    vocab_written: int,
    **parts,
) -> str:
    del vocab_written  # a side input only so that the manifest comes after the vocabulary
    storage.clear_owned(output_dir, [TEMP_PARTS])
    # Written by the job, not its builder: a template built now and launched later writes it when it runs.
    storage.write_text(storage.join(output_dir, contract.CONFIG_FILE), config_text)
    manifest = make_manifest(output_dir=output_dir, pieces=pieces, **parts)
    for warning in degenerate_data(manifest, parts["cfg"]):
        _LOG.warning("%s: %s", output_dir, warning)
    path = storage.join(output_dir, contract.MANIFEST_FILE)
    storage.write_marker(path, manifest.to_dict())
    _LOG.info("wrote %s: %s", path, json.dumps(manifest.counts))
    return path


def degenerate_data(manifest: Manifest, cfg: PreprocessConfig) -> list[str]:
    """One line per way the data is committed but barely usable, with what to do about it."""
    found = []
    if manifest.vocab_size <= len(contract.special_tokens(cfg.text)):
        found.append(
            f"the vocabulary holds only {', '.join(contract.special_tokens(cfg.text))}: no word occurs more than "
            f"preprocess.text.min_count={cfg.text.min_count} times; lower it or add text"
        )
    windows = manifest.counts["windows"]
    for split in contract.SPLITS:
        if not windows[split]:
            found.append(f"the {split} split has no window: training will refuse it; give it text or a larger fraction")
    if windows["train"] and cfg.num_shards > windows["train"]:
        found.append(
            f"preprocess.num_shards={cfg.num_shards} but only {windows['train']} training windows: most shards are "
            "empty; lower num_shards"
        )
    return found


def refuse_output_in_corpus(output_dir: str, files: list[core.CorpusFile], glob: str) -> None:
    """A rerun would read the previous run's own outputs (vocab.txt, config.yaml ...) as corpus.

    Compared as files (os.path.realpath), not spellings: a link to the output folder inside the corpus, or
    a corpus glob through a link, is caught too.
    """
    local = not storage.is_remote(output_dir)
    inside = os.path.realpath(output_dir) + os.sep if local else storage.join(output_dir, "")
    ours = storage.join(inside, contract.VOCAB_FILE)
    for pattern in glob.split():  # fnmatch's * also crosses "/", as ** does
        if fnmatch.fnmatch(ours, os.path.realpath(pattern) if local and not storage.is_remote(pattern) else pattern):
            raise ValueError(
                f"preprocess.output_dir: {output_dir} is inside the corpus: {pattern} would read its "
                f"{contract.VOCAB_FILE}; choose an output_dir outside the corpus folder"
            )
    for corpus_file in files:
        path = corpus_file.path if storage.is_remote(corpus_file.path) else os.path.realpath(corpus_file.path)
        if path.startswith(inside) or path + os.sep == inside:
            raise ValueError(
                f"preprocess.output_dir: {output_dir} is inside the corpus: {glob} matches {corpus_file.path}; "
                "choose an output_dir outside the corpus folder"
            )


def clear_output(output_dir: str, inputs: Iterable[str] = ()) -> None:
    """Removes the manifest first (a failed rerun never looks complete), then this stage's old files.

    Only the shards the old manifest lists and files with this stage's own names
    (OWNED) go, never through a symbolic link (refused with one line), never one
    of `inputs` (nextword/storage/__init__.py: clear_owned).
    """
    storage.makedirs(output_dir, "preprocess.output_dir")
    listing = {"marker": contract.MANIFEST_FILE, "listed_key": "shards", "trust": _ours(output_dir)}
    storage.claim(output_dir, "preprocess", OWNED, WRITTEN, key="preprocess.output_dir", **listing)
    storage.clear_owned(output_dir, OWNED, keep=inputs, **listing)


def _ours(output_dir: str) -> Callable[[dict], bool]:
    """Whether a manifest.json in output_dir is one nextword wrote: a Manifest of this format whose
    fingerprint is that of the vocab.txt beside it. Only then are the shards it lists deleted."""

    def trust(content: dict) -> bool:
        try:
            manifest = Manifest.from_dict(content, contract.MANIFEST_FILE)
            vocab_path = storage.join(output_dir, contract.VOCAB_FILE)
            vocab = contract.parse_vocab_text(storage.read_text(vocab_path), vocab_path)
            return contract.fingerprint(vocab, manifest.text) == manifest.fingerprint
        except Exception:  # any defect (a missing field, a wrong type, no vocabulary) means not ours
            return False

    return trust


def build(p: beam.Pipeline, config: Config) -> None:
    """Adds the preprocessing transforms to `p`."""
    cfg = config.preprocess
    output_dir = cfg.output_dir
    files, unread, glob = list_corpus(cfg)
    refuse_output_in_corpus(output_dir, files, glob)
    _LOG.info("preprocessing %d files from %s into %s", len(files), glob, output_dir)
    if not cloud.launch_only(p.options):  # building a template leaves the last run's data alone
        inputs = [corpus_file.path for corpus_file in files]
        storage.check_readable(inputs)  # before anything is cleared
        clear_output(output_dir, inputs)

    file_pcoll = p | "ListFiles" >> beam.Create(files) | "SpreadFiles" >> beam.Reshuffle()
    corpus = (len(files), sum(corpus_file.size for corpus_file in files))  # for progress lines
    vocab, counts = file_pcoll | "CountVocabulary" >> CountVocabulary(cfg, glob, corpus)
    vocab_written = vocab | "WriteVocab" >> beam.Map(_write_vocab, beam.pvalue.AsSingleton(counts), output_dir)
    temp_dir = storage.join(output_dir, TEMP_DIR)
    shards, window_figures = (file_pcoll, vocab) | "WriteWindows" >> WriteWindows(cfg, output_dir, temp_dir, corpus)
    pipelines.write_last(
        p,
        "WriteManifest",
        _write_manifest,
        output_dir=output_dir,
        config_text=to_yaml(config),
        cfg=cfg,
        glob=glob,
        unread=unread,
        vocab_tokens=beam.pvalue.AsSingleton(vocab),
        counts=beam.pvalue.AsSingleton(counts),
        window_figures=beam.pvalue.AsSingleton(window_figures),
        pieces=beam.pvalue.AsList(shards),
        vocab_written=beam.pvalue.AsSingleton(vocab_written),
    )


def manifest_path(config: Config) -> str:
    return storage.join(config.preprocess.output_dir, contract.MANIFEST_FILE)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict:
    """Runs preprocessing and returns the manifest ({} when Beam only builds the job: --dry_run, a template)."""
    return pipelines.run_job("preprocess", argv, test_pipeline, build, manifest_path, _output_dir)


def _output_dir(config: Config) -> tuple[str, str]:
    return config.preprocess.output_dir, "preprocess.output_dir"
