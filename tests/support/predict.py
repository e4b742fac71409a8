"""Batch-prediction test helpers: inputs along the tiny bundle's chain, job configs, reading the records back."""

from __future__ import annotations

import glob
import json
from pathlib import Path

from nextword import config as config_lib


def chain_words(tiny_bundle, start: int, count: int) -> str:
    """`count` words the tiny model knows, following its chain from word `start`."""
    chain, words, state = tiny_bundle.chain, [], start
    for _ in range(count):
        words.append(chain.words[state])
        state = int(chain.successors[state, 0])
    return " ".join(words)


def job_config(tiny_bundle, tmp_path, input_glob: str, *overrides: str) -> config_lib.Config:
    return config_lib.from_dict(None, [
        f"predict.bundle_dir={tiny_bundle.bundle_dir}", f"predict.input_glob={input_glob}",
        f"predict.output_dir={tmp_path / 'out'}", "predict.max_line_tokens=150000", *overrides,
    ])  # fmt: skip


def predict_argv(config: config_lib.Config) -> list[str]:
    """The `--set predict.KEY=VALUE` arguments that give batch prediction `config`'s predict section."""
    return [arg for k, v in config_lib.section_to_dict(config.predict).items() for arg in ("--set", f"predict.{k}={v}")]


def read_records(output_dir) -> list[dict]:
    paths = sorted(glob.glob(f"{output_dir}/predictions-*.jsonl"))
    return [json.loads(line) for path in paths for line in Path(path).read_text(encoding="utf-8").splitlines()]


def expected_lines(data: bytes) -> list[tuple[int, int, bytes]]:
    """(line number, offset, bytes) of every line of `data`, as batch prediction numbers them."""
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()  # a final newline ends the last line, it starts none
    offsets, position = [], 0
    for piece in pieces:
        offsets.append(position)
        position += len(piece) + 1
    return [(i + 1, offset, piece) for i, (offset, piece) in enumerate(zip(offsets, pieces, strict=True))]
