"""nextword: an LSTM next-word language model, from corpus to bulk prediction.

The Python API. Importing `nextword` loads neither TensorFlow nor Beam; each function loads what it uses.

    import nextword

    model = nextword.load("runs/demo/model/bundle")
    model.next_words(["to be or not to"], k=5)              # [[("be", 0.41), ...]] per text
    model.score(["to be or not to be"])                       # [LineScore(log_prob, tokens, ...)] per text
    model.score(lines, context="document", per_token=True)    # the lines in order, as one document
    model.generate("to be", max_words=10, temperature=0.8, top_k=40, seed=1)

    nextword.preprocess("configs/demo.yaml", overrides=["preprocess.num_shards=8"])
    nextword.baseline("configs/demo.yaml")
    nextword.train(config)                                    # a nextword.Config, or a YAML path
    nextword.predict("configs/demo.yaml", beam_args=["--runner", "DataflowRunner"])

Each stage function is its command (`nextword preprocess|baseline|train|predict`): same config, same
outputs, and it returns the same summary as a dict. Errors are exceptions (ValueError, OSError) with the
one-line message the command would print.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from nextword.config import Config, to_yaml

if TYPE_CHECKING:
    from batch_predict.predictor import Predictor

__all__ = ["Config", "load", "preprocess", "baseline", "train", "predict"]


def load(bundle_dir: str, max_batch_tokens: int = 8192) -> Predictor:
    """The exported bundle (a folder, local or gs://) as a Predictor: next_words, score, generate.

    `max_batch_tokens` bounds one model call's padded token positions (memory per call).
    """
    from batch_predict.predictor import Predictor

    return Predictor.load(bundle_dir, max_batch_tokens)


def preprocess(config: Config | str, overrides: Sequence[str] = (), beam_args: Sequence[str] = ()) -> dict:
    """Corpus -> vocabulary and windows (`nextword preprocess`); returns the manifest as a dict."""
    from beam_preprocess import pipeline

    return _run_stage(pipeline.run, config, overrides, beam_args)


def baseline(config: Config | str, overrides: Sequence[str] = (), beam_args: Sequence[str] = ()) -> dict:
    """The Kneser-Ney n-gram baseline of the training split (`nextword baseline`); returns baseline.json."""
    from baseline import pipeline

    return _run_stage(pipeline.run, config, overrides, beam_args)


def train(config: Config | str, overrides: Sequence[str] = ()) -> dict:
    """Trains (or resumes) and exports the bundle (`nextword train`); returns metrics.json as a dict."""
    from trainer import main

    return _run_stage(main.run, config, overrides, ())


def predict(config: Config | str, overrides: Sequence[str] = (), beam_args: Sequence[str] = ()) -> dict:
    """Scores predict.input_glob with the bundle (`nextword predict`); returns summary.json as a dict."""
    from batch_predict import pipeline

    return _run_stage(pipeline.run, config, overrides, beam_args)


def _run_stage(run: Callable[[list[str]], dict], config: Config | str, overrides, beam_args) -> dict:
    with _config_file(config) as path:
        argv = ["--config", path]
        for override in overrides:
            argv += ["--set", override]
        return run([*argv, *beam_args])


@contextlib.contextmanager
def _config_file(config: Config | str) -> Iterator[str]:
    """A path for the stage's --config: the given one, or a Config written as YAML to a temporary file."""
    if isinstance(config, str):
        yield config
        return
    if not isinstance(config, Config):
        raise TypeError(f"config must be a nextword.Config or a path, not {type(config).__name__}")
    with tempfile.TemporaryDirectory(prefix="nextword-config-") as folder:
        path = os.path.join(folder, "config.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(to_yaml(config))
        yield path
