"""`nextword cloud`: launch files, the scheduled training run, and the runs on Cloud Storage.

nextword cloud render  --config configs/cloud.yaml --out build/cloud   # specs and scripts (cloud_specs.py)
nextword cloud train   --config gs://BUCKET/nextword/config.yaml       # what Vertex AI runs (trainer/cloud_train.py)
nextword cloud runs    --config ...                                    # runs, test perplexity, LATEST
nextword cloud promote --config ... --run-dir gs://.../runs/2025-06-02-123  # re-check one run against the bar
nextword cloud latest  --config ...                                    # the promoted bundle (for predict)
"""

from __future__ import annotations

import json
import os
import sys

from nextword import cli, cloud, storage
from nextword import config as config_lib
from nextword.artifacts.model_dir import BUNDLE_DIR, METRICS_FILE
from nextword.cli import cli_parsers, console
from nextword.cloud import cloud_specs, registry, runs
from nextword.config import Config

# `cloud train` runs the trainer: nextword/cli dispatches it to trainer/cloud_train.py, as a stage.
COMMANDS = tuple(name for name in cli_parsers.CLOUD_SUMMARIES if name != "train")


def _flat_metrics(metrics: dict) -> dict[str, float]:
    """metrics.json {"test": {"perplexity": ...}, ...} -> {"test_perplexity": ...}, the bar's names.

    With an n-gram baseline on the same tokens: baseline_test_perplexity and
    baseline_ratio (the run's test perplexity / the baseline's).
    """
    flat = {
        f"{split}_{name}": float(value)
        for split in ("valid", "test")
        for name, value in metrics.get(split, {}).items()
        if isinstance(value, int | float)
    }
    baseline = metrics.get("baseline", {})
    if baseline.get("status") == "ok":
        flat["baseline_test_perplexity"] = float(baseline["test"]["perplexity"])
        flat["baseline_ratio"] = float(baseline["test"]["ratio"])
    return flat


def latest_path(config: Config) -> str:
    return storage.join(config.cloud.runs_dir, runs.LATEST_FILE)


def promote(config: Config, run_dir: str) -> bool:
    """Promotes `run_dir` to LATEST if its metrics.json passes the config's bar."""
    path = storage.join(run_dir, METRICS_FILE)
    if not storage.exists(path):
        raise FileNotFoundError(f"{path}: no metrics; the run has not finished its evaluation")
    metrics = _flat_metrics(json.loads(storage.read_text(path)))
    promoted = runs.promote_latest(run_dir, latest_path(config), metrics, cloud.promotion_bar(config))
    if promoted and config.cloud.registry.model_id:  # the registry's alias follows LATEST
        registry.publish(config, run_dir, storage.join(run_dir, BUNDLE_DIR), metrics["test_perplexity"])
    return promoted


def _print_runs(config: Config) -> None:
    cloud.require(config, "cloud.runs_dir")
    latest = runs.read_latest(latest_path(config)) or {}
    for run_dir in runs.list_runs(config.cloud.runs_dir):
        path = storage.join(run_dir, METRICS_FILE)
        metrics = _flat_metrics(json.loads(storage.read_text(path))) if storage.exists(path) else {}
        perplexity = f"{metrics['test_perplexity']:.4g}" if "test_perplexity" in metrics else "-"
        ratio = f"{metrics['baseline_ratio']:.3f}" if "baseline_ratio" in metrics else "-"
        mark = "  LATEST" if latest.get("run_dir") == run_dir else ""
        print(f"{run_dir}\ttest_perplexity={perplexity}\tbaseline_ratio={ratio}{mark}")


def _latest_bundle(config: Config) -> str:
    cloud.require(config, "cloud.runs_dir")
    latest = runs.read_latest(latest_path(config))
    if latest is None:
        raise FileNotFoundError(f"{latest_path(config)}: no run has been promoted yet (nextword cloud train)")
    return latest["bundle_dir"]


def run(argv: list[str]) -> int:
    command, rest = argv[0], argv[1:]
    args = cli_parsers.cloud(command).parse_args(rest)
    config = config_lib.load(args.config, args.overrides)
    if command == "render":
        os.makedirs(args.out, exist_ok=True)
        local_config = os.path.abspath(args.config) if args.config else "CONFIG.yaml"
        for name, text in cloud_specs.render(config, local_config).items():
            storage.write_text(os.path.join(args.out, name), text)  # a new file renamed: never through a link
            print(os.path.join(args.out, name))
    elif command == "runs":
        _print_runs(config)
    elif command == "promote":
        print("promoted" if promote(config, args.run_dir.rstrip("/")) else "not promoted (see the warning above)")
    else:
        print(_latest_bundle(config))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: nextword cloud {{{', '.join(cli_parsers.CLOUD_SUMMARIES)}}} [options]", file=sys.stderr)
        return 2
    console.start(argv[1:])
    return cli.guarded(run, argv)


if __name__ == "__main__":
    sys.exit(main())
