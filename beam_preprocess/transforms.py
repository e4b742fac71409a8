"""Beam shell of preprocessing: DoFns, a CombineFn and composite PTransforms."""

from __future__ import annotations

import logging
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from beam_preprocess import core
from nextword import storage
from nextword.beam import pipelines, progress
from nextword.config import PreprocessConfig
from nextword.text import contract

_LOG = logging.getLogger(__name__)
_NAMESPACE = "nextword.preprocess"
BINARY_NAME = "binary:"  # a corpus figure's key prefix: the path of a binary file skipped, merged with the counts


class ShardPiece(NamedTuple):
    """A written piece of a shard: the manifest lists them in (shard, piece) order with their windows."""

    split: str
    shard: int
    piece: int
    path: str
    windows: int


beam.coders.registry.register_coder(ShardPiece, beam.coders.RowCoder)


class _FileStream(beam.DoFn):
    """Reads one corpus file as (split, token) pairs; subclasses decide what to emit.

    Progress (files, bytes, lines, tokens; a log line every `progress.EVERY_S` seconds, and Beam
    counters named `<stage>_<figure>`) is reported against `corpus` (files, bytes) when given.
    """

    STAGE = ""
    TOKENS_PER_CHECK = 4096  # how often the stream looks at the clock

    def __init__(self, cfg: PreprocessConfig, corpus: tuple[int, int] = (0, 0)):
        self._cfg = cfg
        self._corpus = corpus

    progress: progress.Progress | None = None  # made in setup(), or at the first file

    def setup(self):
        files, size = self._corpus
        self.progress = progress.Progress(_NAMESPACE, self.STAGE, total_bytes=size, total_files=files)

    def split_tokens(self, corpus_file: core.CorpusFile, stats: Counter):
        cfg = self._cfg
        splitter = core.line_splitter(
            corpus_file, cfg.split.block_lines, cfg.split.valid_fraction, cfg.split.test_fraction
        )
        if self.progress is None:  # process() called without setup(), as tests of the DoFn do
            self.setup()
        seen = Counter()  # bytes and lines already reported

        def advance(tokens: int, files: int = 0) -> None:
            delta = {name: stats[name] - seen[name] for name in ("bytes", "lines")}
            seen.update(delta)
            self.progress.advance(tokens=tokens, files=files, **delta)

        tokens = 0
        with storage.open_read(corpus_file.path) as stream:  # a read failure names the file (storage.open_read)
            if core.looks_binary(stream.read(core.BINARY_SNIFF_BYTES)):
                stats["_binary"] = 1  # skipped by both passes alike: the same bytes decide
                advance(0, files=1)
                return
            stream.seek(0)
            lines = core.read_lines(stream, cfg.read_chunk_bytes, stats)
            for item in core.iter_split_tokens(lines, cfg.text, splitter):
                yield item
                tokens += 1
                if tokens == self.TOKENS_PER_CHECK:
                    advance(tokens)
                    tokens = 0
        advance(tokens, files=1)


class CountFileWordsFn(_FileStream):
    """Per file: training word counts, tokens per split, and file figures (pass 1)."""

    STAGE = "counting"

    def process(self, corpus_file: core.CorpusFile):
        stats: Counter = Counter()
        words, per_split = core.count_tokens(self.split_tokens(corpus_file, stats))
        core.finish_file_stats(stats)
        stats["empty_files"] = int(not per_split and not stats["binary_files"])
        for name in core.FILE_STATS:
            Metrics.counter(_NAMESPACE, name).inc(stats[name])
        Metrics.counter(_NAMESPACE, "tokens").inc(sum(per_split.values()))
        _LOG.info("counted %s: %d lines, %d tokens", corpus_file.path, stats["lines"], sum(per_split.values()))
        figures = Counter({name: stats[name] for name in core.FILE_STATS})
        figures.update({f"tokens.{split}": n for split, n in per_split.items()})
        if stats["binary_files"]:
            _LOG.warning("%s: binary (a NUL byte in its first %d bytes): skipped", corpus_file.path,
                         core.BINARY_SNIFF_BYTES)  # fmt: skip
            figures[BINARY_NAME + corpus_file.path] = 1  # the manifest names it
        yield words, figures


