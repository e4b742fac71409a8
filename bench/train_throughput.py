"""Trainer throughput against the same Keras model fed from in-memory NumPy arrays, side by side.

    .venv/bin/python bench/train_throughput.py                      # shipped corpus, window 35
    .venv/bin/python bench/train_throughput.py --data-dir runs/ptb/data --set train.model.num_layers=2

Both sides train the same model (train.model.*), with the same optimizer,
global-norm clipping and global batch, for the same number of steps after the
same warm-up (tf.function tracing):

- trainer: the real `nextword train` code path (TFRecord shards -> tf.data ->
  custom distributed loop with progress bar, TensorBoard scalars and
  checkpoints). Its speed comes from the wall times of the per-step
  TensorBoard loss summaries between the end of the warm-up and the last step.
- reference: `model.fit` on NumPy arrays of the same windows, already in memory,
  verbose=0; the wall time of a second `fit` call after a warm-up call.

The goal is trainer / reference >= 0.95. Rounds alternate (reference,
trainer, reference, ...); the median and the best round of each side are reported.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from nextword import config as config_lib  # noqa: E402
from trainer import data, streams  # noqa: E402
from trainer.main import train  # noqa: E402
from trainer.model import build_model  # noqa: E402
from trainer.optim import make_optimizer  # noqa: E402


def preprocess_shipped_corpus(out: str, window: int) -> str:
    from beam_preprocess import pipeline

    pipeline.run(
        [
            "--set",
            f"preprocess.corpus_glob={REPO}/tests/data/synthetic/**/*.txt",
            "--set",
            f"preprocess.output_dir={out}",
            "--set",
            f"preprocess.window_length={window}",
            "--set",
            f"preprocess.stride={window}",
        ]
    )
    return out


def reference_tokens_per_second(config: config_lib.Config, spec: data.DataSpec, warmup: int, steps: int) -> float:
    cfg = config.train
    batch = cfg.per_replica_batch_size
    windows = streams.read_windows(spec, "train", limit=spec.windows("train"))
    needed = (warmup + steps) * batch
    repeats = -(-needed // len(windows))
    windows = np.tile(windows, [repeats, 1])[:needed]
    inputs, targets = windows[:, :-1], windows[:, 1:]
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(spec.vocab_size, cfg.model)
    optimizer = make_optimizer(cfg.optimizer, steps_per_epoch=warmup + steps)
    optimizer.global_clipnorm = cfg.optimizer.clip_global_norm or None
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,  # no XLA anywhere on CPU (bench/xla_stress.py)
    )
    split = warmup * batch
    model.fit(inputs[:split], targets[:split], batch_size=batch, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(inputs[split:], targets[split:], batch_size=batch, epochs=1, verbose=0)
    return steps * batch * spec.window_length / (time.perf_counter() - start)


def step_wall_times(model_dir: str) -> dict[int, float]:
    """step -> wall time of the trainer's per-step TensorBoard "loss" summary."""
    times = {}
    for path in glob.glob(os.path.join(model_dir, "logs", "train", "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            if any(value.tag == "loss" for value in event.summary.value):
                times[event.step] = event.wall_time
    return times


def trainer_tokens_per_second(config: config_lib.Config, spec: data.DataSpec, warmup: int, steps: int) -> float:
    with tempfile.TemporaryDirectory() as model_dir:
        total = warmup + steps
        overrides = [
            f"train.model_dir={model_dir}",
            "train.epochs=1",
            f"train.steps_per_epoch={total}",
            f"train.max_steps={total}",
        ]
        run_config = config_lib.from_dict(config_lib.section_to_dict(config), overrides)
        train(run_config)
        times = step_wall_times(model_dir)
    batch = config.train.per_replica_batch_size
    return steps * batch * spec.window_length / (times[total] - times[warmup])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="preprocessed data (default: the shipped corpus, window --window)")
    p.add_argument("--window", type=int, default=35)
    p.add_argument("--steps", type=int, default=300, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=30, help="untimed steps first (tracing)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or preprocess_shipped_corpus(os.path.join(tmp, "data"), args.window)
        config = config_lib.load(None, [f"train.data_dir={data_dir}", *args.overrides])
        spec = data.load_data_spec(data_dir)
        results: dict[str, list[float]] = {"reference": [], "trainer": []}
        for round_index in range(args.rounds):
            results["reference"].append(reference_tokens_per_second(config, spec, args.warmup, args.steps))
            results["trainer"].append(trainer_tokens_per_second(config, spec, args.warmup, args.steps))
            print(f"round {round_index + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} tokens/s" for k, v in results.items()))
    medians = {k: statistics.median(v) for k, v in results.items()}
    best = {k: max(v) for k, v in results.items()}
    report = {
        "data_dir": data_dir if args.data_dir else f"shipped corpus, window {args.window}",
        "vocab_size": spec.vocab_size,
        "window_length": spec.window_length,
        "global_batch": config.train.per_replica_batch_size,
        "model": config_lib.section_to_dict(config.train.model),
        "optimizer": config.train.optimizer.name,
        "steps_timed": args.steps,
        "tokens_per_second_median": {k: round(v) for k, v in medians.items()},
        "tokens_per_second_best": {k: round(v) for k, v in best.items()},
        "ratio_trainer_over_reference_median": round(medians["trainer"] / medians["reference"], 3),
        # On a shared machine the best round is the least disturbed one.
        "ratio_trainer_over_reference_best": round(best["trainer"] / best["reference"], 3),
        "goal": ">= 0.95",
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
