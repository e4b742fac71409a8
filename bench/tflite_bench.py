"""The on-device export (`nextword export --format tflite`): size, perplexity cost and step latency per quantization.

    .venv/bin/python bench/tflite_bench.py [--config configs/demo.yaml] [--steps 3000]

The model: the demo's (configs/demo.yaml: the shipped Shakespeare, its 90 s training budget). A model
directory with checkpoints (train.model_dir) is used as it is; without one, the demo's data and model are
made under runs/tflite_bench/ with the shipped config (preprocess, then train within its time budget).
The best checkpoint is exported as TensorFlow Lite in each quantization (none = float32, float16, int8),
and for each:
- size: bytes of model.tflite;
- perplexity on the test split: every window of the split (window_length + 1 ids), from a zero state, its
  ids stepped one at a time through TensorFlow Lite's interpreter (trainer.tflite.step_through), each
  target's log-probability read from the step before it; the same tokens for every quantization, and the
  Keras model's own on the same windows as the reference (float32 must equal it);
- latency of one step (what an app runs per typed word): --steps single steps, each timed alone after a
  warm-up, the state carried; the median and the 90th percentile of the signature runner's call from
  Python (copies in and out included) and of the interpreter's `invoke` alone (the model's own time).
  One interpreter thread (a keyboard's), TensorFlow Lite's default XNNPACK delegate.
The Keras reference starts every window from a zero state, as the bundle's `score` does; metrics.json's test
perplexity (recorded too) carries the state across windows, as the demo trained, and is lower.
The machine may be shared: the load average before and after is recorded with the figures.
Writes bench/results/tflite_bench.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402  (the repo on the path first)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from nextword import (
    cli,  # noqa: E402
    storage,  # noqa: E402
)
from nextword import config as config_lib  # noqa: E402
from nextword.artifacts.data_dir import shard_paths  # noqa: E402
from nextword.text import contract  # noqa: E402
from trainer import main as trainer_main  # noqa: E402
from trainer import tflite  # noqa: E402
from trainer.model import build_model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results", "tflite_bench.json")
WORK = os.path.join(REPO, "runs", "tflite_bench")


def demo_config(config_path: str) -> tuple[config_lib.Config, list[str]]:
    """The config and its overrides: the config's own model_dir if it has checkpoints, else runs/tflite_bench."""
    config = config_lib.load(config_path)
    if storage.exists(storage.join(config.train.model_dir, "checkpoints")):
        return config, []
    data, model = os.path.join(WORK, "data"), os.path.join(WORK, "model")
    overrides = [f"preprocess.output_dir={data}", f"train.data_dir={data}", f"train.model_dir={model}"]
    return config_lib.load(config_path, overrides), overrides


def ensure_trained(config_path: str, config: config_lib.Config, overrides: list[str]) -> None:
    args = ["--config", config_path, *(arg for item in overrides for arg in ("--set", item))]
    for stage, done in (
        ("preprocess", storage.join(config.train.data_dir, contract.MANIFEST_FILE)),
        ("train", storage.join(config.train.model_dir, "metrics.json")),
    ):
        if not storage.exists(done) and cli.main([stage, *args]) != 0:
            raise SystemExit(f"nextword {stage} failed")


def test_windows(data_dir: str, manifest) -> list[list[int]]:
    """The test split's windows, each cut at its first padding id (what follows is never a target)."""
    spec = {contract.FEATURE_IDS: tf.io.FixedLenFeature([manifest.window_length + 1], tf.int64)}
    windows = []
    for record in tf.data.TFRecordDataset(shard_paths(data_dir, manifest, "test"), compression_type="GZIP"):
        ids = tf.io.parse_single_example(record, spec)[contract.FEATURE_IDS].numpy().tolist()
        windows.append(ids[: ids.index(contract.PAD_ID)] if contract.PAD_ID in ids else ids)
    return [w for w in windows if len(w) > 1]


def keras_log_probs(model, windows: list[list[int]]) -> list[float]:
    """The Keras model's log P of every target of `windows`, in order (consecutive windows of one length batched)."""
    values = []
    for _, group in itertools.groupby(windows, key=len):
        group = list(group)
        for lo in range(0, len(group), 64):  # 64 windows' logits at a time: bounded memory
            values += _batch_log_probs(model, np.array(group[lo : lo + 64], np.int32))
    return values


def _batch_log_probs(model, batch: np.ndarray) -> list[float]:
    """log P of every target of windows `batch` [b, w + 1] (one length), window by window."""
    logits = keras.ops.convert_to_numpy(model(batch[:, :-1], training=False)).astype(np.float64)  # [b, w, V]
    peak = logits.max(-1, keepdims=True)
    log_z = np.log(np.exp(logits - peak).sum(-1)) + peak[..., 0]  # [b, w]
    targets = np.take_along_axis(logits, batch[:, 1:, None], axis=-1)[..., 0]
    return (targets - log_z).reshape(-1).tolist()


