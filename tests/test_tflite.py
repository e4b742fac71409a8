"""The on-device export: TensorFlow Lite's interpreter, stepped id by id, gives the bundle's log-probabilities."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import nextword
from nextword import cli
from nextword.text import contract
from tests.support.tiny_bundle import TINY_MODEL, corpus_lines, document_ids, line_ids
from trainer import tflite
from trainer.model import build_model

pytestmark = pytest.mark.train

# Largest difference per token from the bundle's natural-log probability. float32 is the same arithmetic in
# another runtime; float16 rounds every weight to 11 significant bits, int8 to 256 levels per weight row
# (and quantizes each call's activations), so their bounds are looser.
TOLERANCE = {"none": 1e-4, "float16": 1e-2, "int8": 5e-2}


def interpreter(out_dir: str = "", content: bytes | None = None) -> tf.lite.Interpreter:
    """TensorFlow Lite's interpreter of an export folder's model.tflite, or of a flatbuffer's `content`."""
    with warnings.catch_warnings():  # tf.lite.Interpreter's notice that LiteRT's package replaces it
        warnings.simplefilter("ignore", UserWarning)
        if content is not None:
            return tf.lite.Interpreter(model_content=content)
        return tf.lite.Interpreter(model_path=str(Path(out_dir, tflite.MODEL_FILE)))


def sample_lines(tiny_bundle) -> list[str]:
    lines = corpus_lines(tiny_bundle)
    return [lines[0], lines[1].upper(), "zzz unknownword " + lines[2], "", "one", " ".join(lines[3:6])]


@pytest.fixture(scope="module")
def exports(tiny_bundle, tmp_path_factory) -> dict[str, str]:
    """The tiny bundle's model exported once per quantization: {quantize: folder}."""
    root = tmp_path_factory.mktemp("tflite")
    return {
        q: tflite.export(tiny_bundle.model, tiny_bundle.data_dir, tiny_bundle.config, str(root / q), q)
        for q in tflite.QUANTIZATIONS
    }


@pytest.fixture(scope="module")
def predictor(tiny_bundle):
    return nextword.load(tiny_bundle.bundle_dir)


@pytest.mark.parametrize("quantize", tflite.QUANTIZATIONS)
def test_steps_give_the_bundles_per_token_log_probs_in_line_and_document_context(
    tiny_bundle, exports, predictor, quantize
):
    step = interpreter(exports[quantize]).get_signature_runner(tflite.SIGNATURE_STEP)
    info = json.loads(Path(exports[quantize], tflite.INFO_FILE).read_text())
    zero = np.zeros([sum(part["size"] for part in info["state"])], np.float32)
    lines = sample_lines(tiny_bundle)
    # Line context: each line from a zero state, the state reset every context_tokens tokens.
    for line, score in zip(lines, predictor.score(lines, per_token=True), strict=True):
        ids = line_ids(line, tiny_bundle.vocab, tiny_bundle.settings)
        found, _ = tflite.step_through(step, ids, zero, reset_every=info["context_tokens"])
        expected = [value for _, _, value in score.token_scores]
        assert len(found) == len(expected) == score.tokens
        np.testing.assert_allclose(found, expected, rtol=0, atol=TOLERANCE[quantize])
    # Document context: the lines as one stream, the state carried throughout.
    stream = [token for ids in document_ids(lines, tiny_bundle.vocab, tiny_bundle.settings) for token in ids]
    found, _ = tflite.step_through(step, stream, zero)
    scores = predictor.score(lines, context="document", per_token=True)
    expected = [value for score in scores for _, _, value in score.token_scores]
    np.testing.assert_allclose(found, expected, rtol=0, atol=TOLERANCE[quantize])


def test_top_ids_are_the_bundles_next_words(tiny_bundle, exports, predictor):
    step = interpreter(exports["none"]).get_signature_runner(tflite.SIGNATURE_STEP)
    info = json.loads(Path(exports["none"], tflite.INFO_FILE).read_text())
    line = corpus_lines(tiny_bundle)[0]
    ids = line_ids(line, tiny_bundle.vocab, tiny_bundle.settings)[: info["context_tokens"]]
    state = np.zeros([sum(part["size"] for part in info["state"])], np.float32)
    for token in ids:
        out = step(id=np.array([token], np.int32), state=state)
        state = out["state"]
    text = " ".join(tiny_bundle.vocab.tokens[token] for token in ids)
    [expected] = predictor.next_words([text], k=info["top_k"])
    assert [tiny_bundle.vocab.tokens[i] for i in out["top_ids"]] == [word for word, _ in expected]
    np.testing.assert_allclose(np.exp(out["top_log_probs"]), [p for _, p in expected], rtol=1e-4)
    np.testing.assert_allclose(out["top_log_probs"], np.sort(out["log_probs"])[::-1][: info["top_k"]], rtol=1e-6)


