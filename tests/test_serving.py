"""The servable bundle: a batched serving_default, TF Serving's REST bodies, versions in a serving folder."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

from nextword.artifacts import bundle as bundle_lib
from tests.support import tf_serving_rest
from tests.support.predict import chain_words
from tests.support.tiny_bundle import TINY_MODEL
from trainer.export import SIGNATURE_SERVING, export_serving_version, serving_versions
from trainer.model import build_model

K = 5  # predict.top_k's default, which the tiny bundle was exported with


def test_saved_model_cli_lists_serving_default_with_every_input_batched(tiny_bundle):
    cli = Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run(
        [str(cli), "show", "--dir", tiny_bundle.bundle_dir, "--all"],
        capture_output=True, text=True, check=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    ).stdout  # fmt: skip
    block = shown.split(f"signature_def['{SIGNATURE_SERVING}']:")[1].split("signature_def[")[0]
    inputs, outputs = block.split("The given SavedModel SignatureDef contains the following output(s):")
    tensors = re.findall(r"\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: \(([^)]*)\)", inputs)
    assert tensors == [("text", "DT_STRING", "-1")]
    found = {name: (dtype, shape) for name, dtype, shape in re.findall(
        r"\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: \(([^)]*)\)", outputs)}  # fmt: skip
    assert found == {
        "words": ("DT_STRING", f"-1, {K}"),
        "probs": ("DT_FLOAT", f"-1, {K}"),
        "log_prob": ("DT_FLOAT", "-1"),
        "tokens": ("DT_INT32", "-1"),
    }
    for name in ("next_words", "score", "score_tokens", "score_stream", "advance_stream", "generate"):
        assert f"signature_def['{name}']:" in shown  # the other signatures stay


def _one_liner(args: list[str], bundle_dir: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "nextword.cli", "predict", *args, "--set", f"predict.bundle_dir={bundle_dir}"],
        capture_output=True, text=True, timeout=240, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.e2e
def test_rest_row_and_column_bodies_answer_what_nextword_predict_prints(tiny_bundle, tmp_path):
    texts = [
        chain_words(tiny_bundle, 0, 4),
        chain_words(tiny_bundle, 5, 9),
        "zzz unknownword " + chain_words(tiny_bundle, 2, 3),
    ]
    notes = tmp_path / "notes.txt"
    notes.write_text("\n".join(texts) + "\n")
    printed = _one_liner([str(notes), *texts], tiny_bundle.bundle_dir)
    # `nextword predict FILE`: per line "<perplexity> <tokens>  <text>"; then the texts' top-k blocks.
    perplexities = [float(row.split()[0]) for row in printed[: len(texts)]]
    tokens = [int(row.split()[1]) for row in printed[: len(texts)]]
    summary = next(i for i, row in enumerate(printed) if row.startswith(f"{notes}: perplexity"))
    blocks = printed[summary + 1 :]
    words, probs = [], []
    for i in range(len(texts)):
        block = blocks[i * (K + 2) : (i + 1) * (K + 2)]
        assert block[0] == texts[i] and block[-1].startswith("Prediction: ")
        words.append([row.split()[0] for row in block[1:-1]])
        probs.append([float(row.split()[1]) for row in block[1:-1]])

    loaded = tf.saved_model.load(tiny_bundle.bundle_dir)
    rows = tf_serving_rest.answer(json.dumps({"instances": texts}), loaded)["predictions"]
    named_rows = tf_serving_rest.answer(json.dumps({"instances": [{"text": t} for t in texts]}), loaded)
    columns = tf_serving_rest.answer(json.dumps({"inputs": {"text": texts}}), loaded)["outputs"]
    assert named_rows["predictions"] == rows
    assert [{name: columns[name][i] for name in columns} for i in range(len(texts))] == rows
    for i, row in enumerate(rows):
        assert row["words"] == words[i]
        assert row["probs"] == pytest.approx(probs[i], abs=0.5e-4 + 1e-7)  # printed with 4 decimals
        assert row["tokens"] == tokens[i]
        assert math.exp(-row["log_prob"] / row["tokens"]) == pytest.approx(perplexities[i], abs=0.5e-2 + 1e-6)


@pytest.mark.train
def test_b64_values_are_decoded_and_an_unbatched_input_is_refused_as_the_server_would(tmp_path):
    module = tf.Module()
    module.serve = tf.function(
        lambda text: {"n": tf.strings.length(text)}, input_signature=[tf.TensorSpec([None], tf.string)]
    )
    tf.saved_model.save(module, str(tmp_path), signatures={SIGNATURE_SERVING: module.serve})
    loaded = tf.saved_model.load(str(tmp_path))
    body = '{"instances": [{"b64": "YWI="}, "abc"]}'
    assert tf_serving_rest.answer(body, loaded) == {"predictions": [{"n": 2}, {"n": 3}]}
    with pytest.raises(ValueError, match="text: shape"):
        tf_serving_rest.answer('{"inputs": {"text": "one line, no batch"}}', loaded)


def test_serving_versions_are_added_whole_and_never_touch_other_versions(tiny_bundle, tmp_path):
    serving = tmp_path / "serving" / "nextword"
    (serving / "7").mkdir(parents=True)
    (serving / "7" / "saved_model.pb").write_bytes(b"someone else's version")
    (serving / "notes").mkdir()
    first = export_serving_version(tiny_bundle.model, tiny_bundle.data_dir, tiny_bundle.config, str(serving))
    second = export_serving_version(tiny_bundle.model, tiny_bundle.data_dir, tiny_bundle.config, str(serving))
    assert (first, second) == (str(serving / "8"), str(serving / "9"))
    assert serving_versions(str(serving)) == [7, 8, 9]
    assert sorted(os.listdir(serving)) == ["7", "8", "9", "notes"]  # no staging folder left
    assert (serving / "7" / "saved_model.pb").read_bytes() == b"someone else's version"
    assert os.stat(second).st_mode & 0o777 == 0o755  # readable by a server running as another user
    loaded = bundle_lib.load_bundle(second)  # complete, checksums and all
    assert SIGNATURE_SERVING in loaded.info.signatures
    assert loaded.model_fingerprint == bundle_lib.load_bundle(tiny_bundle.bundle_dir).model_fingerprint


def test_a_failed_serving_export_leaves_no_version_and_no_staging(tiny_bundle, tmp_path):
    serving = tmp_path / "serving"
    other = build_model(len(tiny_bundle.vocab.tokens) + 1, TINY_MODEL)  # fails in the export, after staging began
    with pytest.raises(ValueError, match="the model predicts"):
        export_serving_version(other, tiny_bundle.data_dir, tiny_bundle.config, str(serving))
    assert os.listdir(serving) == []


def test_nextword_export_writes_the_best_weights_as_the_next_version_and_as_tflite(synthetic, tmp_path):
    from nextword import cli
    from tests.support.trainer import train_args
    from trainer.main import run

    trained = run(train_args(synthetic, tmp_path / "model", "train.max_steps=5"))
    serving = tmp_path / "serving"
    assert cli.main(["export", "--serving-dir", str(serving), *train_args(synthetic, tmp_path / "model")]) == 0
    version = bundle_lib.load_bundle(str(serving / "1"))
    assert version.info.weights_sha256 == trained["weights_sha256"]
    assert sorted(os.listdir(tmp_path / "model" / "bundle")) == sorted(os.listdir(serving / "1"))
    # --format tflite: the same weights, as TensorFlow Lite in train.model_dir/tflite (tests/test_tflite.py)
    assert (
        cli.main(["export", "--format", "tflite", "--quantize", "int8", *train_args(synthetic, tmp_path / "model")])
        == 0
    )
    info = json.loads((tmp_path / "model" / "tflite" / "tflite.json").read_text())
    assert info["weights_sha256"] == trained["weights_sha256"] and info["quantize"] == "int8"


def test_serving_versions_on_cloud_storage(tiny_bundle, gcs_bucket):
    serving = f"{gcs_bucket}/serving/nextword"
    for expected in (1, 2):
        written = export_serving_version(tiny_bundle.model, tiny_bundle.data_dir, tiny_bundle.config, serving)
        assert written == f"{serving}/{expected}"
    assert serving_versions(serving) == [1, 2]
    assert sorted(tf.io.gfile.listdir(serving)) == ["1/", "2/"]  # nothing staged on the bucket

    def files(root: str) -> set[str]:
        return {os.path.relpath(os.path.join(d, n), root) for d, _, names in tf.io.gfile.walk(root) for n in names}

    assert files(f"{serving}/2") == files(tiny_bundle.bundle_dir)
    # Read as a server reads it, through TensorFlow's gs:// filesystem.
    texts = tf.constant([chain_words(tiny_bundle, 0, 4)])
    remote = tf.saved_model.load(f"{serving}/2").signatures[SIGNATURE_SERVING](text=texts)
    local = tf.saved_model.load(tiny_bundle.bundle_dir).signatures[SIGNATURE_SERVING](text=texts)
    assert remote["words"].numpy().tolist() == local["words"].numpy().tolist()
    assert remote["log_prob"].numpy().tolist() == local["log_prob"].numpy().tolist()
