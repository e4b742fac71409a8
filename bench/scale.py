"""Every stage at 1x, 10x and 100x the Penn Treebank training text: wall seconds, tokens/s and peak RSS.

    .venv/bin/python bench/scale.py --sizes 1 10 100     # bench/results/scale.json + scale.png
    .venv/bin/python bench/scale.py --report             # its tables (docs/scale.md)

The corpus of size n is the PTB training text n times, each copy's words tagged with the copy number as in
bench/baseline_bench.py (n times the tokens and n times the distinct n-grams: the worst case for the
baseline's memory). Preprocessing splits it as users' corpora are split (`preprocess.split` fractions:
a tenth each for valid and test, so the valid split the trainer evaluates is ~9M tokens at 100x), into one
shard per split so that state can be carried (the default), with the vocabulary capped at 10,000 words.
Each stage runs in its own process (peak RSS and CPU seconds from `wait4`):

- preprocess: `beam_preprocess` on the local runner.
- baseline: the 5-gram, `baseline` on the local runner (estimation and scoring of valid and test).
- inputs: time to the first batch of a training epoch and of an evaluation of the valid split, carried
  state, with 32 and 128 batch rows (the readers' start-up, before any model step); each row opening the
  shard piece that holds its start ("pieces"), and, for reference, skipping from the split's first window
  as the reader did before pieces ("from_start"); then the pieces reader's batches/s over (at most) 200 training
  batches, alone (what it delivers against the trainer's steps/s).
- train: `trainer` for a fixed number of steps of a fixed model (1 x 256 LSTM, tied head, batch 32), then
  its validation, the final evaluation of valid and test, and the export, as a training job runs them.
  From its TensorBoard events: time to the first step, steps/s, validation seconds; from its files:
  final evaluation and export seconds.
- predict: `batch_predict` (line context, the default mode) over the corpus's first lines, at most 1M.

The JSON is rewritten after every stage, so a later failure keeps what was measured; a rerun skips
(size, stage) pairs already in it unless --again. Load averages are recorded: on a shared machine only
runs with nothing else running are comparable.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_bench import REPO, WORK, _corpus  # noqa: E402  (the same tagged corpora)

STAGES = ("preprocess", "baseline", "inputs", "train", "predict")
TRAIN_STEPS = 200
MAX_PREDICT_LINES = 1_000_000
ROWS = (32, 128)

_PREPROCESS = """
from beam_preprocess import pipeline
report = pipeline.run(sets(SETTINGS))
result = {"tokens": report["counts"]["tokens"], "windows": report["counts"]["windows"]}
"""

_BASELINE = """
from baseline import pipeline
report = pipeline.run(sets(SETTINGS))
result = {"train_tokens": report["train_tokens"], "ngrams": report["ngrams"],
          "test_perplexity": report["evaluation"]["carried"]["test"]["perplexity"]}
"""

_INPUTS = """
import dataclasses, time
from nextword import config as config_lib
from trainer.data import load_data_spec
from trainer.inputs import Inputs
from trainer.strategy import make_strategy
config = config_lib.from_dict(None, SETTINGS)
strategy, worker = make_strategy(config.train)
pieces = load_data_spec(config.train.data_dir)
# The reader before pieces: every row skips from the split's first window (as with one file per shard).
from_start = dataclasses.replace(pieces, manifest=dataclasses.replace(pieces.manifest, shard_windows={}))
result = {}
for reader, spec in (("pieces", pieces), ("from_start", from_start)):
    for rows in ROWS:
        cfg = dataclasses.replace(config.train, per_replica_batch_size=rows)
        inputs = Inputs(spec, cfg, strategy, worker)
        for what, batches in (("train", lambda: inputs.train(0, 0)), ("valid", lambda: inputs.evaluation("valid")[0])):
            started = time.monotonic()
            stream = iter(batches())
            next(stream)
            result[f"{reader}_first_{what}_batch_seconds_{rows}_rows"] = time.monotonic() - started
            if reader == "pieces" and what == "train":  # the reader's own rate, against the trainer's steps/s
                started, read = time.monotonic(), 0
                for _ in zip(range(READ_BATCHES), stream):  # fewer where the epoch is shorter (1x, 128 rows)
                    read += 1
                result[f"pieces_train_batches_per_s_{rows}_rows"] = read / (time.monotonic() - started)
