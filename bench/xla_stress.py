"""Crash stress of the trainer's evaluation step: many fresh processes, each builds and runs it once.

    .venv/bin/python bench/xla_stress.py --runs 100             # every shape below, 100 fresh processes each
    .venv/bin/python bench/xla_stress.py --runs 100 --jit       # the same with the old XLA loss cluster forced on
    .venv/bin/python bench/xla_stress.py --speed                # evaluation step with and without the cluster, paired

Why: an XLA cluster compiled at the first validation (`jit_compile=True` on evaluation's loss) crashed
its process with SIGSEGV inside XLA's CPU compiler (`xla::cpu::EmitYnnSubgraph`), rarely (2 in some 50
processes one day): a fault of compilation, so it shows only in fresh processes. Each child here is one
such process: it builds the trainer's model at a shape users run (10k words; the defaults' 1x384 and
1x256 tied, 2x200 and 2x650 full; float32 and bf16 matmuls), traces the evaluation step exactly as
trainer.evaluate.Evaluator does (strategy.run of trainer.steps.replica_eval_step in a tf.function) and runs
it once. The parent runs two children at a time (--workers) and counts how each ended, by signal, and whether TF started
its XLA service at all (its INFO log); the JSON is rewritten after every child, and a rerun with the same
--out goes on where a stopped one ended.

`--jit` makes the children put the old XLA loss cluster back into trainer.steps before tracing (the code
before the fix), to count crashes before and after on the same shapes.
`--speed` times the step (batch 20, window 35) with and without the cluster in one process, alternating
reps, and reports the median of the per-rep ratios. Results: bench/results/xla_stress*.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
VOCAB, BATCH, WINDOW = 10_000, 20, 35
# name: (units, layers, head); 1x384 / 1x256 tied: the defaults' sizes below / above 500k training tokens.
SHAPES = {
    "defaults_1x384": (384, 1, "tied"),
    "defaults_1x256": (256, 1, "tied"),
    "2x200": (200, 2, "full"),
    "2x650": (650, 2, "full"),
}
DTYPES = ("float32", "bfloat16")


def child(shape: str, dtype: str, jit: bool, speed_reps: int) -> None:
    """One fresh process: build, trace and run the evaluation step (optionally time it against the cluster)."""
    sys.path.insert(0, str(REPO))
    import keras
    import numpy as np
    import tensorflow as tf

    from nextword.config import ModelConfig
    from trainer import steps
    from trainer.model import build_model

    units, layers, head = SHAPES[shape]
    cfg = ModelConfig(embedding_dim=units, units=units, num_layers=layers, dropout=0.0, head=head)
    keras.utils.set_random_seed(0)
    model = build_model(VOCAB, cfg, with_state=True, unroll=True, matmul_dtype=dtype)
    strategy = tf.distribute.get_strategy()
    ids = tf.constant(np.random.default_rng(0).integers(0, VOCAB, [BATCH, WINDOW + 1]), tf.int32)
    weights = tf.ones([BATCH])
    states = steps.zero_states(model, BATCH)

    def make_step():  # as trainer.evaluate.Evaluator's step, traced anew
        def replica(ids, states):
            return steps.replica_eval_step(model, ids, weights, states)

        return tf.function(lambda ids, states: strategy.run(replica, args=(ids, states)))

    if jit:
        steps.eval_loss_kernel = _xla_kernel()
    started = time.perf_counter()
    sums, _ = make_step()(ids, states)
    sums = sums.numpy()
    report = {"first_step_s": time.perf_counter() - started, "loss": float(sums[0] / sums[1])}
    if speed_reps:
        report["speed"] = _paired_speed(make_step, ids, states, speed_reps)
    print("RESULT " + json.dumps(report), flush=True)


def _paired_speed(make_step, ids, states, reps: int) -> dict:
    """Seconds of 10 steps with plain loss ops and with the XLA loss cluster, alternating, in this process."""
    from trainer import steps

    kernels = {"no_xla": steps.eval_token_losses, "xla": _xla_kernel()}
    variants = {}
    for name, kernel in kernels.items():  # each step is traced with its kernel, then keeps it
        steps.eval_loss_kernel = kernel
        variants[name] = make_step()
        variants[name](ids, states)[0].numpy()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(reps):
        for name in list(variants) if rep % 2 else list(reversed(variants)):
            started = time.perf_counter()
            for _ in range(10):
                total = variants[name](ids, states)[0]
            total.numpy()
            seconds[name].append(time.perf_counter() - started)
    return {
        "ms_per_step": {name: round(statistics.median(s) * 100, 3) for name, s in seconds.items()},
        "median_paired_speed_no_xla_vs_xla": statistics.median(
            x / n for x, n in zip(seconds["xla"], seconds["no_xla"], strict=True)
        ),
        "reps": reps,
    }


def _xla_kernel():
    """The loss as the XLA cluster it was before the fix (trainer.steps, until 2026-12-07)."""
    import tensorflow as tf

    from trainer import steps

    return tf.function(steps.eval_token_losses, jit_compile=True)


def run_child(shape: str, dtype: str, jit: bool, speed_reps: int = 0) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}  # INFO: TF logs when it starts XLA and compiles a cluster
    cmd = [sys.executable, __file__, "--child", shape, dtype, "--speed-reps", str(speed_reps)]
    cmd += ["--jit"] if jit else []
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:  # a hang is an outcome too: counted, and the stress goes on
        return {"shape": shape, "dtype": dtype, "jit": jit, "rc": None, "signal": "timeout after 600 s"}
    record = {"shape": shape, "dtype": dtype, "jit": jit, "rc": proc.returncode, "wall_s": time.monotonic() - started}
    if proc.returncode < 0:
        record["signal"] = signal.Signals(-proc.returncode).name
        record["stderr_tail"] = proc.stderr[-600:]
    elif proc.returncode:
        record["stderr_tail"] = proc.stderr[-600:]
    record["xla_service_started"] = "XLA service" in proc.stderr
    record["xla_cluster_compiled"] = "Compiled cluster using XLA" in proc.stderr
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            record.update(json.loads(line[len("RESULT ") :]))
    return record


def stress(runs: int, jit: bool, out: Path, shapes: list[str], dtypes: list[str], workers: int) -> None:
    jobs = [(shape, dtype) for _ in range(runs) for shape in shapes for dtype in dtypes]
    # A stress run stopped midway goes on where it stopped: its JSON holds every child it finished.
    records: list[dict] = json.loads(out.read_text())["runs"] if out.exists() else []
    done = collections.Counter((r["shape"], r["dtype"]) for r in records)
    for job in list(jobs):
        if done[job]:
            done[job] -= 1
            jobs.remove(job)
    started = time.monotonic() - (json.loads(out.read_text())["seconds"] if out.exists() else 0.0)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for record in pool.map(lambda job: run_child(*job, jit), jobs):
            records.append(record)
            _write(out, jit, records, time.monotonic() - started)
            if len(records) % 20 == 0 or record["rc"] != 0:
                last = f"{record['shape']} {record['dtype']} rc {record['rc']}"
                print(f"{len(records)} children, {len(jobs)} to run in this call; last: {last}", flush=True)
    print(json.dumps(_summary(records), indent=1))


def _summary(records: list[dict]) -> dict:
    cells: dict = collections.defaultdict(collections.Counter)
    for r in records:
        ended = r.get("signal") or ("ok" if r["rc"] == 0 else f"exit {r['rc']}")
        cells[f"{r['shape']} {r['dtype']}"][ended] += 1
    return {cell: dict(counts) for cell, counts in sorted(cells.items())}


def _write(out: Path, jit: bool, records: list[dict], seconds: float) -> None:
    report = {
        "what": "fresh processes that build and run the trainer's evaluation step once (bench/xla_stress.py)",
        "eval_loss_xla_cluster": jit,
        "tensorflow_xla_flags": os.environ.get("XLA_FLAGS", ""),
        "children": len(records),
        "children_that_started_xla": sum(bool(r.get("xla_service_started")) for r in records),
        "children_checked_for_xla": sum("xla_service_started" in r for r in records),
        "seconds": round(seconds, 1),
        "ended_by_cell": _summary(records),
        "runs": records,
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=100, help="fresh processes per shape and dtype")
    p.add_argument("--jit", action="store_true", help="children use the old XLA loss cluster")
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--dtypes", default=",".join(DTYPES))
    p.add_argument("--speed", action="store_true", help="paired step time with and without the cluster")
    p.add_argument("--workers", type=int, default=2, help="children at a time")
    p.add_argument("--out", type=Path)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--speed-reps", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child, args.jit, args.speed_reps)
        return
    shapes, dtypes = args.shapes.split(","), args.dtypes.split(",")
    if args.speed:
        out = args.out or RESULTS / "xla_stress_speed.json"
        records = [run_child(s, d, jit=False, speed_reps=12) for s in shapes for d in dtypes]
        out.write_text(json.dumps({"what": "evaluation step ms, paired in one process", "runs": records}, indent=1))
        for r in records:
            print(r["shape"], r["dtype"], r.get("speed"), r.get("signal", ""))
        return
    out = args.out or RESULTS / ("xla_stress_jit.json" if args.jit else "xla_stress.json")
    stress(args.runs, args.jit, out, shapes, dtypes, args.workers)


if __name__ == "__main__":
    main()
