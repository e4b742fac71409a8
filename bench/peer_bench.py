"""Training and evaluation speed against PyTorch's word_language_model on the same LSTM, side by side.

    python3.11 -m venv .venv-torch && .venv-torch/bin/pip install torch==2.13.0 numpy   # once; benchmark only
    .venv/bin/python bench/peer_bench.py                    # 2x200 and 2x650, 6 sessions of 6 bursts, ~15 min
    .venv/bin/python bench/peer_bench.py --quick            # 2x200 only, 1 session of 3 bursts, a smoke run

Both sides: the Penn Treebank training tokens (../shared/data/ptb/ptb.train.txt with <eos>,
10k vocabulary), batch 20, BPTT 35, an untied Embedding -> 2-layer LSTM -> Linear model,
plain SGD with the gradient clipped to global norm 0.25, the hidden state carried between
batches. PyTorch runs bench/peer_torch_worker.py (torch.set_num_threads(2)); our side runs
the trainer's own replica train and eval steps (trainer.steps, under the default strategy in
a tf.function, as trainer.loop does), in float32 and with bf16 matmuls (train.matmul_dtype).

How: a session starts one worker process per side and keeps them (bench/peer_protocol.py).
The sides take turns in bursts (2x200: 20 steps; 2x650: 4 training or 8 evaluation steps),
the order reversed every other burst, a pause before each (so that no side's idle threads
still spin), first training (after 10 untimed warm-up steps), then
forward-only evaluation from a zero state (after 10 more), then a 2048^2 matmul each. This
machine's speed swings by 30% or more within minutes, and between two states, so the sides'
figures are compared burst by burst: the paired ratio of a burst is ours / PyTorch's in the
same burst, a second or two apart; its median over every burst of every session is the
headline, beside the ratio of the sides' median tokens/s. A process's speed also depends on the
process (PyTorch's 2x200 evaluation ran at ~34k tokens/s in one and ~25k in the next, on the
same machine state as ours), hence several sessions of fresh processes rather than one long one.
Every burst is kept (`per_burst`). Achieved GFLOP/s count 2 flops per multiply-add of the LSTM
and output layers (x3 for a training step). Results: bench/results/peer_bench.json.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from peer_protocol import REPLY, serve

from nextword.cli.cli_common import describe_exit

REPO = Path(__file__).resolve().parent.parent
PTB_TRAIN = REPO.parent / "shared" / "data" / "ptb" / "ptb.train.txt"
TORCH_PYTHON = REPO / ".venv-torch" / "bin" / "python"
IDS = REPO / "runs" / "peer_bench" / "ptb_train_ids.npy"
SHAPES = {"2x200": (200, 2, 20, 20), "2x650": (650, 2, 4, 8)}  # units, layers, training and evaluation steps per burst
SIDES = ("torch", "ours", "ours_bf16")  # ours_bf16: train.matmul_dtype bfloat16, what "auto" picks on a bf16 CPU
KINDS = {"train": "train_tokens_per_s", "evaluate": "eval_tokens_per_s"}
WARMUP_STEPS = 10
# Before each burst: idle worker threads spin a while before they sleep (OpenMP's wait policy, Eigen's
# pool), and would take cores from the next side's burst.
PAUSE_S = 0.25
BATCH, BPTT = 20, 35


def write_ids() -> None:
    import numpy as np

    words = [w for line in PTB_TRAIN.read_text().splitlines() for w in (*line.split(), "<eos>")]
    order = {w: i for i, (w, _) in enumerate(collections.Counter(words).most_common())}
    IDS.parent.mkdir(parents=True, exist_ok=True)
    np.save(IDS, np.array([order[w] for w in words], dtype=np.int32))


class OursWorker:
    """Our trainer's steps on the stream, in bursts; the same initial weights in every process."""

    def __init__(self, units: int, layers: int, rolled: bool, matmul_dtype: str):
        import keras
        import numpy as np
        import tensorflow as tf

        sys.path.insert(0, str(REPO))
        from nextword.config import ModelConfig, OptimizerConfig
        from trainer import steps as steps_lib
        from trainer.model import build_model
        from trainer.optim import make_optimizer

        ids = np.load(IDS)
        streams = ids[: len(ids) // BATCH * BATCH].reshape(BATCH, -1)  # row r: its own contiguous stretch

        def windows():
            while True:
                for start in range(0, streams.shape[1] - 1 - BPTT, BPTT):
                    yield tf.constant(streams[:, start : start + BPTT + 1])

        cfg = ModelConfig(embedding_dim=units, units=units, num_layers=layers, dropout=0.0, head="full")
        keras.utils.set_random_seed(0)
        model = build_model(int(ids.max()) + 1, cfg, with_state=True, unroll=not rolled, matmul_dtype=matmul_dtype)
        optimizer = make_optimizer(OptimizerConfig(name="sgd", learning_rate=1.0, clip_global_norm=0.25), 1000)
        strategy = tf.distribute.get_strategy()
        votes = tf.zeros([2], tf.float32)
        weights = tf.ones([BATCH], tf.float32)

        @tf.function
        def train_step(window, states):
            args = (model, optimizer, window, states, votes, BATCH, 0.25)
            return strategy.run(steps_lib.replica_train_step, args=args)

        @tf.function
        def eval_step(window, states):
            return strategy.run(steps_lib.replica_eval_step, args=(model, window, weights, states))

        self.tf = tf
        self.data = windows()
        self.steps = {"train": train_step, "evaluate": eval_step}
        self.states = {kind: steps_lib.zero_states(model, BATCH) for kind in self.steps}

    def _burst(self, kind: str, steps: int) -> tuple[float, object]:
        step, states, total = self.steps[kind], self.states[kind], 0.0
        started = time.perf_counter()
        for _ in range(steps):
            figures, states = step(next(self.data), states)
            total += figures  # stays a tensor: no wait for the step
        total = total.numpy()
        seconds = time.perf_counter() - started
        self.states[kind] = states
        return seconds, total

    def train(self, steps: int) -> dict:
        return {"seconds": self._burst("train", steps)[0]}

    def evaluate(self, steps: int) -> dict:
        seconds, sums = self._burst("evaluate", steps)
        return {"seconds": seconds, "loss_sum": float(sums[0]), "tokens": float(sums[1])}

    def matmul(self, n: int = 2048, reps: int = 10) -> dict:
        a, b = self.tf.random.normal([n, n]), self.tf.random.normal([n, n])
        self.tf.matmul(a, b).numpy()
        started = time.perf_counter()
        for _ in range(reps):
            c = self.tf.matmul(a, b)
        c.numpy()
        return {"gflops": 2 * n**3 * reps / (time.perf_counter() - started) / 1e9}


class Worker:
    """One side's running worker process, spoken to through bench/peer_protocol.py."""

    def __init__(self, side: str, command: list[str]):
        self.side = side
        self.errors = tempfile.TemporaryFile(mode="w+")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors, text=True, env=env
        )
        self._reply("its start (building the model)")

    def _reply(self, doing: str) -> dict:
        for line in self.process.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY) :])
        self.errors.seek(0)
        ended = describe_exit(self.process.wait())
        raise WorkerDied(f"the {self.side} worker {ended} during {doing}", self.errors.read()[-3000:])

    def call(self, do: str, *args, doing: str = "") -> dict:
        try:
            self.process.stdin.write(json.dumps({"do": do, "args": args}) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it is gone: _reply says how it ended
        return self._reply(doing or do)

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        self.process.wait()
        self.errors.close()


class WorkerDied(Exception):
    """A side's worker process ended before it answered: what it was doing, how it ended, its stderr's tail."""

    def __init__(self, message: str, stderr_tail: str):
        super().__init__(message)
        self.stderr_tail = stderr_tail


def worker_command(side: str, units: int, layers: int) -> list[str]:
    shape = ["--units", str(units), "--layers", str(layers)]
    if side == "torch":
        return [str(TORCH_PYTHON), str(REPO / "bench" / "peer_torch_worker.py"), "--ids", str(IDS), *shape]
    return [sys.executable, __file__, "--worker", *shape, *(["--bf16"] if side == "ours_bf16" else [])]


def session(units: int, layers: int, steps: dict, bursts: int, save: Callable[[dict], None]) -> dict:
    """One set of workers: per side, each burst's tokens/s of each kind, its perplexity and matmul GFLOP/s.

    `save` gets the figures so far after every burst, so a bench stopped in the middle keeps them.
    """
    out = {side: {"train_tokens_per_s": [], "eval_tokens_per_s": [], "loss_sum": 0.0, "tokens": 0.0} for side in SIDES}
    workers: dict[str, Worker] = {}
    try:
        for side in SIDES:
            workers[side] = Worker(side, worker_command(side, units, layers))
        for kind, figure in KINDS.items():
            for worker in workers.values():
                worker.call(kind, WARMUP_STEPS, doing=f"{kind} warm-up")
            for burst in range(bursts):
                for side in SIDES if burst % 2 == 0 else SIDES[::-1]:
                    time.sleep(PAUSE_S)
                    reply = workers[side].call(kind, steps[kind], doing=f"{kind} burst {burst + 1}")
                    out[side][figure].append(steps[kind] * BATCH * BPTT / reply["seconds"])
                    out[side]["loss_sum"] += reply.get("loss_sum", 0.0)
                    out[side]["tokens"] += reply.get("tokens", 0.0)
                figures = ", ".join(f"{side} {out[side][figure][-1]:.0f}" for side in SIDES)
                print(f"{kind} burst {burst + 1}: {figures} tokens/s", flush=True)
                save(out)
        for side, worker in workers.items():
            out[side]["matmul_gflops"] = worker.call("matmul")["gflops"]
    except WorkerDied as died:
        # The bursts every side completed are kept; the session ends here and the bench goes on.
        print(f"{died}; this session keeps its complete bursts\n{died.stderr_tail}", file=sys.stderr, flush=True)
        for figure in KINDS.values():
            complete = min(len(out[side][figure]) for side in SIDES)
            for side in SIDES:
                del out[side][figure][complete:]
        out["ended"] = str(died)
    finally:
        for worker in workers.values():
            worker.close()
    return out


def macs_per_token(units: int, layers: int, vocab: int = 10000) -> int:
    return layers * 4 * units * 2 * units + units * vocab


def summarize(values: list[float]) -> dict:
    return {"min": round(min(values)), "median": round(statistics.median(values)), "max": round(max(values))}


def shape_entry(sessions: list[dict], units: int, layers: int, steps: dict) -> dict:
    """The report of one shape over its sessions: tokens/s per side, paired ratios, GFLOP/s, perplexities."""
    macs = macs_per_token(units, layers)
    entry: dict = {"steps_per_burst": steps, "macs_per_token": macs}
    for side in SIDES:
        train = [x for s in sessions for x in s[side]["train_tokens_per_s"]]
        evaluate = [x for s in sessions for x in s[side]["eval_tokens_per_s"]]
        entry[side] = {
            "train_tokens_per_s": summarize(train),
            "eval_tokens_per_s": summarize(evaluate),
            "train_gflops_median": round(statistics.median(train) * macs * 2 * 3 / 1e9, 1),
            "eval_gflops_median": round(statistics.median(evaluate) * macs * 2 / 1e9, 1),
            "matmul_2048_gflops": [round(s[side]["matmul_gflops"], 1) for s in sessions],
        }
    for side in SIDES[1:]:
        for figure in KINDS.values():
            paired = [o / t for s in sessions for o, t in zip(s[side][figure], s["torch"][figure], strict=True)]
            entry[f"ratio_{side}_over_torch_{figure}"] = {
                "paired_median": round(statistics.median(paired), 3),
                "paired_min": round(min(paired), 3),
                "paired_max": round(max(paired), 3),
                "bursts_at_or_above_1": f"{sum(r >= 1 for r in paired)} of {len(paired)}",
                "of_medians": round(entry[side][figure]["median"] / entry["torch"][figure]["median"], 3),
            }
    # ours in float32 and bf16 from the same weights after the same steps (the bound: within 1%)
    perplexity = {side: [math.exp(s[side]["loss_sum"] / s[side]["tokens"]) for s in sessions] for side in SIDES}
    bf16_over_float32 = zip(perplexity["ours_bf16"], perplexity["ours"], strict=True)
    entry["eval_perplexity_after_training"] = {
        **{side: [round(p, 3) for p in values] for side, values in perplexity.items()},
        "bf16_relative_difference": [round(b / f - 1, 5) for b, f in bf16_over_float32],
    }
    return entry


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2x200, 1 session of 3 bursts")
    p.add_argument("--sessions", type=int, default=6, help="fresh worker processes per shape")
    p.add_argument("--bursts", type=int, default=6, help="per session, of training and of evaluation")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--units", type=int, default=200, help=argparse.SUPPRESS)
    p.add_argument("--layers", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--rolled", action="store_true", help=argparse.SUPPRESS)  # the LSTMs' loop not unrolled
    p.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)  # matmul_dtype bfloat16
    p.add_argument("--inter-op-threads", type=int, default=0, help=argparse.SUPPRESS)  # 0: TF's default
    args = p.parse_args()
    if args.worker:
        if args.inter_op_threads:
            import tensorflow as tf

            tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
        dtype = "bfloat16" if args.bf16 else "float32"
        serve(OursWorker(args.units, args.layers, args.rolled, dtype))
        return
    if not TORCH_PYTHON.exists():
        raise SystemExit(f"{TORCH_PYTHON} not found: create it as this file's docstring says")
    if not IDS.exists():
        write_ids()
    shapes = {"2x200": SHAPES["2x200"]} if args.quick else SHAPES
    sessions, bursts = (1, 3) if args.quick else (args.sessions, args.bursts)
    report: dict = {"threads": 2, "batch": BATCH, "bptt": BPTT, "vocab": 10000, "sessions": sessions}
    report |= {"bursts_per_session": bursts, "shapes": {}, "per_burst": {}}
    out = REPO / "bench" / "results" / ("peer_bench_quick.json" if args.quick else "peer_bench.json")
    for name, (units, layers, train_steps, eval_steps) in shapes.items():
        steps = {"train": train_steps, "evaluate": eval_steps}
        runs = report["per_burst"][name] = []
        for number in range(sessions):
            print(f"{name} session {number + 1}", flush=True)

            def save(partial: dict, runs: list = runs, number: int = number) -> None:  # marked unfinished
                runs[number:] = [{**partial, "ended": "the bench stopped during this session"}]
                write_report(out, report)

            runs[number:] = [session(units, layers, steps, bursts, save)]
            complete = [run for run in runs if "ended" not in run]  # a died session's bursts stay in per_burst
            if complete:
                report["shapes"][name] = shape_entry(complete, units, layers, steps)
            write_report(out, report)  # after every session: a bench stopped later keeps what it finished
    print(json.dumps(report["shapes"], indent=2))


def write_report(path: Path, report: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    main()
