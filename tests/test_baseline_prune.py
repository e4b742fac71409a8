"""baseline.prune through the Beam stage: the thresholds per order as lmplz --prune reads them, a model KenLM loads."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from baseline import ngrams, score

pytestmark = pytest.mark.beam


def test_the_stage_prunes_by_raw_count_per_order_and_the_last_threshold_holds_above(synthetic, tmp_path):
    from baseline import pipeline
    from nextword.artifacts import data_dir
    from tests.support.beam import local_test_pipeline

    out = tmp_path / "baseline"
    settings = [f"train.data_dir={synthetic}", f"baseline.output_dir={out}", "baseline.order=4",
                "baseline.prune=[0, 1]", "baseline.buckets=3"]  # fmt: skip
    report = pipeline.run([a for s in settings for a in ("--set", s)], test_pipeline=local_test_pipeline())
    manifest, _ = data_dir.read_manifest_and_vocab(str(synthetic))
    windows = score.read_windows(data_dir.shard_paths(str(synthetic), manifest, "train"))
    raw = ngrams.count_ngrams(windows, 4, ngrams.overlap_of(manifest.record_length, manifest.stride))
    kept = Counter(len(gram) for gram, count in raw.items() if count > 1)  # 1 at order 2, and above it
    assert report["ngrams"] == [manifest.vocab_size + 1, kept[2], kept[3], kept[4]]
    assert kept[4] < sum(1 for gram in raw if len(gram) == 4)  # something was pruned
    assert json.loads((out / "baseline.json").read_text()) == report
    assert not (out / pipeline.WORK_DIR).exists()  # the work files go once the model is written
    kenlm = pytest.importorskip("kenlm", reason="the kenlm package (test extra) did not build")
    assert kenlm.Model(str(out / "model.arpa")).order == 4
