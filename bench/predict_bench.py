"""Batch prediction throughput: the Beam job vs the raw signature (ceiling) vs a one-line loop.

    .venv/bin/python bench/predict_bench.py --lines 100000 [--bundle runs/ptb/model/bundle] [--mode both]

Input: lines of the Penn Treebank test set, repeated to --lines. All three
measurements use the same bundle and the same lines:
- beam: `batch_predict.pipeline.run` on the local runner, end to end (read,
  normalize, infer, write JSONL + summary), in a fresh process; seconds from
  the start of `run` (TensorFlow import and model loading included, ~3 s) to
  its return. `beam_marginal` is the rate between the two input sizes, (N -
  N/4) lines / (t_N - t_N/4): the steady state of a long job, startup excluded.
- ceiling: the bundle's signatures called on pre-made batches (texts already in
  memory, the whole input sorted by length into batches of the same token
  budget), one call after another, timing only the calls; the faster of
  TensorFlow's default threads and one intra-op thread. For reference, also
  `two_calls`: the same batches from two threads at once, one intra-op thread
  each, as the job runs its calls (predict.model_calls_in_flight).
- runinference: the same lines through `RunInference(BundleModelHandler(...))` in a plain Beam pipeline
  (read lines, infer, write JSON lines), as a user's own pipeline runs the handler; end to end like beam.
- loops, one line at a time on the first --loop-lines lines: `seed_loop` as
  the seed predicted (Python tokenization, Keras `model.predict` on one
  context, the whole vocabulary sorted; next words only), and `signature_loop`
  (the bundle's own signatures called with a batch of one).
Peak RSS of the Beam process is measured at --lines / 4 and --lines. Each
measurement runs --repeats times (interleaved) and the fastest run counts: the
machine may be shared, and other work only ever slows a run down.

Without --bundle, the bundle is an untrained model of the Zaremba et al. small
shape (2 x 200 LSTM, 10k PTB vocabulary, window 35); throughput does not
depend on the weights. The seed loop needs that Keras model, so it runs only
without --bundle.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nextword.cli.cli_common import describe_exit  # noqa: E402  (the repo on the path first)

PTB = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "ptb")


def build_ptb_bundle(work: str) -> str:
    """An untrained PTB-shaped bundle: the vocabulary from ptb.train.txt as preprocessing would build it."""
    from collections import Counter

    from nextword import config as config_lib
    from nextword.artifacts.data_dir import Manifest
    from nextword.config import ModelConfig
    from nextword.text import contract
    from trainer.export import export_bundle
    from trainer.model import build_model

    config = config_lib.load(os.path.join(os.path.dirname(__file__), "..", "configs", "ptb.yaml"))
    settings = config.preprocess.text
    counts = Counter()
    with open(os.path.join(PTB, "ptb.train.txt"), encoding="utf-8") as f:
        for line in f:
            counts.update(contract.line_tokens(line, settings))
    tokens = contract.build_vocab(counts, settings)
    data_dir = os.path.join(work, "data")
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, contract.VOCAB_FILE), "w", encoding="utf-8") as f:
        f.write(contract.vocab_text(tokens))
    window = config.preprocess.window_length
    manifest = Manifest(
        created_unix=0,
        corpus_glob="",
        text=settings,
        window_length=window,
        record_length=window + 1,
        stride=window,
        pad_id=None,
        vocab_size=len(tokens),
        fingerprint=contract.fingerprint(tokens, settings),
        counts={},
        shards={split: [] for split in contract.SPLITS},
    )  # a data directory of no shards: only the vocabulary and the settings are read
    with open(os.path.join(data_dir, contract.MANIFEST_FILE), "w", encoding="utf-8") as f:
        json.dump(manifest.to_dict(), f)
    # Untied, as the published small model (and the seed loop reloads it as a plain .keras file).
    shape = ModelConfig(embedding_dim=200, units=200, num_layers=2, dropout=0.0, head="full")
    model = build_model(len(tokens), shape)
    model.save(os.path.join(work, "model.keras"))
    return export_bundle(model, data_dir, config, os.path.join(work, "bundle"))


def write_input(path: str, lines: int) -> None:
    with open(os.path.join(PTB, "ptb.test.txt"), encoding="utf-8") as f:
        source = f.read().splitlines()
    with open(path, "w", encoding="utf-8") as f:
        for i in range(lines):
            f.write(source[i % len(source)] + "\n")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_beam(args) -> dict:
    from batch_predict import pipeline

    argv = [
        "--set", f"predict.bundle_dir={args.bundle}", "--set", f"predict.input_glob={args.input}",
        "--set", f"predict.output_dir={args.out}", "--set", f"predict.mode={args.mode}",
        "--set", f"predict.max_batch_tokens={args.max_batch_tokens}", *args.beam_args.split(),
    ]  # fmt: skip
    started, cpu_started = time.perf_counter(), time.process_time()
    summary = pipeline.run(argv)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return {"lines": summary["input_lines"], "records": summary["output_records"], "seconds": seconds,
            "cpu_seconds": cpu_seconds, "peak_rss_mb": peak_rss_mb()}  # fmt: skip


def child_runinference(args) -> dict:
    """The same lines through Beam's RunInference with the bundle's model handler, as a user's own pipeline
    would run it: read lines, RunInference, write the records as JSON lines."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import RunInference

    from batch_predict.handler import BundleModelHandler
    from nextword.beam.pipelines import pipeline_options

    shutil.rmtree(args.out, ignore_errors=True)  # the bench's own folder: no shard of an earlier run is counted
    handler = BundleModelHandler(args.bundle, mode=args.mode, max_batch_tokens=args.max_batch_tokens)
    started, cpu_started = time.perf_counter(), time.process_time()
    with beam.Pipeline(options=pipeline_options(args.beam_args.split())) as p:
        records = p | beam.io.ReadFromText(args.input) | RunInference(handler)
        _ = records | beam.Map(json.dumps) | beam.io.WriteToText(os.path.join(args.out, "records"))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    written = 0
    for name in os.listdir(args.out):
        if name.startswith("records"):
            with open(os.path.join(args.out, name)) as f:
                written += sum(1 for _ in f)
    return {"records": written, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak_rss_mb()}


