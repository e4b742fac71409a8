"""Preprocessing benchmark: the Beam pipeline (both DirectRunner modes) against a plain
single-process Python reference that does the identical work (same reader, normalization,
counting, window encoding, shard assignment and gzip TFRecord writing), at 1x and 4x a corpus.

    python bench/preprocess_bench.py --corpus ../shared/data/ptb/ptb.train.txt --out runs/bench/preprocess

Each variant runs in its own process so peak RSS is its own (children included for
multi_processing). Prints a table and writes results.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter

from nextword.cli.cli_common import describe_exit

SETTINGS = [
    "preprocess.text.normalization=whitespace",
    "preprocess.text.eos=true",
    "preprocess.text.unknown_token=<unk>",
    "preprocess.text.min_count=0",
    "preprocess.num_shards=4",
]
VARIANTS = ("reference", "beam_in_memory", "beam_multi_processing")


def reference(glob: str, output_dir: str) -> dict:
    """Single process, no Beam: the same core functions the pipeline's DoFns call."""
    from beam_preprocess import core
    from beam_preprocess.pipeline import list_corpus
    from nextword import config as config_lib
    from nextword.text import contract

    cfg = config_lib.from_dict(None, [*SETTINGS, f"preprocess.corpus_glob={glob}"]).preprocess
    files, _, _ = list_corpus(cfg)

    def split_tokens(corpus_file):
        splitter = core.line_splitter(
            corpus_file, cfg.split.block_lines, cfg.split.valid_fraction, cfg.split.test_fraction
        )
        with open(corpus_file.path, "rb") as stream:
            lines = core.read_lines(stream, cfg.read_chunk_bytes, Counter())
            yield from core.iter_split_tokens(lines, cfg.text, splitter)

    words: Counter = Counter()
    tokens = 0
    for corpus_file in files:
        file_words, per_split = core.count_tokens(split_tokens(corpus_file))
        words.update(file_words)
        tokens += sum(per_split.values())
    vocab = contract.Vocabulary(contract.build_vocab(words, cfg.text))
    with open(os.path.join(output_dir, contract.VOCAB_FILE), "w", encoding="utf-8") as f:
        f.write(contract.vocab_text(vocab.tokens))
    writers = {}
    for split in contract.SPLITS:
        os.makedirs(os.path.join(output_dir, split), exist_ok=True)
        for shard in range(cfg.num_shards):
            name = f"{contract.SHARD_PREFIX}-{shard:05d}-of-{cfg.num_shards:05d}{contract.SHARD_SUFFIX}"
            # zlib level 6, as Beam's GZIP compression uses
            writers[split, shard] = gzip.open(os.path.join(output_dir, split, name), "wb", compresslevel=6)
    windows = 0
    for corpus_file in files:
        ids = ((split, vocab.id(token)) for split, token in split_tokens(corpus_file))
        split_windows = core.split_windows(ids, cfg.window_length + 1, cfg.window_stride, cfg.pad_last_window)
        for split, shard, window in core.assign_shards(split_windows, corpus_file.key, cfg.num_shards):
            writers[split, shard].write(core.tfrecord_frame(core.encode_example(window)))
            windows += 1
    for writer in writers.values():
        writer.close()
    return {"tokens": tokens, "windows": windows}


def beam_run(glob: str, output_dir: str, mode: str) -> dict:
    from beam_preprocess import pipeline

    argv = [arg for item in SETTINGS for arg in ("--set", item)]
    argv += ["--set", f"preprocess.corpus_glob={glob}", "--set", f"preprocess.output_dir={output_dir}"]
    argv += [f"--direct_running_mode={mode}", "--direct_num_workers=2"]
    manifest = pipeline.run(argv)
    counts = manifest["counts"]
    return {"tokens": sum(counts["tokens"].values()), "windows": sum(counts["windows"].values())}


def child(variant: str, glob: str, output_dir: str) -> None:
    """Runs one variant in this process and prints its figures as JSON."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    os.makedirs(output_dir, exist_ok=True)
    start = time.perf_counter()
    if variant == "reference":
        figures = reference(glob, output_dir)
    else:
        figures = beam_run(glob, output_dir, variant.removeprefix("beam_"))
    wall = time.perf_counter() - start
    rss_kb = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    speed = figures["tokens"] / wall
    print(json.dumps({**figures, "wall_s": wall, "tokens_per_s": speed, "peak_rss_mb": rss_kb / 1024}))


def make_corpus(source: str, folder: str, copies: int) -> str:
    os.makedirs(folder, exist_ok=True)
    for i in range(copies):
        shutil.copyfile(source, os.path.join(folder, f"copy-{i}.txt"))
    return os.path.join(folder, "*.txt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="../shared/data/ptb/ptb.train.txt")
    parser.add_argument("--out", default="runs/bench/preprocess")
    parser.add_argument("--sizes", default="1,4", help="corpus multiples to run")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "GLOB", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        glob = make_corpus(args.corpus, os.path.join(args.out, f"corpus-{size}x"), size)
        for variant in VARIANTS:
            out = os.path.join(args.out, f"out-{size}x-{variant}")
            shutil.rmtree(out, ignore_errors=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--child", variant, glob, out], capture_output=True, text=True, check=False
            )
            if proc.returncode:
                sys.exit(f"the {variant} child at {size}x {describe_exit(proc.returncode)}:\n{proc.stderr[-3000:]}")
            row = {"size": size, "variant": variant, **json.loads(proc.stdout.strip().splitlines()[-1])}
            results.append(row)
            print(
                f"{size}x {variant:24s} {row['wall_s']:7.1f} s {row['tokens_per_s']:10.0f} tok/s "
                f"{row['peak_rss_mb']:7.0f} MB  ({row['tokens']} tokens, {row['windows']} windows)",
                flush=True,
            )
    by = {(r["size"], r["variant"]): r for r in results}
    sizes = sorted({r["size"] for r in results})
    for size in sizes:
        ref = by[size, "reference"]["wall_s"]
        for variant in VARIANTS[1:]:
            print(f"{size}x {variant}: {by[size, variant]['wall_s'] / ref:.2f}x the reference's wall time")
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        for variant in VARIANTS:
            ratio = by[hi, variant]["peak_rss_mb"] / by[lo, variant]["peak_rss_mb"]
            print(f"{variant}: peak RSS at {hi}x / at {lo}x = {ratio:.2f}")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
