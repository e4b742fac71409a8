"""The public Python API (`nextword.load`, `nextword.predict`, ...) and the RunInference model handler,
checked against what the commands write: the API is the same scoring path as the batch job."""

from __future__ import annotations

import math

import apache_beam as beam
import pytest
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

import nextword
from batch_predict.handler import BundleModelHandler
from tests.support.predict import chain_words, job_config, predict_argv, read_records
from tests.support.tiny_bundle import corpus_lines

pytestmark = pytest.mark.beam


@pytest.fixture(scope="module")
def model(tiny_bundle):
    return nextword.load(tiny_bundle.bundle_dir, max_batch_tokens=16)


def _job_records(tiny_bundle, tmp_path, texts: list[str], *overrides: str) -> list[dict]:
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    config = job_config(tiny_bundle, tmp_path, str(tmp_path / "in.txt"), *overrides)
    nextword.predict(config, overrides=predict_argv(config)[1::2])
    return sorted(read_records(tmp_path / "out"), key=lambda r: r["line"])


def test_next_words_and_line_scores_equal_the_batch_jobs_records(tiny_bundle, model, tmp_path):
    texts = [chain_words(tiny_bundle, i, 2 + 3 * i) for i in range(6)] + ["", "unknownword"]
    records = _job_records(tiny_bundle, tmp_path, texts, "predict.top_k=3", "predict.mode=both")
    found, scores = model.next_words(texts, k=3), model.score(texts)
    for text, record, words, score in zip(texts, records, found, scores, strict=True):
        if text:
            assert [n["word"] for n in record["next"]] == [word for word, _ in words]
            # Probabilities are written to 6 decimals; the job's batches differ from the API's, and a CPU's
            # kernels may round the last digit either way for a different batch.
            assert [n["prob"] for n in record["next"]] == pytest.approx([prob for _, prob in words], abs=2e-6)
        else:
            assert words == [] and record["error"]
        if score.tokens:
            assert record["log_prob"] == pytest.approx(score.log_prob, rel=1e-5)
            assert record["perplexity"] == pytest.approx(score.perplexity, rel=1e-5)
        else:
            assert record.get("log_prob") is None and score.perplexity is None


def test_document_scores_equal_the_jobs_and_differ_from_line_context(tiny_bundle, model, tmp_path):
    lines = corpus_lines(tiny_bundle)[:30]
    records = _job_records(tiny_bundle, tmp_path, lines, "predict.mode=score", "predict.context=document")
    document = model.score(lines, context="document", per_token=True)
    assert [r["log_prob"] for r in records] == pytest.approx([s.log_prob for s in document], abs=2e-4)
    assert all(len(s.token_scores) == s.tokens for s in document)
    alone = model.score(lines)
    assert sum(s.log_prob for s in document) != pytest.approx(sum(s.log_prob for s in alone), rel=1e-6)
    with pytest.raises(ValueError, match="context: 'paragraph' is not one of line, document"):
        model.score(lines, context="paragraph")


def test_generate_is_greedy_at_temperature_zero_and_reproducible_by_seed(tiny_bundle, model):
    prompt = chain_words(tiny_bundle, 0, 3)
    greedy = model.generate(prompt, max_words=4, temperature=0)
    assert greedy[0] == model.next_words([prompt], k=1)[0][0][0]
    sampled = [model.generate(prompt, max_words=6, temperature=1.5, top_k=5, seed=s) for s in (7, 7, 8)]
    assert sampled[0] == sampled[1] and len(sampled[0]) == 6
    # top_p near 0 keeps only the most likely word: sampling at any temperature is then the greedy choice
    assert model.generate(prompt, max_words=4, temperature=3.0, top_p=1e-6, seed=5) == greedy
    with pytest.raises(ValueError, match="max_words must be >= 1"):
        model.generate(prompt, max_words=0)
    with pytest.raises(ValueError, match="top_p in"):
        model.generate(prompt, top_p=0)


def test_run_inference_with_the_bundle_handler_keyed_and_with_a_dead_letter_output(tiny_bundle, model):
    texts = [chain_words(tiny_bundle, i, 3 + i) for i in range(5)]
    expected = [words[0][0] for words in model.next_words(texts, k=2)]
    handler = BundleModelHandler(tiny_bundle.bundle_dir, mode="next", top_k=2, max_batch_tokens=16)
    with TestPipeline() as p:
        plain = p | "Lines" >> beam.Create(texts) | "Plain" >> RunInference(handler)
        assert_that(plain | "Top" >> beam.Map(lambda r: r["next"][0]["word"]), equal_to(expected), label="CheckPlain")
        keyed = (
            p
            | "Keyed" >> beam.Create([(f"k{i}", t) for i, t in enumerate(texts)])
            | "RunKeyed" >> RunInference(KeyedModelHandler(handler))
            | "KeyTop" >> beam.MapTuple(lambda key, r: (key, r["next"][0]["word"]))
        )
        assert_that(keyed, equal_to([(f"k{i}", w) for i, w in enumerate(expected)]), label="CheckKeyed")
        # One element that is not a line: its batch goes to the failed output, the job goes on.
        single = BundleModelHandler(tiny_bundle.bundle_dir, mode="next", top_k=2, max_batch_size=1)
        main, other = (
            p | "Mixed" >> beam.Create([texts[0], 42]) | "Guarded" >> RunInference(single).with_exception_handling()
        )
        assert_that(main | "Count" >> beam.combiners.Count.Globally(), equal_to([1]), label="CheckGood")
        failed = other.failed_inferences | "Why" >> beam.Map(lambda bad: "a line must be a str, not int" in str(bad))
        assert_that(failed, equal_to([True]), label="CheckFailed")


def test_a_stage_runs_from_a_config_object(tiny_bundle, tmp_path):
    config = job_config(tiny_bundle, tmp_path, str(tmp_path / "in.txt"), "predict.mode=score")
    (tmp_path / "in.txt").write_text(chain_words(tiny_bundle, 1, 6) + "\n")
    summary = nextword.predict(config)
    assert summary["output_records"] == 1 and math.isfinite(summary["perplexity"])
    with pytest.raises(TypeError, match="config must be a nextword.Config or a path"):
        nextword.predict({"predict": {}})
