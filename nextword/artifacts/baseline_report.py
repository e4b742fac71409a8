"""baseline.json: the n-gram baseline's figures, and how a run's metrics compare with them.

Written by the baseline stage (`nextword baseline`, baseline/pipeline.py) as
its commit marker, read by the trainer (metrics.json's "baseline" section),
by `nextword cloud runs` and by the promotion gate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

from nextword import storage
from nextword.artifacts import versioned

FORMAT_VERSION = 1
REPORT_FILE = "baseline.json"
ARPA_FILE = "model.arpa"
# The trainer's two evaluation protocols (trainer/inputs.py): context carried
# across consecutive windows (train.carry_state) or reset at every window.
PROTOCOLS = ("carried", "window")
RERUN = "rerun `nextword baseline`"


@dataclass(frozen=True)
class BaselineReport(versioned.Versioned):
    order: int
    data_dir: str
    data_fingerprint: str
    manifest_sha256: str  # of the manifest it was estimated from: a rerun of preprocessing makes it stale
    train_tokens: int
    ngrams: list[int]  # entries per order, as in the ARPA header
    discounts: list[list[float]]  # (D1, D2, D3+) per order
    fallback_orders: list[int]  # orders where KenLM's fallback discounts were used
    # protocol -> split -> {"perplexity", "loss", "tokens", "unknown_tokens", "unknown_rate"}
    evaluation: dict[str, dict[str, dict[str, float]]]
    count_seconds: float
    estimate_seconds: float
    format_version: int = FORMAT_VERSION

    READS: ClassVar[int] = FORMAT_VERSION
    RERUN: ClassVar[str] = RERUN


def write(report: BaselineReport, folder: str) -> str:
    path = storage.join(folder, REPORT_FILE)
    storage.write_text(path, json.dumps(report.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path


def read(folder: str) -> BaselineReport | None:
    """The report in `folder`, or None when the baseline has not been run there."""
    path = storage.join(folder, REPORT_FILE)
    if not storage.exists(path):
        return None
    return BaselineReport.from_dict(versioned.read_json(path, RERUN), path)


def compare(report: BaselineReport | None, metrics: dict, carried: bool, manifest_sha256: str) -> dict:
    """metrics.json's "baseline" section: the n-gram's figures on the LSTM's tokens and the ratios.

    `metrics` has the LSTM's "valid" and "test" sections. The ratio is LSTM
    perplexity / baseline perplexity (below 1: the LSTM is better).
    """
    if report is None:
        return {"status": "missing", "hint": "run `nextword baseline --config ...` on train.data_dir"}
    if report.manifest_sha256 != manifest_sha256:
        return {"status": "stale", "hint": "preprocessing ran again since; rerun `nextword baseline`"}
    protocol = "carried" if carried else "window"
    section: dict = {"status": "ok", "order": report.order, "protocol": protocol}
    for split in ("valid", "test"):
        ngram = report.evaluation[protocol][split]
        lstm = metrics[split]
        if ngram["tokens"] != lstm["tokens"]:
            # After hours of training, a report to read, never a crash: the figures are not comparable.
            return {
                "status": "mismatch",
                "hint": f"baseline {split}: {ngram['tokens']} tokens scored where the LSTM scored "
                f"{lstm['tokens']}; rerun `nextword baseline`",
            }
        section[split] = dict(ngram) | {"ratio": lstm["perplexity"] / ngram["perplexity"]}
    return section
