"""Quality against the n-gram baseline on several English corpora: the table the README quotes.

    .venv/bin/python bench/quality.py                          # every corpus, the defaults (only paths set)
    .venv/bin/python bench/quality.py --corpus shakespeare --recipe tuned

For each corpus: preprocess (the corpus's text settings, everything else
default), the Kneser-Ney baseline (`nextword baseline`), then `nextword train`
with the recipe's settings. Both models are scored on exactly the same tokens
(the trainer's metrics.json "baseline" section checks the counts). One JSON per
(corpus, recipe) in bench/results/quality/, and a table on stdout.

Corpora (none shipped with the project; they are read where they lie):
- shakespeare: ../shared/data/shakespeare/tinyshakespeare.txt, seed normalization,
  min count 3, the default hash split of 20-line blocks;
- ptb-seed: the Penn Treebank's own train/valid/test files read as raw text with
  the seed normalization and min count 3 (`<unk>` becomes `unk`, no `<eos>`);
- vim-manual: the Vim user manual (/usr/share/vim/vim90/doc/usr_*.txt, 36
  files of technical English prose), seed normalization, min count 3, default split;
- vim-reference: Vim's reference manual files a* to o* (/usr/share/vim/vim90/doc/[a-o]*.txt, none of
  the user manual's), about 380k words: a corpus between 160k and 880k training tokens, where
  trainer/sizing.py switches sizes; settings as vim-manual.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nextword import config as config_lib  # noqa: E402
from nextword.artifacts.data_dir import read_manifest  # noqa: E402
from nextword.cli import cli_common  # noqa: E402

PTB = "../shared/data/ptb"
CORPORA = {
    "shakespeare": ["preprocess.corpus_glob=../shared/data/shakespeare/tinyshakespeare.txt"],
    "ptb-seed": [
        f"preprocess.split.train_glob={PTB}/ptb.train.txt",
        f"preprocess.split.valid_glob={PTB}/ptb.valid.txt",
        f"preprocess.split.test_glob={PTB}/ptb.test.txt",
    ],
    "vim-manual": ["preprocess.corpus_glob=/usr/share/vim/vim90/doc/usr_*.txt"],
    "vim-reference": ["preprocess.corpus_glob=/usr/share/vim/vim90/doc/[a-o]*.txt"],
}
# Settings beyond the paths. "defaults": none, what a new user gets (sized by the training split,
# trainer/sizing.py); "large-size": the size the defaults take from 500k training tokens, forced.
RECIPES: dict[str, list[str]] = {
    "defaults": [],
    "large-size": ["train.per_replica_batch_size=32", "train.model.units=256", "train.model.dropout=0.5"],
}
RESULTS = REPO / "bench" / "results" / "quality"


def _sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def run_one(corpus: str, recipe: str, work: Path, fresh: bool, extra: list[str] = (), tag: str = "") -> dict:
    data_dir, model_dir = work / corpus / "data", work / corpus / f"{recipe}{tag}"
    paths = [f"preprocess.output_dir={data_dir}", f"train.data_dir={data_dir}", f"train.model_dir={model_dir}"]
    overrides = CORPORA[corpus] + paths + RECIPES[recipe] + list(extra)
    started = time.monotonic()
    if fresh or not (data_dir / "manifest.json").exists():
        from beam_preprocess import pipeline

        pipeline.run(_sets(overrides))
    if fresh or not (data_dir / "baseline" / "baseline.json").exists():
        from baseline import pipeline as baseline_pipeline

        baseline_pipeline.run(_sets(overrides))
    prepared = time.monotonic()
    if fresh and model_dir.exists():
        shutil.rmtree(model_dir)
    from trainer.main import train

    metrics = train(config_lib.load(None, overrides))
    manifest = read_manifest(str(data_dir))
    baseline = metrics["baseline"]
    trained = metrics["train"]
    train_tokens = manifest.count("targets", "train")
    # What the bundle applies in document context by default: the LSTM with the cache and the n-gram that the
    # training's final evaluation chose on valid (train.mixtures, docs/quality.md), on the same test tokens.
    mixtures = {name: figures["perplexity"] for section in ("cache", "ngram")
                for name, figures in metrics.get(section, {}).get("test", {}).items()}  # fmt: skip
    bundle = mixtures.get("lstm_cache_ngram", mixtures.get("lstm_cache", metrics["test"]["perplexity"]))
    return {
        "corpus": corpus,
        "recipe": recipe,
        "overrides": RECIPES[recipe] + list(extra),
        "vocab_size": manifest.vocab_size,
        "train_tokens": train_tokens,
        "test_tokens": metrics["test"]["tokens"],
        "baseline_test_perplexity": baseline["test"]["perplexity"],
        "baseline_valid_perplexity": baseline["valid"]["perplexity"],
        "lstm_test_perplexity": metrics["test"]["perplexity"],
        "lstm_valid_perplexity": metrics["valid"]["perplexity"],
        "ratio": baseline["test"]["ratio"],
        "beats_baseline_by_15pct": baseline["test"]["ratio"] <= 0.85,
        "mixtures_test_perplexity": mixtures,
        "bundle_document_test_perplexity": bundle,
        "bundle_document_ratio": bundle / baseline["test"]["perplexity"],
        "epochs": trained["epochs"],
        "best_epoch": trained["best_epoch"],
        "stopped_by": trained["stopped_by"],
        "train_seconds": trained["train_seconds"],
        "train_seconds_per_1m_tokens": round(trained["train_seconds"] / train_tokens * 1e6, 1),
        "tokens_per_second": round(train_tokens * trained["epochs"] / trained["train_seconds"], 1),
        "prepare_seconds": round(prepared - started, 1),
        "cpu_cores": len(os.sched_getaffinity(0)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", action="append", choices=sorted(CORPORA), help="default: all")
    p.add_argument("--recipe", default="defaults", choices=sorted(RECIPES))
    p.add_argument("--work", default="runs/quality", help="data and models go here")
    p.add_argument("--fresh", action="store_true", help="preprocess, count and train again")
    p.add_argument("--tag", default="", help="suffix of the model folder and result file, for experiments")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="beyond the recipe, e.g. train.time_budget_s=3600 (recorded in the JSON)")  # fmt: skip
    args = p.parse_args()
    os.chdir(REPO)
    cli_common.setup_logging()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    for corpus in args.corpus or list(CORPORA):
        tag = f"-{args.tag}" if args.tag else ""
        row = run_one(corpus, args.recipe, Path(args.work), args.fresh, args.overrides, tag)
        (RESULTS / f"{corpus}-{args.recipe}{tag}.json").write_text(json.dumps(row, indent=2) + "\n")
        rows.append(row)
    print(f"{'corpus':12} {'recipe':9} {'KN-5 test':>9} {'LSTM test':>9} {'ratio':>6} {'bundle':>7} {'ratio':>6} "
          f"{'epochs':>6} {'s/1M tok':>9}")  # fmt: skip
    for r in rows:
        print(
            f"{r['corpus']:12} {r['recipe']:9} {r['baseline_test_perplexity']:9.2f} {r['lstm_test_perplexity']:9.2f} "
            f"{r['ratio']:6.3f} {r['bundle_document_test_perplexity']:7.2f} {r['bundle_document_ratio']:6.3f} "
            f"{r['epochs']:6.1f} {r['train_seconds_per_1m_tokens']:9.0f}"
        )


if __name__ == "__main__":
    main()