def child_signature(args) -> dict:
    import threading

    import tensorflow as tf

    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)

    from batch_predict import core
    from batch_predict.predictor import LoadedBundle
    from nextword.artifacts.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    model = LoadedBundle(args.bundle)
    want_next, want_score = core.MODES[args.mode]
    with open(args.input, "rb") as f:
        raw_lines = f.read().split(b"\n")[:-1]
    prepared = [
        core.prepare_line(raw, False, bundle.context_tokens, args.mode, bundle.settings, 10**9) for raw in raw_lines
    ]
    # The best pre-made batches: the whole input grouped by length within the token budget
    # (the job can only group within each batch it streams).
    groups = core.length_groups([line.cost for line in prepared], args.max_batch_tokens)
    batches = [[prepared[i].text for i in group] for group in groups]

    from nextword.text import contract

    # The bare `score` signature, which the job also calls unless predict.per_token asks for score_tokens.
    bare_score = tf.saved_model.load(args.bundle).signatures[contract.SIGNATURE_SCORE]

    def call(texts):
        if want_next:
            model.next_words(texts, 5)
        if want_score:
            bare_score(text=tf.constant(texts))

    def call_all(some_batches):
        for texts in some_batches:
            call(texts)

    call(batches[0])  # warm-up: the first call builds the graph's kernels
    runs = []
    for _ in range(args.repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        callers = [threading.Thread(target=call_all, args=(batches[i :: args.calls],)) for i in range(args.calls)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        runs.append({"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started})
    if not args.loop_lines:
        return {"lines": len(prepared), "batches": len(batches), "runs": runs}
    loop_texts = [line.text for line in prepared[: args.loop_lines]]
    started = time.perf_counter()
    for text in loop_texts:
        call([text])
    loop_s = time.perf_counter() - started
    result = {"lines": len(prepared), "batches": len(batches), "runs": runs,
              "signature_loop_lines_per_s": len(loop_texts) / loop_s, "loop_lines": len(loop_texts)}  # fmt: skip
    if args.keras_model:
        result["seed_loop_lines_per_s"] = seed_loop(args.keras_model, bundle, loop_texts)
    return result


def seed_loop(keras_model: str, bundle, texts: list[str]) -> float:
    """Lines/s of the seed's way: one context per model.predict, the whole vocabulary sorted."""
    import keras
    import numpy as np

    import trainer.model  # noqa: F401  (registers the model's custom layers)
    from nextword.text import contract

    model = keras.saving.load_model(keras_model)
    vocab = contract.Vocabulary(bundle.tokens)
    started = time.perf_counter()
    for text in texts:
        ids = vocab.ids(contract.tokenize(text, bundle.settings))
        context = ([contract.EOS_ID] if bundle.settings.eos else []) + ids
        if not context:
            continue
        logits = model.predict(np.array([context[-bundle.context_tokens :]], dtype=np.int32), verbose=0)[0, -1]
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        _ = [(vocab.tokens[i], probs[i]) for i in np.argsort(-probs)[:5]]
    return len(texts) / (time.perf_counter() - started)


def run_child(kind: str, **kwargs) -> dict:
    argv = [sys.executable, os.path.abspath(__file__), f"--child={kind}"]
    argv += [f"--{key.replace('_', '-')}={value}" for key, value in kwargs.items()]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {kind} child {describe_exit(done.returncode)}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def best(runs: list[dict], lines: int) -> dict:
    """The fastest of repeated runs (the least disturbed by other work on the machine)."""
    run = min(runs, key=lambda r: r["seconds"])
    return {**run, "lines_per_s": lines / run["seconds"], "lines_per_cpu_s": lines / run["cpu_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--mode", default="next", choices=["next", "score", "both"])
    parser.add_argument("--bundle", default="")
    parser.add_argument("--work", default="runs/bench/predict")
    parser.add_argument("--max-batch-tokens", type=int, default=8192)
    parser.add_argument("--loop-lines", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each measurement; the fastest counts")
    parser.add_argument("--beam-args", default="", help="Beam options for the job, e.g. '--direct_num_workers=2'")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--input", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--keras-model", default="", help=argparse.SUPPRESS)
    parser.add_argument("--intra-op-threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        children = {"beam": child_beam, "runinference": child_runinference, "signature": child_signature}
        print(json.dumps(children[args.child](args)))
        return

    os.makedirs(args.work, exist_ok=True)
    bundle = args.bundle or build_ptb_bundle(args.work)
    sizes = [args.lines // 4, args.lines]
    inputs = {size: os.path.join(args.work, f"input-{size}.txt") for size in sizes}
    for size, path in inputs.items():
        write_input(path, size)
    common = {"bundle": bundle, "mode": args.mode, "max_batch_tokens": args.max_batch_tokens}
    beam_runs: dict[int, list] = {size: [] for size in sizes}
    for _ in range(args.repeats):  # interleaved, so a busy spell on the machine does not hit one size only
        for size in sizes:
            out = os.path.join(args.work, f"out-{size}")
            beam_runs[size].append(run_child("beam", input=inputs[size], out=out, beam_args=args.beam_args, **common))
            print(f"beam {size} lines: {json.dumps(beam_runs[size][-1])}", flush=True)
    runinference_runs = []
    for _ in range(args.repeats):
        out = os.path.join(args.work, "out-runinference")
        runinference_runs.append(run_child("runinference", input=inputs[args.lines], out=out,
                                           beam_args=args.beam_args, **common))  # fmt: skip
        print(f"RunInference {args.lines} lines: {json.dumps(runinference_runs[-1])}", flush=True)
    keras_model = "" if args.bundle else os.path.join(args.work, "model.keras")
    signature = run_child("signature", input=inputs[args.lines], loop_lines=args.loop_lines, repeats=args.repeats,
                          keras_model=keras_model, **common)  # fmt: skip
    one_thread = run_child("signature", input=inputs[args.lines], loop_lines=0, repeats=args.repeats,
                           intra_op_threads=1, **common)  # fmt: skip
    two_calls = run_child("signature", input=inputs[args.lines], loop_lines=0, repeats=args.repeats,
                          intra_op_threads=1, calls=2, **common)  # fmt: skip
    small, beam = best(beam_runs[sizes[0]], sizes[0]), best(beam_runs[args.lines], args.lines)
    ceiling = best(signature["runs"] + one_thread["runs"], args.lines)
    two_calls_best = best(two_calls["runs"], args.lines)
    runinference = best(runinference_runs, args.lines)
    marginal = (args.lines - sizes[0]) / (beam["seconds"] - small["seconds"])
    results = {
        "mode": args.mode, "bundle": bundle, "max_batch_tokens": args.max_batch_tokens, "beam_args": args.beam_args,
        "beam": {size: beam_runs[size] for size in sizes}, "signature": signature,
        "signature_one_thread": one_thread, "signature_two_calls": two_calls,
        "beam_lines_per_s": beam["lines_per_s"], "ceiling_lines_per_s": ceiling["lines_per_s"],
        "two_calls_lines_per_s": two_calls_best["lines_per_s"],
        "beam_vs_two_calls": beam["lines_per_s"] / two_calls_best["lines_per_s"],
        "runinference": runinference_runs, "runinference_lines_per_s": runinference["lines_per_s"],
        "runinference_vs_ceiling": runinference["lines_per_s"] / ceiling["lines_per_s"],
        "runinference_vs_beam": runinference["lines_per_s"] / beam["lines_per_s"],
        "beam_vs_ceiling": beam["lines_per_s"] / ceiling["lines_per_s"],
        # CPU time is what the job spends; wall time also depends on whatever else the machine runs.
        "beam_vs_ceiling_cpu": beam["lines_per_cpu_s"] / ceiling["lines_per_cpu_s"],
        "beam_marginal_lines_per_s": marginal, "beam_marginal_vs_ceiling": marginal / ceiling["lines_per_s"],
        "beam_vs_signature_loop": beam["lines_per_s"] / signature["signature_loop_lines_per_s"],
        "beam_vs_seed_loop": beam["lines_per_s"] / signature.get("seed_loop_lines_per_s", float("nan")),
        "peak_rss_mb": {size: max(r["peak_rss_mb"] for r in beam_runs[size]) for size in sizes},
    }  # fmt: skip
    with open(os.path.join(args.work, "predict_bench.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    rss = ", ".join(f"{mb:.0f} MB at {size} lines" for size, mb in results["peak_rss_mb"].items())
    print(
        f"\n{args.lines} lines, mode {args.mode}: beam {beam['lines_per_s']:.0f} lines/s, "
        f"ceiling {ceiling['lines_per_s']:.0f} lines/s ({results['beam_vs_ceiling']:.2f}x; "
        f"per CPU second {results['beam_vs_ceiling_cpu']:.2f}x; marginal {marginal:.0f} lines/s, "
        f"{results['beam_marginal_vs_ceiling']:.2f}x); two calls at once {two_calls_best['lines_per_s']:.0f} "
        f"lines/s ({results['beam_vs_two_calls']:.2f}x); signature one line at a time "
        f"{signature['signature_loop_lines_per_s']:.1f} lines/s ({results['beam_vs_signature_loop']:.1f}x); "
        f"seed-style loop {signature.get('seed_loop_lines_per_s', float('nan')):.1f} lines/s "
        f"({results['beam_vs_seed_loop']:.0f}x); RunInference {runinference['lines_per_s']:.0f} lines/s "
        f"({results['runinference_vs_ceiling']:.2f}x the ceiling); peak RSS {rss}"
    )


if __name__ == "__main__":
    main()