def interpreter(model_path: str) -> tf.lite.Interpreter:
    """TensorFlow Lite's interpreter on one thread (a keyboard's), its default XNNPACK delegate."""
    with warnings.catch_warnings():  # tf.lite.Interpreter's notice that LiteRT's package replaces it
        warnings.simplefilter("ignore", UserWarning)
        return tf.lite.Interpreter(model_path, num_threads=1)


def perplexity(values: list[float]) -> float:
    return float(np.exp(-np.mean(values)))


def latency(model_path: str, state: np.ndarray, ids: list[int], steps: int) -> dict:
    """Milliseconds of single steps (the state carried), each timed alone after a warm-up of 50 ids: the
    signature runner's call (inputs copied in, the run, outputs copied out, in Python), and on a second
    interpreter its run alone (`invoke`, the inputs set before it: the model's own time)."""
    step = interpreter(model_path).get_signature_runner(tflite.SIGNATURE_STEP)
    bare = interpreter(model_path)
    bare.allocate_tensors()
    by_dtype = {d["dtype"]: d["index"] for d in bare.get_input_details()}  # id: int32, state: float32
    state_out = next(d["index"] for d in bare.get_output_details() if d["shape"].tolist() == [state.size])
    calls, runs = [], []
    bare_state = state
    for i in range(steps + 50):
        token = np.array([ids[i % len(ids)]], np.int32)
        start = time.perf_counter()
        state = step(id=token, state=state)["state"]
        calls.append(time.perf_counter() - start)
        bare.set_tensor(by_dtype[np.int32], token)
        bare.set_tensor(by_dtype[np.float32], bare_state)
        start = time.perf_counter()
        bare.invoke()
        runs.append(time.perf_counter() - start)
        bare_state = bare.get_tensor(state_out)

    def summary(times: list[float]) -> dict:
        return {
            "median_ms": round(float(np.median(times[50:])) * 1e3, 4),
            "p90_ms": round(float(np.percentile(times[50:], 90)) * 1e3, 4),
        }

    return {"steps": steps, "signature_call": summary(calls), "invoke": summary(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "demo.yaml"))
    parser.add_argument("--steps", type=int, default=3000, help="timed single-step calls per quantization")
    args = parser.parse_args()
    started = time.time()
    load_before = os.getloadavg()
    config, overrides = demo_config(args.config)
    ensure_trained(args.config, config, overrides)

    with trainer_main.restored_best(config, "benchmark") as (loop, setup):
        model, data_dir, resolved = loop.model, setup.spec.data_dir, setup.config
        manifest = setup.spec.manifest
        folders = {
            q: tflite.export(model, data_dir, resolved, os.path.join(WORK, f"tflite-{q}"), q)
            for q in tflite.QUANTIZATIONS
        }
        stateless = build_model(setup.spec.vocab_size, resolved.train.model)
        stateless.set_weights(model.get_weights())
    windows = test_windows(data_dir, manifest)
    reference = keras_log_probs(stateless, windows)
    stream = [token for window in windows for token in window]
    results = {}
    for quantize, folder in folders.items():
        info = json.loads(storage.read_text(os.path.join(folder, tflite.INFO_FILE)))
        step = interpreter(os.path.join(folder, tflite.MODEL_FILE)).get_signature_runner(tflite.SIGNATURE_STEP)
        zero = np.zeros([sum(part["size"] for part in info["state"])], np.float32)
        values = [v for window in windows for v in tflite.step_through(step, window, zero)[0]]
        differences = np.abs(np.array(values) - np.array(reference))
        results[quantize] = {
            "bytes": os.path.getsize(os.path.join(folder, tflite.MODEL_FILE)),
            "test_perplexity": round(perplexity(values), 4),
            "max_abs_log_prob_difference_from_keras": float(differences.max()),
            "mean_abs_log_prob_difference_from_keras": float(differences.mean()),
            "step_latency": latency(os.path.join(folder, tflite.MODEL_FILE), zero, stream, args.steps),
        }
        print(quantize, json.dumps(results[quantize]), flush=True)
    base = results["none"]
    for figures in results.values():
        figures["size_ratio_to_float32"] = round(figures["bytes"] / base["bytes"], 4)
        figures["perplexity_ratio_to_float32"] = round(figures["test_perplexity"] / base["test_perplexity"], 5)
    metrics = json.loads(storage.read_text(storage.join(resolved.train.model_dir, "metrics.json")))
    report = {
        "model_dir": resolved.train.model_dir,
        "trained": {"epochs": metrics["train"]["epochs"], "metrics_test_perplexity": metrics["test"]["perplexity"]},
        "model": config_lib.section_to_dict(resolved.train.model),
        "parameters": int(stateless.count_params()),
        "vocab_size": setup.spec.vocab_size,
        "test_split": {"windows": len(windows), "tokens": len(reference)},
        "keras_test_perplexity_same_windows": round(perplexity(reference), 4),
        "quantizations": results,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "note": "shared with other work: latencies are under load",
        },
        "seconds": round(time.time() - started, 1),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    with storage.atomic_write(RESULTS) as f:
        f.write((json.dumps(report, indent=2) + "\n").encode("utf-8"))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
