"""Beam shell of preprocessing: DoFns, a CombineFn and composite PTransforms."""

from __future__ import annotations

import logging
from collections import Counter

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_preprocess import core
from nextword import contract
from nextword.config import PreprocessConfig

_LOG = logging.getLogger(__name__)
_NAMESPACE = "nextword.preprocess"


def _open(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


class _FileStream(beam.DoFn):
    """Reads one corpus file as (split, token) pairs; subclasses decide what to emit."""

    def __init__(self, cfg: PreprocessConfig):
        self._cfg = cfg

    def split_tokens(self, corpus_file: core.CorpusFile, stats: Counter):
        cfg = self._cfg
        splitter = core.line_splitter(
            corpus_file, cfg.split.block_lines, cfg.split.valid_fraction, cfg.split.test_fraction
        )
        with _open(corpus_file.path) as stream:
            lines = core.read_lines(stream, cfg.read_chunk_bytes, stats)
            yield from core.iter_split_tokens(lines, cfg.text, splitter)


class CountFileWordsFn(_FileStream):
    """Per file: training word counts, tokens per split, and file figures (pass 1)."""

    def process(self, corpus_file: core.CorpusFile):
        stats: Counter = Counter()
        words, per_split = core.count_tokens(self.split_tokens(corpus_file, stats))
        core.finish_file_stats(stats)
        stats["empty_files"] = int(not per_split)
        for name in core.FILE_STATS:
            Metrics.counter(_NAMESPACE, name).inc(stats[name])
        Metrics.counter(_NAMESPACE, "tokens").inc(sum(per_split.values()))
        _LOG.info("counted %s: %d lines, %d tokens", corpus_file.path, stats["lines"], sum(per_split.values()))
        figures = Counter({name: stats[name] for name in core.FILE_STATS})
        figures.update({f"tokens.{split}": n for split, n in per_split.items()})
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


class FileWindowsFn(_FileStream):
    """Per file: serialized Example windows of ids on one output per split (pass 2).

    Also emits, on the `figures` output, unknown-token and window counts.
    """

    FIGURES = "figures"

    def process(self, corpus_file: core.CorpusFile, vocab_tokens: list[str]):
        vocab = self._vocab(vocab_tokens)
        figures: Counter = Counter()
        unknown = Metrics.counter(_NAMESPACE, "unknown_tokens")
        windows = Metrics.counter(_NAMESPACE, "windows")

        def split_ids():
            for split, token in self.split_tokens(corpus_file, Counter()):
                token_id = vocab.id(token)
                if token_id == contract.UNK_ID:
                    figures[f"unknown_tokens.{split}"] += 1
                yield split, token_id

        for split, window in core.split_windows(split_ids(), self._cfg.window_length + 1, self._cfg.stride):
            figures[f"windows.{split}"] += 1
            yield beam.pvalue.TaggedOutput(split, core.encode_example(window))
        unknown.inc(sum(v for k, v in figures.items() if k.startswith("unknown")))
        windows.inc(sum(v for k, v in figures.items() if k.startswith("windows")))
        _LOG.info("windowed %s: %s", corpus_file.path, dict(figures))
        yield beam.pvalue.TaggedOutput(self.FIGURES, figures)

    def _vocab(self, tokens: list[str]) -> contract.Vocabulary:
        # The side input is the same list for every file: build the lookup once.
        if getattr(self, "_vocab_source", None) is not tokens:
            self._vocab_source = tokens
            self._vocab_lookup = contract.Vocabulary(tokens)
        return self._vocab_lookup


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

    def __init__(self, cfg: PreprocessConfig, glob: str):
        super().__init__()
        self._cfg = cfg
        self._glob = glob

    def expand(self, files):
        counts = (
            files
            | "CountFileWords" >> beam.ParDo(CountFileWordsFn(self._cfg))
            | "MergeCounts" >> beam.CombineGlobally(CorpusCountsFn())
        )
        vocab = counts | "BuildVocab" >> beam.Map(_vocab_or_fail, self._cfg, self._glob)
        return vocab, counts


class WriteWindows(beam.PTransform):
    """Files + vocabulary -> gzip TFRecord shards per split; returns shard names and figures."""

    def __init__(self, cfg: PreprocessConfig, output_dir: str):
        super().__init__()
        self._cfg = cfg
        self._output_dir = output_dir

    def expand(self, pcolls):
        files, vocab = pcolls
        windowed = files | "Window" >> beam.ParDo(
            FileWindowsFn(self._cfg), beam.pvalue.AsSingleton(vocab)
        ).with_outputs(FileWindowsFn.FIGURES, *contract.SPLITS)
        figures = windowed[FileWindowsFn.FIGURES] | "SumFigures" >> beam.CombineGlobally(
            lambda counters: sum(counters, Counter())
        )
        shards = {}
        for split in contract.SPLITS:
            shards[split] = (
                windowed[split]
                | f"Write{split.title()}" >> beam.io.WriteToTFRecord(
                    FileSystems.join(self._output_dir, split, contract.SHARD_PREFIX),
                    file_name_suffix=contract.SHARD_SUFFIX,
                    num_shards=self._cfg.num_shards,
                    compression_type=CompressionTypes.GZIP,
                )
            )
        return shards, figures
