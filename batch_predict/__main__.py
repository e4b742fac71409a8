"""`python -m batch_predict` and `nextword predict`.

    nextword predict "some of them looks like"        # top-k next words, as the seed printed
    nextword predict --config configs/demo.yaml         # the Beam job over predict.input_glob

Text arguments come before any option; with none, the Beam job runs and
unknown options go to Beam (e.g. --runner DataflowRunner).
"""

from __future__ import annotations

import sys

from nextword import cli, cli_common, cli_parsers, console


def split_texts(argv: list[str]) -> tuple[list[str], list[str]]:
    """(texts, options): the texts are the arguments before the first option."""
    for i, arg in enumerate(argv):
        if arg.startswith("-"):
            return argv[:i], argv[i:]
    return list(argv), []


def predict_texts(texts: list[str], argv: list[str]) -> None:
    """Prints the top-k next words of each text, then `Prediction: <text> <most likely word>`."""
    from batch_predict.handler import LoadedBundle

    config, extra = cli_common.parse("predict", argv)
    if extra:
        raise ValueError(f"{' '.join(extra)}: unknown option for text predictions (Beam options need no text)")
    cfg = config.predict
    out = LoadedBundle(cfg.bundle_dir).next_words(texts, cfg.top_k)
    empty = []
    for text, words, probs in zip(texts, out["words"], out["probs"], strict=True):
        words = [w.decode("utf-8") for w in words]
        if not words[0]:  # the bundle's explicit "no context" answer
            empty.append(text)
            continue
        print(text)
        for word, prob in zip(words, probs, strict=True):
            print(f"  {word:<24} {prob:.4f}")
        print(f"Prediction: {text} {words[0]}")
    if empty:
        raise ValueError(f"{empty[0]!r}: no word left after normalization to predict from")


def _run(argv: list[str]) -> None:
    texts, options = split_texts(argv)
    if texts:
        predict_texts(texts, options)
        return
    from batch_predict.pipeline import run

    run(options)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if cli_parsers.wants_help(argv):
        cli_parsers.stage("predict").print_help()
        return 0
    console.start(argv)
    return cli.guarded(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
