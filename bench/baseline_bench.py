"""The n-gram baseline's time and peak memory against corpus size: 1x and 4x the Penn Treebank.

    .venv/bin/python bench/baseline_bench.py            # writes bench/results/baseline_bench.json

Each size runs `nextword baseline` (5-gram, local Beam runner) in its own process, so peak RSS
(ru_maxrss of that process and its children) is the stage's own. 4x is the PTB training text four
times, each copy's words tagged with the copy number (`the` -> `the`, `the_1`, ...): four times the
tokens *and* four times the distinct n-grams, the worst case for memory (real text shares most
n-grams, so a real 4x corpus needs less). Valid and test are PTB's own files in both cases.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PTB = REPO.parent / "shared" / "data" / "ptb"
WORK = REPO / "runs" / "baseline_bench"

_CHILD = """
import resource, sys, time, json
sys.path.insert(0, {repo!r})
from beam_preprocess import pipeline as pre
from baseline import pipeline as base
sets = lambda items: [a for i in items for a in ("--set", i)]
common = {common!r}
pre.run(sets(common))
started = time.monotonic()
report = base.run(sets(common))
seconds = time.monotonic() - started
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps({{"seconds": seconds, "peak_rss_mib": peak_kib / 1024, "report": report}}))
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


def run(copies: int) -> dict:
    data = WORK / f"data-x{copies}"
    common = [
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
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(repo=str(REPO), common=common)],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    report = result["report"]
    return {
        "copies": copies,
        "train_tokens": report["train_tokens"],
        "ngrams": report["ngrams"],
        "seconds": round(result["seconds"], 1),
        "count_seconds": report["count_seconds"],
        "estimate_and_score_seconds": report["estimate_seconds"],
        "peak_rss_mib": round(result["peak_rss_mib"]),
        "test_perplexity_carried": round(report["evaluation"]["carried"]["test"]["perplexity"], 2),
    }


def main() -> None:
    os.chdir(REPO)
    rows = [run(copies) for copies in (1, 4)]
    ratio = {
        "tokens": rows[1]["train_tokens"] / rows[0]["train_tokens"],
        "seconds": rows[1]["seconds"] / rows[0]["seconds"],
        "peak_rss": rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"],
    }
    result = {"runs": rows, "ratio_4x_to_1x": ratio, "cpu_cores": len(os.sched_getaffinity(0)),
              "self_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "baseline_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
