"""The cloud path end to end on the emulator: every artifact on gs://, as the scheduled Vertex AI job runs it.

preprocess (Beam, gs:// -> gs://) -> `nextword cloud train` (TensorFlow reads the
shards, writes checkpoints and the bundle on gs://; the run is dated and promoted
to LATEST because it passes the bar) -> `nextword cloud latest` -> batch
prediction reading its input and writing its output on gs://.
"""

import json
import os

import pytest

from batch_predict import pipeline as predict_pipeline
from beam_preprocess import pipeline as preprocess_pipeline
from nextword import cli, storage
from nextword.cloud import runs
from nextword.text import contract
from tests.support import synthetic
from tests.support.gcs_emulator import object_names

pytestmark = pytest.mark.e2e

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOUD_YAML = os.path.join(REPO, "configs", "cloud.yaml")
TINY = ["train.per_replica_batch_size=16", "train.model.embedding_dim=16", "train.model.units=16",
        "train.model.dropout=0.0", "train.optimizer.learning_rate=0.02", "train.max_steps=30",
        "train.checkpoint_every_steps=10", "train.strategy=local"]  # fmt: skip


def _sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def test_preprocess_train_promote_predict_on_gcs(gcs_bucket, tmp_path, capsys):
    local = tmp_path / "corpus"
    synthetic.write_corpus(str(local), synthetic.ChainSpec(vocab_size=30, branching=3, seed=5), 2, 3000)
    for path in sorted(local.rglob("*.txt")):
        storage.write_text(f"{gcs_bucket}/corpus/{path.relative_to(local)}", path.read_text())
    data, runs_dir = f"{gcs_bucket}/data", f"{gcs_bucket}/runs"
    common = [f"preprocess.corpus_glob={gcs_bucket}/corpus/**/*.txt", f"preprocess.output_dir={data}",
              "preprocess.window_length=8", "preprocess.stride=8", "preprocess.num_shards=2",
              f"train.data_dir={data}", f"cloud.runs_dir={runs_dir}", "cloud.max_test_perplexity=1000"]  # fmt: skip
    manifest = preprocess_pipeline.run(["--config", CLOUD_YAML, *_sets(common)])
    assert manifest["counts"]["windows"]["test"] > 0

    assert cli.main(["cloud", "train", "--config", CLOUD_YAML, *_sets(common + TINY)]) == 0
    (run_dir,) = runs.list_runs(runs_dir)
    assert os.path.basename(run_dir).startswith("20") and "-local" in run_dir  # YYYY-MM-DD-<job id>
    artifacts = set(object_names(run_dir))
    assert {"metrics.json", "history.json", "config.yaml", "checkpoints/checkpoint", "bundle/saved_model.pb",
            f"bundle/{contract.BUNDLE_META_DIR}/{contract.BUNDLE_INFO_FILE}"} <= artifacts  # fmt: skip
    metrics = json.loads(storage.read_text(f"{run_dir}/metrics.json"))
    latest = runs.read_latest(f"{runs_dir}/{runs.LATEST_FILE}")
    assert latest["run_dir"] == run_dir and latest["metrics"]["test_perplexity"] == metrics["test"]["perplexity"]

    # A stricter bar: the same run is not promoted again, LATEST stays as it was.
    capsys.readouterr()
    assert cli.main(["cloud", "promote", "--config", CLOUD_YAML, "--run-dir", run_dir,
                     *_sets(common + ["cloud.max_test_perplexity=1.0001"])]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip() == "not promoted (see the warning above)"
    assert runs.read_latest(f"{runs_dir}/{runs.LATEST_FILE}") == latest
    assert cli.main(["cloud", "runs", "--config", CLOUD_YAML, *_sets(common)]) == 0
    assert capsys.readouterr().out.strip().endswith("LATEST")

    assert cli.main(["cloud", "latest", "--config", CLOUD_YAML, *_sets(common)]) == 0
    bundle_dir = capsys.readouterr().out.strip()
    assert bundle_dir == f"{run_dir}/bundle"
    lines = ["w1 w2 w3 w4", "", "w5 w6 w7 w8 w9 w10 w11 w12 w13"]
    storage.write_text(f"{gcs_bucket}/predict/in.txt", "\n".join(lines) + "\n")
    summary = predict_pipeline.run(["--config", CLOUD_YAML, *_sets(common + [
        f"predict.bundle_dir={bundle_dir}", f"predict.input_glob={gcs_bucket}/predict/*.txt",
        f"predict.output_dir={gcs_bucket}/predict/out"])])  # fmt: skip
    assert summary["complete"] and summary["input_lines"] == summary["output_records"] == len(lines)
    records = [json.loads(line) for path, _ in storage.match(f"{gcs_bucket}/predict/out/predictions*")
               for line in storage.read_text(path).splitlines()]  # fmt: skip
    assert len(records) == len(lines)
