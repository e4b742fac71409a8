"""The n-gram baseline against KenLM's lmplz on the same tokens: time and peak memory at 1x and 10x the Penn Treebank.

    .venv/bin/python bench/baseline_bench.py            # writes bench/results/baseline_bench.json

Each size is the PTB training text repeated, each copy's words tagged with the copy number (`the` ->
`the`, `the_1`, ...): n times the tokens *and* n times the distinct n-grams, the worst case for memory
(real text shares most n-grams). Valid and test are PTB's own files. The data directory is preprocessed
once per size (not timed); then `nextword baseline` (5-gram, local Beam runner, in its own process) and
`lmplz -o 5 -S 2G` (../shared/tools/kenlm, on the same training text, one sentence per line as `<eos>`
ends our lines) run in pairs, ours first in one pair and lmplz first in the next, because the machine is
shared and its speed moves: the headline is the median of the per-pair ratios, and the load average
(`os.getloadavg()`) is recorded before every run. Peak RSS and CPU seconds (user + system) are each
process's own (`wait4`); CPU seconds move less than wall seconds when other work shares the cores. At 10x the
bench also runs `baseline.prune` (lmplz's `--prune 0 0 1` thresholds) and records its perplexity and
ARPA size against the unpruned model's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PTB = REPO.parent / "shared" / "data" / "ptb"
LMPLZ = REPO.parent / "shared" / "tools" / "kenlm" / "bin" / "lmplz"
WORK = REPO / "runs" / "baseline_bench"
PRUNE = [0, 0, 1]  # lmplz's example: singleton trigrams and above

_CHILD = """
import json, sys, time
sys.path.insert(0, {repo!r})
from {module} import pipeline
sets = lambda items: [a for i in items for a in ("--set", i)]
started = time.monotonic()
report = pipeline.run(sets({common!r}) + {beam!r})
print("RESULT " + json.dumps({{"seconds": time.monotonic() - started, "report": report}}))
"""


def _corpus(copies: int) -> Path:
    path = WORK / f"train-x{copies}.txt"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        lines = (PTB / "ptb.train.txt").read_text().splitlines()
        with path.open("w") as out:
            for k in range(copies):
                for line in lines:
                    words = line.split()
                    out.write(" ".join(w if k == 0 or w == "<unk>" else f"{w}_{k}" for w in words) + "\n")
    return path


def _lmplz_input(copies: int) -> Path:
    """The same text for lmplz, which refuses the word `<unk>` (ours maps it to the unknown symbol)."""
    path = WORK / f"train-x{copies}-lmplz.txt"
    if not path.exists():
        path.write_text(_corpus(copies).read_text().replace("<unk>", "unk__"))
    return path


def _common(copies: int) -> list[str]:
    data = WORK / f"data-x{copies}"
    return [
        f"preprocess.split.train_glob={_corpus(copies)}",
        f"preprocess.split.valid_glob={PTB / 'ptb.valid.txt'}",
        f"preprocess.split.test_glob={PTB / 'ptb.test.txt'}",
        "preprocess.text.normalization=whitespace",
        "preprocess.text.eos=true",
        "preprocess.text.unknown_token=<unk>",
        "preprocess.text.min_count=0",
        f"preprocess.output_dir={data}",
        f"train.data_dir={data}",
    ]


def _child(module: str, common: list[str], beam: list[str]) -> tuple[dict, float, float, float]:
    """(result, wall seconds, peak RSS in MiB, CPU seconds) of one stage run in its own process."""
    code = _CHILD.format(repo=str(REPO), module=module, common=common, beam=beam)
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.DEVNULL, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if proc.returncode:
        raise RuntimeError(f"{module} failed ({proc.returncode}): {text[-2000:]}")
    result = json.loads(next(line for line in text.splitlines() if line.startswith("RESULT "))[7:])
    return result, wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def ours(copies: int, extra: list[str] = (), tag: str = "") -> dict:
    load = os.getloadavg()
    out = WORK / f"baseline-x{copies}{tag}"
    common = [*_common(copies), f"baseline.output_dir={out}", *extra]
    result, wall, peak, cpu = _child("baseline", common, [])
    report = result["report"]
    return {
        "tool": "nextword baseline",
        "copies": copies,
        "settings": list(extra),
        "loadavg_before": load,
        "seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "stage_seconds": round(result["seconds"], 2),
        "count_seconds": report["count_seconds"],
        "estimate_and_score_seconds": report["estimate_seconds"],
        "peak_rss_mib": round(peak),
        "train_tokens": report["train_tokens"],
        "ngrams": report["ngrams"],
        "arpa_mib": round((out / "model.arpa").stat().st_size / 2**20, 1),
        "test_perplexity_carried": round(report["evaluation"]["carried"]["test"]["perplexity"], 3),
        "valid_perplexity_carried": round(report["evaluation"]["carried"]["valid"]["perplexity"], 3),
    }


def lmplz(copies: int) -> dict:
    load = os.getloadavg()
    arpa = WORK / f"lmplz-x{copies}.arpa"
    with _lmplz_input(copies).open("rb") as text, arpa.open("wb") as out, tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        proc = subprocess.Popen([str(LMPLZ), "-o", "5", "-S", "2G", "-T", tmp, "--discount_fallback"], stdin=text,
                                stdout=out, stderr=subprocess.DEVNULL)  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"lmplz failed with status {status}")
    with arpa.open() as f:
        ngrams = [int(line.split("=")[1]) for line in (next(f) for _ in range(7)) if line.startswith("ngram ")]
    return {"tool": "lmplz -o 5 -S 2G", "copies": copies, "loadavg_before": load, "seconds": round(wall, 2),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024), "ngrams": ngrams,
            "arpa_mib": round(arpa.stat().st_size / 2**20, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--pairs", type=int, default=2, help="pairs of runs per size (the order alternates)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "baseline_bench.json"))
    args = parser.parse_args()
    os.chdir(REPO)
    if not LMPLZ.exists():
        sys.exit(f"{LMPLZ} is missing: see its README")
    sizes = {}
    for copies in args.sizes:
        if not (WORK / f"data-x{copies}" / "manifest.json").exists():
            _child("beam_preprocess", _common(copies), [])
        pairs = []
        for k in range(args.pairs):
            first, second = (ours, lmplz) if k % 2 == 0 else (lmplz, ours)
            runs = {run["tool"]: run for run in (first(copies), second(copies))}
            mine, theirs = runs["nextword baseline"], runs["lmplz -o 5 -S 2G"]
            pairs.append({"first": first.__name__, "ours": mine, "lmplz": theirs,
                          "ratio_seconds": round(mine["seconds"] / theirs["seconds"], 2),
                          "ratio_cpu_seconds": round(mine["cpu_seconds"] / theirs["cpu_seconds"], 2),
                          "ratio_peak_rss": round(mine["peak_rss_mib"] / theirs["peak_rss_mib"], 2)})  # fmt: skip
            print(json.dumps(pairs[-1]), flush=True)
        sizes[f"{copies}x"] = {
            "pairs": pairs,
            "median_ratio_seconds": statistics.median(p["ratio_seconds"] for p in pairs),
            "median_ratio_cpu_seconds": statistics.median(p["ratio_cpu_seconds"] for p in pairs),
            "ours_max_peak_rss_mib": max(p["ours"]["peak_rss_mib"] for p in pairs),
        }
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu_cores": len(os.sched_getaffinity(0)),
              "sizes": sizes}  # fmt: skip
    largest = max(args.sizes)
    pruned = ours(largest, [f"baseline.prune={json.dumps(PRUNE)}"], "-pruned")
    full = sizes[f"{largest}x"]["pairs"][0]["ours"]
    result["prune"] = {
        "copies": largest,
        "thresholds": PRUNE,
        "unpruned": {k: full[k] for k in ("ngrams", "arpa_mib", "test_perplexity_carried", "valid_perplexity_carried")},
        "pruned": {
            k: pruned[k]
            for k in (
                "ngrams",
                "arpa_mib",
                "test_perplexity_carried",
                "valid_perplexity_carried",
                "seconds",
                "peak_rss_mib",
                "loadavg_before",
            )
        },  # fmt: skip
    }
    result["loadavg_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