def test_a_two_layer_gru_with_the_adaptive_head_steps_as_its_keras_model():
    cfg = dataclasses.replace(TINY_MODEL, cell="gru", num_layers=2, head="adaptive", adaptive_cutoffs=(10, 40))
    model = build_model(60, cfg)  # untrained: the other cell, the other head, a stack of layers
    step = interpreter(content=tflite.convert(model, cfg, 60, 5, "none")).get_signature_runner(tflite.SIGNATURE_STEP)
    ids = [3, 7, 59, 0, 12, 45, 2, 33, 9]
    found, _ = tflite.step_through(step, ids, np.zeros([2 * cfg.units], np.float32))  # h of each layer
    logits = keras.ops.convert_to_numpy(model(np.array([ids[:-1]], np.int32), training=False))[0].astype(np.float64)
    expected = logits[np.arange(len(ids) - 1), ids[1:]] - np.log(np.exp(logits).sum(-1))
    np.testing.assert_allclose(found, expected, rtol=0, atol=TOLERANCE["none"])


def test_the_folder_holds_the_vocabulary_and_the_app_side_contract(tiny_bundle, exports):
    out = Path(exports["none"])
    assert (out / contract.VOCAB_FILE).read_text() == Path(tiny_bundle.data_dir, contract.VOCAB_FILE).read_text()
    info = json.loads((out / tflite.INFO_FILE).read_text())
    assert info["unknown_id"] == contract.UNK_ID and info["eos_id"] is None  # the tiny bundle has no <eos>
    assert info["text"] == tiny_bundle.settings.to_dict() and info["vocab_size"] == len(tiny_bundle.vocab)
    assert info["context_tokens"] == tiny_bundle.config.preprocess.window_length
    assert [part["name"] for part in info["state"]] == ["lstm_0_h", "lstm_0_c"]
    details = interpreter(str(out)).get_signature_runner(tflite.SIGNATURE_STEP).get_input_details()
    assert {name: (d["dtype"], d["shape"].tolist()) for name, d in details.items()} == {
        "id": (np.int32, [1]),
        "state": (np.float32, [2 * tiny_bundle.config.train.model.units]),
    }
    assert info["model_sha256"] == hashlib.sha256((out / tflite.MODEL_FILE).read_bytes()).hexdigest()


def test_quantized_weights_are_stored_smaller_in_their_type(exports):
    sizes = {q: Path(folder, tflite.MODEL_FILE).stat().st_size for q, folder in exports.items()}
    assert sizes["float16"] < sizes["none"] and sizes["int8"] < sizes["none"]
    for quantize, weight_type in (("float16", np.float16), ("int8", np.int8)):
        types = {d["dtype"] for d in interpreter(exports[quantize]).get_tensor_details()}
        assert weight_type in types, quantize
    types = {d["dtype"] for d in interpreter(exports["none"]).get_tensor_details()}
    assert np.float16 not in types and np.int8 not in types and np.bytes_ not in types  # no string tensor either


def test_a_folder_with_files_nextword_did_not_write_is_refused_and_left_as_it_was(tiny_bundle, exports, tmp_path):
    (tmp_path / tflite.MODEL_FILE).write_bytes(b"someone else's model")
    with pytest.raises(ValueError, match="model.tflite: not written by nextword: choose an empty --out"):
        tflite.export(tiny_bundle.model, tiny_bundle.data_dir, tiny_bundle.config, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [tflite.MODEL_FILE]
    assert (tmp_path / tflite.MODEL_FILE).read_bytes() == b"someone else's model"
    # A folder it wrote is its own: exported again (another quantization), it holds the new model.
    ours = shutil.copytree(exports["int8"], tmp_path / "ours")
    tflite.export(tiny_bundle.model, tiny_bundle.data_dir, tiny_bundle.config, str(ours), "float16")
    info = json.loads((ours / tflite.INFO_FILE).read_text())
    assert info["quantize"] == "float16"
    assert info["model_sha256"] == hashlib.sha256((ours / tflite.MODEL_FILE).read_bytes()).hexdigest()
    assert (ours / tflite.MODEL_FILE).read_bytes() != Path(exports["int8"], tflite.MODEL_FILE).read_bytes()


def test_export_options_of_the_other_format_are_one_line_errors(capsys):
    assert cli.main(["export", "--format", "tflite", "--serving-dir", "models"]) == 1
    assert cli.main(["export", "--quantize", "int8"]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == ["error: --serving-dir is for --format bundle, --out and --quantize for --format tflite"] * 2