class CorpusCountsFn(beam.CombineFn):
    """Merges per-file (word counts, figures) pairs; memory is one vocabulary."""

    def create_accumulator(self):
        return Counter(), Counter()

    def add_input(self, acc, element):
        acc[0].update(element[0])
        acc[1].update(element[1])
        return acc

    def merge_accumulators(self, accumulators):
        words, figures = Counter(), Counter()
        for w, f in accumulators:
            words.update(w)
            figures.update(f)
        return words, figures

    def extract_output(self, acc):
        return acc


class WriteShardPartsFn(_FileStream):
    """Per file: windows of ids written straight into this bundle's shard parts (pass 2).

    Records never travel through the pipeline one by one (which would buffer
    the whole corpus in a group-by on the local runner): each bundle appends
    TFRecords to one uncompressed part file per (split, shard) and, when it
    finishes, emits the part paths on the `parts` output. Per-file unknown-token
    and window counts go to the main output.
    """

    PARTS = "parts"
    STAGE = "windowing"

    def __init__(self, cfg: PreprocessConfig, temp_dir: str, corpus: tuple[int, int] = (0, 0)):
        super().__init__(cfg, corpus)
        self._temp_dir = temp_dir

    def start_bundle(self):
        self._parts: dict[tuple[str, int], tuple[str, object]] = {}

    def _part(self, split: str, shard: int):
        key = (split, shard)
        if key not in self._parts:
            path = FileSystems.join(self._temp_dir, f"{split}-{shard:05d}-{uuid.uuid4().hex}.tfrecord")
            self._parts[key] = (path, FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED))
        return self._parts[key][1]

    def process(self, corpus_file: core.CorpusFile, vocab_tokens: list[str]):
        vocab = self._vocab(vocab_tokens)
        figures: Counter = Counter()

        def split_ids():
            for split, token in self.split_tokens(corpus_file, Counter()):
                token_id = vocab.id(token)
                if token_id == contract.UNK_ID:
                    figures[f"unknown_tokens.{split}"] += 1
                yield split, token_id

        cfg = self._cfg
        windows = core.split_windows(split_ids(), cfg.window_length + 1, cfg.window_stride, cfg.pad_last_window)
        for split, shard, window in core.assign_shards(windows, corpus_file.key, cfg.num_shards):
            figures[f"windows.{split}"] += 1
            figures[f"targets.{split}"] += core.predicted_tokens(window)
            self._part(split, shard).write(core.tfrecord_frame(core.encode_example(window)))
        Metrics.counter(_NAMESPACE, "unknown_tokens").inc(sum(v for k, v in figures.items() if k.startswith("unk")))
        Metrics.counter(_NAMESPACE, "windows").inc(sum(v for k, v in figures.items() if k.startswith("windows")))
        _LOG.info("windowed %s: %s", corpus_file.path, dict(figures))
        yield figures

    def finish_bundle(self):
        for key, (path, handle) in self._parts.items():
            handle.close()
            yield beam.pvalue.TaggedOutput(self.PARTS, WindowedValue((key, path), MIN_TIMESTAMP, [GlobalWindow()]))

    def _vocab(self, tokens: list[str]) -> contract.Vocabulary:
        # The side input is the same list for every file: build the lookup once.
        if getattr(self, "_vocab_source", None) is not tokens:
            self._vocab_source = tokens
            self._vocab_lookup = contract.Vocabulary(tokens)
        return self._vocab_lookup


# A shard is written as pieces of at most this many windows, each its own gzip file, so that a reader that
# starts mid-split (a carried-state row, a resumed epoch) decompresses at most one piece to reach its start.
PIECE_WINDOWS = 1 << 14


