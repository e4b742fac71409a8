"""Training and evaluation speed against PyTorch's word_language_model on the same LSTM, side by side.

    python3.11 -m venv .venv-torch && .venv-torch/bin/pip install torch==2.13.0 numpy   # once; benchmark only
    .venv/bin/python bench/peer_bench.py                    # 2x200 and 2x650, 3 rounds each, ~9 min
    .venv/bin/python bench/peer_bench.py --quick            # 2x200 only, 1 round, a smoke run

Both sides: the Penn Treebank training tokens (../shared/data/ptb/ptb.train.txt with <eos>,
10k vocabulary), batch 20, BPTT 35, an untied Embedding -> 2-layer LSTM -> Linear model,
plain SGD with the gradient clipped to global norm 0.25, the hidden state carried between
batches; 10 warm-up steps, then `--steps` timed steps of training and of forward-only
evaluation. PyTorch runs bench/peer_torch_worker.py (torch.set_num_threads(2)); our side
runs the trainer's own replica train and eval steps (trainer.steps, under the default
strategy in a tf.function, as trainer.loop does). Rounds alternate torch, ours, torch, ...
in fresh processes. Achieved GFLOP/s count 2 flops per multiply-add of the LSTM and output
layers (x3 for a training step), beside a 2048^2 matmul measured in the same worker.
Results: bench/results/peer_bench.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PTB_TRAIN = REPO.parent / "shared" / "data" / "ptb" / "ptb.train.txt"
TORCH_PYTHON = REPO / ".venv-torch" / "bin" / "python"
IDS = REPO / "runs" / "peer_bench" / "ptb_train_ids.npy"
SHAPES = {"2x200": (200, 2, 200), "2x650": (650, 2, 40)}  # units, layers, timed steps


def write_ids() -> None:
    import numpy as np

    words = [w for line in PTB_TRAIN.read_text().splitlines() for w in (*line.split(), "<eos>")]
    order = {w: i for i, (w, _) in enumerate(collections.Counter(words).most_common())}
    IDS.parent.mkdir(parents=True, exist_ok=True)
    np.save(IDS, np.array([order[w] for w in words], dtype=np.int32))


def ours(
    ids_path: str,
    units: int,
    layers: int,
    steps: int,
    warmup: int,
    batch: int,
    bptt: int,
    jit: bool,
    rolled: bool,
    matmul_dtype: str,
) -> dict:
    """Our trainer's steps on the same stream, in this (fresh) process; the same initial weights every run."""
    import time

    import keras
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, str(REPO))
    from nextword.config import ModelConfig, OptimizerConfig
    from trainer import steps as steps_lib
    from trainer.model import build_model
    from trainer.optim import make_optimizer

    ids = np.load(ids_path)
    vocab = int(ids.max()) + 1
    streams = ids[: len(ids) // batch * batch].reshape(batch, -1)  # row r: its own contiguous stretch

    def windows():
        while True:
            for start in range(0, streams.shape[1] - 1 - bptt, bptt):
                yield tf.constant(streams[:, start : start + bptt + 1])

    cfg = ModelConfig(embedding_dim=units, units=units, num_layers=layers, dropout=0.0, head="full")
    keras.utils.set_random_seed(0)
    model = build_model(vocab, cfg, with_state=True, unroll=not rolled, matmul_dtype=matmul_dtype)  # as the trainer
    optimizer = make_optimizer(OptimizerConfig(name="sgd", learning_rate=1.0, clip_global_norm=0.25), 1000)
    strategy = tf.distribute.get_strategy()
    votes = tf.zeros([2], tf.float32)
    weights = tf.ones([batch], tf.float32)

    @tf.function(jit_compile=jit)
    def train_step(window, states):
        return strategy.run(steps_lib.replica_train_step, args=(model, optimizer, window, states, votes, batch, 0.25))

    @tf.function(jit_compile=jit)
    def eval_step(window, states):
        return strategy.run(steps_lib.replica_eval_step, args=(model, window, weights, states))

    data = windows()

    def run(step, n, states):
        total = 0.0
        for _ in range(n):
            figures, states = step(next(data), states)
            total += figures  # stays a tensor: no wait for the step
        return states, total.numpy()

    tokens = steps * batch * bptt
    states, _ = run(train_step, warmup, steps_lib.zero_states(model, batch))
    started = time.perf_counter()
    run(train_step, steps, states)
    train_s = time.perf_counter() - started
    states, _ = run(eval_step, warmup, steps_lib.zero_states(model, batch))
    started = time.perf_counter()
    _, sums = run(eval_step, steps, states)
    eval_s = time.perf_counter() - started
    a, b = tf.random.normal([2048, 2048]), tf.random.normal([2048, 2048])
    tf.matmul(a, b).numpy()
    started = time.perf_counter()
    for _ in range(10):
        c = tf.matmul(a, b)
    c.numpy()
    gflops = 2 * 2048**3 * 10 / (time.perf_counter() - started) / 1e9
    return {
        "train_tokens_per_s": tokens / train_s,
        "eval_tokens_per_s": tokens / eval_s,
        "matmul_gflops": gflops,
        # after warmup + steps training steps from the same weights on the same windows: the numerical check
        "eval_perplexity": float(np.exp(sums[0] / sums[1])),
    }


def macs_per_token(units: int, layers: int, vocab: int = 10000) -> int:
    return layers * 4 * units * 2 * units + units * vocab


SIDES = ("torch", "ours", "ours_bf16")  # ours_bf16: train.matmul_dtype bfloat16, what "auto" picks on a bf16 CPU


def run_side(side: str, units: int, layers: int, steps: int) -> dict:
    common = ["--units", str(units), "--layers", str(layers), "--steps", str(steps)]
    if side == "torch":
        command = [str(TORCH_PYTHON), str(REPO / "bench" / "peer_torch_worker.py"), "--ids", str(IDS), *common]
    else:
        command = [sys.executable, __file__, "--worker", *common, *(["--bf16"] if side == "ours_bf16" else [])]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(values: list[float]) -> dict:
    return {"min": round(min(values)), "median": round(statistics.median(values)), "max": round(max(values))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2x200, 1 round, 100 steps")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--units", type=int, default=200, help=argparse.SUPPRESS)
    p.add_argument("--layers", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=200, help=argparse.SUPPRESS)
    p.add_argument("--jit", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rolled", action="store_true", help=argparse.SUPPRESS)  # the LSTMs' loop not unrolled
    p.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)  # matmul_dtype bfloat16
    p.add_argument("--inter-op-threads", type=int, default=0, help=argparse.SUPPRESS)  # 0: TF's default
    args = p.parse_args()
    if args.worker:
        if args.inter_op_threads:
            import tensorflow as tf

            tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
        shape = {"units": args.units, "layers": args.layers, "steps": args.steps}
        dtype = "bfloat16" if args.bf16 else "float32"
        options = {"jit": args.jit, "rolled": args.rolled, "matmul_dtype": dtype}
        print(json.dumps(ours(str(IDS), **shape, warmup=10, batch=20, bptt=35, **options)))
        return
    if not TORCH_PYTHON.exists():
        raise SystemExit(f"{TORCH_PYTHON} not found: create it as this file's docstring says")
    if not IDS.exists():
        write_ids()
    shapes = {"2x200": (200, 2, 100)} if args.quick else SHAPES
    rounds = 1 if args.quick else args.rounds
    report: dict = {"threads": 2, "batch": 20, "bptt": 35, "vocab": 10000, "rounds": rounds, "shapes": {}}
    for name, (units, layers, steps) in shapes.items():
        runs = {side: [] for side in SIDES}
        for r in range(rounds):
            for side in SIDES:
                runs[side].append(run_side(side, units, layers, steps))
                print(f"{name} round {r + 1} {side}: {json.dumps(runs[side][-1])}", flush=True)
        macs = macs_per_token(units, layers)
        entry: dict = {"timed_steps": steps, "macs_per_token": macs}
        for side, results in runs.items():
            train = [x["train_tokens_per_s"] for x in results]
            evaluate = [x["eval_tokens_per_s"] for x in results]
            entry[side] = {
                "train_tokens_per_s": summarize(train),
                "eval_tokens_per_s": summarize(evaluate),
                "train_gflops_median": round(statistics.median(train) * macs * 2 * 3 / 1e9, 1),
                "eval_gflops_median": round(statistics.median(evaluate) * macs * 2 / 1e9, 1),
                "matmul_2048_gflops_median": round(statistics.median(x["matmul_gflops"] for x in results), 1),
            }
        for side in SIDES[1:]:
            for kind in ("train_tokens_per_s", "eval_tokens_per_s"):
                entry[f"ratio_{side}_over_torch_{kind}_median"] = round(
                    entry[side][kind]["median"] / entry["torch"][kind]["median"], 3
                )
        # bf16 against float32 from the same weights after the same steps (the bound: within 1%)
        perplexities = {side: runs[side][0]["eval_perplexity"] for side in SIDES[1:]}
        entry["eval_perplexity_after_training"] = {
            **{side: round(value, 3) for side, value in perplexities.items()},
            "bf16_relative_difference": round(perplexities["ours_bf16"] / perplexities["ours"] - 1, 5),
        }
        report["shapes"][name] = entry
    out = REPO / "bench" / "results" / ("peer_bench_quick.json" if args.quick else "peer_bench.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