"""

_TRAIN = """
import glob, os, time
import tensorflow as tf
from trainer import main
metrics = main.train(config_lib.from_dict(None, SETTINGS))
model_dir = dict(s.split("=", 1) for s in SETTINGS)["train.model_dir"]

def walls(split, tag):
    found = []
    for path in sorted(glob.glob(os.path.join(model_dir, "logs", split, "events.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            found += [(event.step, event.wall_time) for v in event.summary.value if v.tag == tag]
    return sorted(found)

steps = walls("train", "loss")
valid_done = walls("valid", "loss")[-1][1]
metrics_done = os.path.getmtime(os.path.join(model_dir, "metrics.json"))
bundle = os.path.join(model_dir, "bundle")
bundle_done = max(os.path.getmtime(os.path.join(d, f)) for d, _, files in os.walk(bundle) for f in files)
result = {
    "steps": len(steps),
    "first_step_seconds": steps[0][1] - STARTED_WALL,
    "steps_per_s": (len(steps) - 1) / (steps[-1][1] - steps[0][1]),
    "validation_seconds": valid_done - steps[-1][1],
    "final_evaluation_seconds": metrics_done - valid_done,
    "export_seconds": bundle_done - metrics_done,
    "valid": metrics["valid"],
    "test": metrics["test"],
}
"""

_PREDICT = """
from batch_predict import pipeline
summary = pipeline.run(sets(SETTINGS))
result = {"input_lines": summary["input_lines"], "output_records": summary["output_records"],
          "rejects": sum(summary["rejects_by_reason"].values()), "scored_tokens": summary["scored_tokens"],
          "perplexity": summary["perplexity"], "job_seconds": summary["seconds"]}
"""

_HEADER = """
import json, sys, time
STARTED_WALL = time.time()
sys.path.insert(0, {repo!r})
from nextword import config as config_lib
SETTINGS = {settings!r}
ROWS = {rows!r}
READ_BATCHES = 200
sets = lambda items: [a for i in items for a in ("--set", i)]
"""


def run_child(body: str, settings: list[str]) -> tuple[dict, float, float, float]:
    """(result, wall seconds, peak RSS in MiB, CPU seconds) of `body` run in a fresh Python process."""
    header = _HEADER.format(repo=str(REPO), settings=settings, rows=ROWS)
    code = header + body + '\nprint("RESULT " + json.dumps(result))\n'
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        out.seek(0)
        text = out.read()
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"child failed ({os.waitstatus_to_exitcode(status)}): {text[-3000:]}")
    result = json.loads(next(line for line in text.splitlines() if line.startswith("RESULT "))[7:])
    return result, wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def predict_input(copies: int) -> tuple[Path, int]:
    """The corpus's first lines, at most MAX_PREDICT_LINES: (file, lines)."""
    path = WORK / f"predict-x{copies}.txt"
    lines = 0
    if not path.exists():
        with _corpus(copies).open() as src, path.open("w") as out:
            for lines, line in enumerate(src, 1):
                out.write(line)
                if lines == MAX_PREDICT_LINES:
                    break
    with path.open() as f:
        lines = sum(1 for _ in f)
    return path, lines


def settings(copies: int) -> dict[str, list[str]]:
    data, model = WORK / f"scale-data-x{copies}", WORK / f"scale-model-x{copies}"
    common = [
        f"preprocess.corpus_glob={_corpus(copies)}",
        "preprocess.text.normalization=whitespace",
        "preprocess.text.eos=true",
        "preprocess.text.unknown_token=<unk>",
        "preprocess.text.min_count=0",
        "preprocess.text.max_size=10000",
        "preprocess.num_shards=1",
        f"preprocess.output_dir={data}",
        f"train.data_dir={data}",
        f"train.model_dir={model}",
    ]
    train = [
        "train.model.units=256",
        "train.model.num_layers=1",
        "train.model.head=tied",
        "train.model.dropout=0.5",
        "train.per_replica_batch_size=32",
        "train.epochs=1",
        f"train.steps_per_epoch={TRAIN_STEPS}",
        f"train.checkpoint_every_steps={TRAIN_STEPS * 10}",
    ]
    lines_file, _ = predict_input(copies)
    predict = [
        f"predict.bundle_dir={model / 'bundle'}",
        f"predict.input_glob={lines_file}",
        f"predict.output_dir={WORK / f'scale-predictions-x{copies}'}",
    ]
    return {
        "preprocess": common,
        "baseline": [*common, f"baseline.output_dir={WORK / f'scale-baseline-x{copies}'}"],
        "inputs": common,
        "train": common + train,
        "predict": common + predict,
    }


BODIES = {"preprocess": _PREPROCESS, "baseline": _BASELINE, "inputs": _INPUTS, "train": _TRAIN, "predict": _PREDICT}


def work_tokens(stage: str, run: dict, manifest: dict) -> int:
    """The tokens a stage's time is divided by: the corpus for preprocessing and the baseline, the
    valid and test splits for training (its evaluation dominates), the scored tokens for prediction."""
    tokens = manifest["counts"]["tokens"]
    if stage == "train":
        return tokens["valid"] + tokens["test"]
    if stage == "predict":
        return run["scored_tokens"]
    return sum(tokens.values())


def measure(copies: int, stage: str) -> dict:
    load = os.getloadavg()
    result, wall, rss, cpu = run_child(BODIES[stage], settings(copies)[stage])
    return {"loadavg_before": [round(x, 2) for x in load], "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "peak_rss_mib": round(rss), **result}  # fmt: skip


def slopes(sizes: dict) -> dict:
    """Log-log slopes of seconds and ratios of peak RSS between consecutive sizes, per stage."""
    found = {}
    keys = sorted(sizes, key=lambda k: sizes[k]["copies"])
    for small, large in zip(keys, keys[1:], strict=False):
        for stage in STAGES:
            a, b = sizes[small]["stages"].get(stage), sizes[large]["stages"].get(stage)
            if not (a and b and a.get("work_tokens") and b.get("work_tokens")) or a["work_tokens"] == b["work_tokens"]:
                continue
            grow = math.log(b["work_tokens"] / a["work_tokens"])
            found[f"{stage} {small}->{large}"] = {
                "seconds_slope": round(math.log(b["seconds"] / a["seconds"]) / grow, 3),
                "peak_rss_ratio": round(b["peak_rss_mib"] / a["peak_rss_mib"], 3),
            }
    return found


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (secs, rss) = plt.subplots(1, 2, figsize=(11, 4.2))
    sizes = sorted(result["sizes"].values(), key=lambda s: s["copies"])
    for stage in STAGES:
        points = [(s["corpus_tokens"], s["stages"][stage]) for s in sizes if stage in s["stages"]]
        if not points:
            continue
        x = [p[0] for p in points]
        secs.plot(x, [p[1]["seconds"] for p in points], "o-", label=stage)
        rss.plot(x, [p[1]["peak_rss_mib"] for p in points], "o-", label=stage)
    for ax, label in ((secs, "wall seconds"), (rss, "peak RSS (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("corpus tokens")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    secs.legend(fontsize=8)
    fig.suptitle("nextword stages against corpus size (PTB training text, tagged copies; bench/scale.py)")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def save(result: dict, out: Path) -> None:
    result["slopes"] = slopes(result["sizes"])
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    plot(result, out.with_suffix(".png"))


# The 1B-token estimates' assumptions (docs/scale.md): Dataflow workers of 4 vCPUs (n1-standard-4), each
# vCPU doing the work of one of this machine's cores; stages in CPU-seconds per million tokens measured here.
BILLION = 1_000_000_000
WORKER_VCPUS = 4
CLOUD_STAGES = ("preprocess", "baseline", "predict")


def report(result: dict) -> str:
    """Markdown: each stage's cost per million tokens at the largest size measured, the growth from the
    size before it, and what a 1B-token corpus costs on Dataflow workers (an estimate from these costs)."""
    sizes = sorted(result["sizes"].values(), key=lambda s: s["copies"])
    lines = [
        "| stage | at | wall s | CPU s per M tokens | tokens/s | peak RSS MiB | time slope | RSS ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    per_million = {}
    for stage in STAGES:
        measured = [s for s in sizes if stage in s["stages"]]
        if not measured or stage in ("inputs", "train"):
            continue
        top = measured[-1]
        run = top["stages"][stage]
        per_million[stage] = run["cpu_seconds"] / run["work_tokens"] * 1e6
        growth = next((v for k, v in result.get("slopes", {}).items() if k.startswith(stage) and
                       k.endswith(f"->{top['copies']}x")), {})  # fmt: skip
        lines.append(
            f"| {stage} | {top['copies']}x ({run['work_tokens'] / 1e6:.1f}M tokens) | {run['seconds']:.0f} | "
            f"{per_million[stage]:.1f} | {run.get('tokens_per_s', 0):,} | {run['peak_rss_mib']:,} | "
            f"{growth.get('seconds_slope', '')} | {growth.get('peak_rss_ratio', '')} |"
        )
    lines += ["", "| training at | first step s | steps/s | validation tokens/s | final evaluation s | export s |"]
    lines.append("|---|---|---|---|---|---|")
    for size in sizes:
        if run := size["stages"].get("train"):
            valid = size["stages"]["preprocess"]["tokens"]["valid"]
            lines.append(
                f"| {size['copies']}x | {run['first_step_seconds']:.1f} | {run['steps_per_s']:.2f} | "
                f"{valid / run['validation_seconds']:,.0f} | {run['final_evaluation_seconds']:.0f} | "
                f"{run['export_seconds']:.0f} |"
            )
    lines += ["", "| 1B tokens on Dataflow | CPU hours | hours on 10 workers | hours on 50 workers |"]
    lines.append("|---|---|---|---|")
    for stage in CLOUD_STAGES:
        if stage in per_million:
            cpu_hours = per_million[stage] * BILLION / 1e6 / 3600
            lines.append(
                f"| {stage} | {cpu_hours:.0f} | {cpu_hours / (10 * WORKER_VCPUS):.2f} | "
                f"{cpu_hours / (50 * WORKER_VCPUS):.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report", action="store_true", help="print the Markdown tables of the JSON and stop")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--again", action="store_true", help="measure pairs already in the JSON again")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "scale.json"))
    args = parser.parse_args()
    os.chdir(REPO)
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {"sizes": {}}
    if args.report:
        print(report(result))
        return
    result["cpu_cores"] = len(os.sched_getaffinity(0))
    for copies in args.sizes:
        size = result["sizes"].setdefault(f"{copies}x", {"copies": copies, "stages": {}})
        _, size["predict_lines"] = predict_input(copies)
        with _corpus(copies).open() as f:
            size["corpus_lines"] = sum(1 for _ in f)
        for stage in args.stages:
            if stage in size["stages"] and not args.again:
                continue
            if stage != "preprocess" and "preprocess" not in size["stages"]:
                raise SystemExit(f"{copies}x: run the preprocess stage first")
            print(f"{copies}x {stage} ...", flush=True)
            run = measure(copies, stage)
            run["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            manifest = json.loads((WORK / f"scale-data-x{copies}" / "manifest.json").read_text())
            size["corpus_tokens"] = sum(manifest["counts"]["tokens"].values())
            run["work_tokens"] = work_tokens(stage, run, manifest)
            if stage != "inputs":
                run["tokens_per_s"] = round(run["work_tokens"] / run["seconds"])
            size["stages"][stage] = run
            print(json.dumps(run), flush=True)
            save(result, out)
    save(result, out)
    print(json.dumps(result["slopes"], indent=2))


if __name__ == "__main__":
    main()