def shard_path(output_dir: str, split: str, shard: int, num_shards: int, piece: int = 0) -> str:
    """A shard's piece: the first keeps the shard's plain name, the next ones add their number."""
    name = f"{contract.SHARD_PREFIX}-{shard:05d}-of-{num_shards:05d}" + (f"-{piece:05d}" if piece else "")
    return FileSystems.join(output_dir, split, name + contract.SHARD_SUFFIX)


def write_shard(key: tuple[str, int], parts: dict, output_dir: str, num_shards: int) -> Iterator[ShardPiece]:
    """Concatenates a shard's parts into gzip TFRecord pieces of PIECE_WINDOWS windows (streaming), each
    written as a new file renamed over the old one (storage.atomic_write): never through a link or into a
    hard-linked copy. A shard with no window is one empty piece, so every shard has a file."""
    split, shard = key

    def records():
        for part in sorted(parts[key]):
            with storage.open_read(part) as src:
                yield from core.iter_tfrecords(src, part)

    stream = records()
    piece, record = 0, next(stream, None)
    while piece == 0 or record is not None:
        path = shard_path(output_dir, split, shard, num_shards, piece)
        gzip = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # as Beam's GZIP
        windows = 0
        with storage.atomic_write(path) as out:
            while record is not None and windows < PIECE_WINDOWS:
                out.write(gzip.compress(core.tfrecord_frame(record)))
                windows += 1
                record = next(stream, None)
            out.write(gzip.flush())
        yield ShardPiece(split, shard, piece, path, windows)
        piece += 1


def _vocab_or_fail(counts: tuple[Counter, Counter], cfg: PreprocessConfig, glob: str) -> list[str]:
    words, _ = counts
    if not words:
        raise ValueError(
            f"{glob}: no token left in the training split after normalization; "
            "check the glob, preprocess.text.normalization and the split fractions"
        )
    return contract.build_vocab(words, cfg.text)


class CountVocabulary(beam.PTransform):
    """Files -> (vocabulary tokens in id order, (word counts, corpus figures))."""

    def __init__(self, cfg: PreprocessConfig, glob: str, corpus: tuple[int, int] = (0, 0)):
        super().__init__()
        self._cfg = cfg
        self._glob = glob
        self._corpus = corpus  # (files, bytes), for progress

    def expand(self, files):
        counts = (
            files
            | "CountFileWords" >> beam.ParDo(CountFileWordsFn(self._cfg, self._corpus))
            | "MergeCounts" >> beam.CombineGlobally(CorpusCountsFn())
        )
        vocab = counts | "BuildVocab" >> beam.Map(_vocab_or_fail, self._cfg, self._glob)
        return vocab, counts


class WriteWindows(beam.PTransform):
    """Files + vocabulary -> `num_shards` gzip TFRecord shards per split.

    Returns (the shards' pieces, per-file figures summed).
    """

    def __init__(self, cfg: PreprocessConfig, output_dir: str, temp_dir: str, corpus: tuple[int, int] = (0, 0)):
        super().__init__()
        self._cfg = cfg
        self._output_dir = output_dir
        self._temp_dir = temp_dir
        self._corpus = corpus  # (files, bytes), for progress

    def expand(self, pcolls):
        files, vocab = pcolls
        windowed = files | "WriteParts" >> beam.ParDo(
            WriteShardPartsFn(self._cfg, self._temp_dir, self._corpus), beam.pvalue.AsSingleton(vocab)
        ).with_outputs(WriteShardPartsFn.PARTS, main="figures")
        figures = windowed.figures | "SumFigures" >> beam.CombineGlobally(pipelines.sum_counters)
        keys = [(split, shard) for split in contract.SPLITS for shard in range(self._cfg.num_shards)]
        shards = (
            files.pipeline
            | "ShardKeys" >> beam.Create(keys)
            | "SpreadShards" >> beam.Reshuffle()
            | "WriteShards" >> beam.FlatMap(
                write_shard, beam.pvalue.AsMultiMap(windowed[WriteShardPartsFn.PARTS]),
                self._output_dir, self._cfg.num_shards,
            )
        )  # fmt: skip
        return shards, figures
