"""`python -m batch_predict` and `nextword predict`.

    nextword predict "some of them looks like"        # top-k next words, as the seed printed
    nextword predict notes.txt --context document     # every line's perplexity, the state carried across lines
    nextword predict --config configs/demo.yaml         # the Beam job over predict.input_glob

Text arguments come before any option; one that names an existing file is
scored line by line (the Beam job on that file, in `predict.context`). With
none, the Beam job runs over predict.input_glob and unknown options go to
Beam (e.g. --runner DataflowRunner). `--context C` is `--set predict.context=C`.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import tempfile

from nextword import cli
from nextword.artifacts.predictions import PredictionRecord, Summary
from nextword.beam import pipelines
from nextword.cli import cli_parsers


def split_texts(argv: list[str]) -> tuple[list[str], list[str]]:
    """(texts, options): the texts are the arguments before the first option."""
    for i, arg in enumerate(argv):
        if arg.startswith("-"):
            return argv[:i], argv[i:]
    return list(argv), []


def predict_texts(texts: list[str], argv: list[str]) -> None:
    """Prints the top-k next words of each text, then `Prediction: <text> <most likely word>`."""
    from batch_predict.predictor import Predictor

    config, extra = pipelines.parse("predict", argv)
    if extra:
        raise ValueError(f"{' '.join(extra)}: unknown option for text predictions (Beam options need no text)")
    cfg = config.predict
    found = Predictor.load(cfg.bundle_dir, cfg.max_batch_tokens).next_words(texts, cfg.top_k)
    empty = []
    for text, pairs in zip(texts, found, strict=True):
        if not pairs:  # no context to predict from
            empty.append(text)
            continue
        print(text)
        for word, prob in pairs:
            print(f"  {word:<24} {prob:.4f}")
        print(f"Prediction: {text} {pairs[0][0]}")
    if empty:
        raise ValueError(f"{empty[0]!r}: no word left after normalization to predict from")


def context_as_override(options: list[str]) -> list[str]:
    """`--context C` (or `--context=C`) -> `--set predict.context=C`; the other options as they are."""
    out, rest = [], list(options)
    while rest:
        arg = rest.pop(0)
        if arg == "--context" and rest:
            out += ["--set", f"predict.context={rest.pop(0)}"]
        elif arg.startswith("--context="):
            out += ["--set", f"predict.context={arg.partition('=')[2]}"]
        else:
            out.append(arg)
    return out


def score_file(path: str, options: list[str]) -> None:
    """Prints each line's perplexity and word count beside its text, then the file's perplexity.

    The Beam job (mode score, this machine's DirectRunner) on the one file, into a temporary folder:
    the same records as a job over predict.input_glob, context and rejects included.
    """
    from batch_predict import pipeline

    with tempfile.TemporaryDirectory() as out:
        where = ["--set", f"predict.input_glob={glob.escape(path)}", "--set", f"predict.output_dir={out}"]
        summary = Summary.from_dict(pipeline.run([*options, *where, "--set", "predict.mode=score"]), out)
        records = []
        for shard in summary.output_shards:
            with open(os.path.join(out, shard), encoding="utf-8") as f:
                records += [PredictionRecord.from_dict(json.loads(line), shard) for line in f]
    with open(path, "rb") as f:
        texts = f.read().decode("utf-8", errors="replace").split("\n")  # lines as the job counts them
    for record in sorted(records, key=lambda r: r.line):
        shown = "-" if record.perplexity is None else f"{record.perplexity:.2f}"
        text = texts[record.line - 1] if record.line <= len(texts) else ""
        print(f"{shown:>10} {record.scored_tokens or 0:>5}  {record.error or text}")
    print(
        f"{path}: perplexity {summary.perplexity} over {summary.scored_tokens} tokens, "
        f"{summary.known_perplexity} without the {summary.unknown_scored_tokens} unknown ones "
        f"({summary.context} context)"
    )


def _run(argv: list[str]) -> None:
    texts, options = split_texts(argv)
    options = context_as_override(options)
    if not texts:
        from batch_predict.pipeline import run

        run(options)
        return
    for path in filter(os.path.isfile, texts):
        score_file(path, options)
    others = [text for text in texts if not os.path.isfile(text)]
    if others:
        predict_texts(others, options)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if cli_parsers.wants_help(argv):
        cli_parsers.stage("predict").print_help()
        return 0
    return cli.run_stage(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
