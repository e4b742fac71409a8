"""The exported bundle: signatures equal the Keras model's own computation, in a fresh process too."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from nextword import config as config_lib
from nextword.artifacts import bundle as bundle_lib
from nextword.artifacts.data_dir import Manifest
from nextword.text import contract
from tests.support.tiny_bundle import (
    TINY_MODEL,
    corpus_lines,
    document_ids,
    line_ids,
    reference_carried,
    reference_next,
    reference_score,
    reference_token_log_probs,
)
from trainer.export import export_bundle
from trainer.model import build_model

pytestmark = pytest.mark.train

K = 5

_FRESH_PROCESS = """
import json, sys
import tensorflow as tf
bundle = tf.saved_model.load(sys.argv[1])
texts = tf.constant(json.loads(sys.argv[2]))
out = {name: {k: v.numpy().tolist() for k, v in bundle.signatures[name](**args).items()}
       for name, args in [("next_words", {"text": texts, "k": tf.constant(int(sys.argv[3]))}),
                          ("score", {"text": texts})]}
out["next_words"]["words"] = [[w.decode() for w in row] for row in out["next_words"]["words"]]
print(json.dumps(out))
"""


def sample_texts(tiny_bundle) -> list[str]:
    lines = corpus_lines(tiny_bundle)
    long_line = " ".join(" ".join(lines[:12]).split()[:57])  # many windows, not a multiple of W
    return ["", "   \t", lines[0], lines[1].upper(), "zzz unknownword", "one", long_line, "Wow!! -- it's a-ok"]


def call(bundle, texts: list[str], k: int = K) -> tuple[dict, dict]:
    texts_t = tf.constant(texts, dtype=tf.string)
    nxt = {n: v.numpy() for n, v in bundle.signatures["next_words"](text=texts_t, k=tf.constant(k)).items()}
    score = {n: v.numpy() for n, v in bundle.signatures["score"](text=texts_t).items()}
    return nxt, score


def check_against_reference(model, texts, nxt, score, vocab, settings, window, k=K):
    for i, text in enumerate(texts):
        ids = line_ids(text, vocab, settings)
        words = vocab.ids(contract.tokenize(text, settings))
        assert nxt["word_count"][i] == score["word_count"][i] == len(words)
        assert nxt["unknown_count"][i] == score["unknown_count"][i] == words.count(contract.UNK_ID)
        context = ids[:-1] if settings.eos else ids  # next_words: no trailing <eos>
        if context:
            probs = reference_next(model, context, window)
            top = np.argsort(-probs, kind="stable")[: min(k, len(vocab))]
            np.testing.assert_allclose(nxt["probs"][i], probs[top], rtol=1e-4, atol=1e-6)
            assert [vocab.tokens[j] for j in top] == [w.decode() for w in nxt["words"][i]]
        else:  # no context at all: an explicit empty prediction, never a made-up one
            assert list(nxt["words"][i]) == [b""] * min(k, len(vocab)) and not nxt["probs"][i].any()
        log_prob, count = reference_score(model, ids, window)
        assert score["tokens"][i] == count == max(len(ids) - 1, 0)
        assert score["unknown_tokens"][i] == ids[1:].count(contract.UNK_ID)
        np.testing.assert_allclose(score["log_prob"][i], log_prob, rtol=1e-4, atol=1e-4)


def test_fresh_process_round_trip_equals_keras_model(tiny_bundle):
    texts = sample_texts(tiny_bundle)
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, tiny_bundle.bundle_dir, json.dumps(texts), str(K)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    out = json.loads(done.stdout.strip().splitlines()[-1])
    nxt = {k: np.array(v) for k, v in out["next_words"].items()}
    nxt["words"] = np.array([[w.encode() for w in row] for row in out["next_words"]["words"]], dtype=object)
    score = {k: np.array(v) for k, v in out["score"].items()}
    window = tiny_bundle.config.preprocess.window_length
    check_against_reference(tiny_bundle.model, texts, nxt, score, tiny_bundle.vocab, tiny_bundle.settings, window)
    assert score["tokens"].tolist()[:2] == [0, 0] and score["log_prob"].tolist()[:2] == [0.0, 0.0]


def test_batch_composition_and_padding_never_change_results(tiny_bundle):
    bundle = tf.saved_model.load(tiny_bundle.bundle_dir)
    texts = sample_texts(tiny_bundle)
    batch_next, batch_score = call(bundle, texts)
    for i, text in enumerate(texts):
        alone_next, alone_score = call(bundle, [text])
        np.testing.assert_allclose(alone_next["probs"][0], batch_next["probs"][i], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(alone_score["log_prob"][0], batch_score["log_prob"][i], rtol=1e-5, atol=1e-5)
        assert alone_score["tokens"][0] == batch_score["tokens"][i]


def test_trained_bundle_predicts_the_chains_successors(tiny_bundle):
    bundle = tf.saved_model.load(tiny_bundle.bundle_dir)
    chain = tiny_bundle.chain
    contexts = [" ".join(line.split()[:3]).lower() for line in corpus_lines(tiny_bundle)[:20]]
    nxt, _ = call(bundle, contexts, k=3)
    hits = 0
    for context, words in zip(contexts, nxt["words"], strict=True):
        last = chain.words.index(context.split()[-1])
        successors = {chain.words[j] for j in chain.successors[last]}
        hits += words[0].decode() in successors
    assert hits >= 18  # the synthetic chain has 3 successors per word; a trained model knows them


def test_long_line_scored_in_slices_equals_one_pass(tiny_bundle, tmp_path):
    window = tiny_bundle.config.preprocess.window_length
    sliced_dir = str(tmp_path / "sliced")
    # A budget of 3 windows' logits: the 100-word line takes 34 slices.
    export_bundle(tiny_bundle.model, tiny_bundle.data_dir, tiny_bundle.config, sliced_dir,
                  logit_budget=3 * window * len(tiny_bundle.vocab))  # fmt: skip
    words = " ".join(corpus_lines(tiny_bundle)).split()[:101]
    texts = [" ".join(words), "short line", ""]
    _, whole = call(tf.saved_model.load(tiny_bundle.bundle_dir), texts)
    _, sliced = call(tf.saved_model.load(sliced_dir), texts)
    np.testing.assert_allclose(sliced["log_prob"], whole["log_prob"], rtol=1e-5)
    assert sliced["tokens"].tolist() == whole["tokens"].tolist() == [100, 1, 0]


def test_context_tokens_sets_the_context_and_score_windows(tiny_bundle, tmp_path):
    short_dir = str(tmp_path / "short")
    export_bundle(tiny_bundle.model, tiny_bundle.data_dir, tiny_bundle.config, short_dir, context_tokens=2)
    loaded = bundle_lib.load_bundle(short_dir)
    assert (loaded.context_tokens, loaded.window_length) == (2, tiny_bundle.config.preprocess.window_length)
    texts = sample_texts(tiny_bundle)
    nxt, score = call(tf.saved_model.load(short_dir), texts)
    check_against_reference(tiny_bundle.model, texts, nxt, score, tiny_bundle.vocab, tiny_bundle.settings, 2)


def test_tied_embedding_model_exports_and_matches_keras(tiny_bundle, tmp_path):
    tied = dataclasses.replace(TINY_MODEL, embedding_dim=TINY_MODEL.units, head="tied")
    model = build_model(len(tiny_bundle.vocab.tokens), tied)  # untrained: the shared weights are what matters
    config = dataclasses.replace(tiny_bundle.config, train=dataclasses.replace(tiny_bundle.config.train, model=tied))
    bundle_dir = export_bundle(model, tiny_bundle.data_dir, config, str(tmp_path / "tied"))
    texts = sample_texts(tiny_bundle)
    nxt, score = call(tf.saved_model.load(bundle_dir), texts)
    window = tiny_bundle.config.preprocess.window_length
    check_against_reference(model, texts, nxt, score, tiny_bundle.vocab, tiny_bundle.settings, window)


def _handmade_data(data_dir, tokens, settings, window):
    """vocab.txt + a manifest of no shards, for an untrained model of any settings."""
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, contract.VOCAB_FILE), "w") as f:
        f.write(contract.vocab_text(tokens))
    manifest = Manifest(
        created_unix=0, corpus_glob="", text=settings, window_length=window, record_length=window + 1,
        stride=window, pad_id=None, vocab_size=len(tokens), fingerprint=contract.fingerprint(tokens, settings),
        counts={}, shards={split: [] for split in contract.SPLITS},
    ).to_dict()  # fmt: skip
    with open(os.path.join(data_dir, contract.MANIFEST_FILE), "w") as f:
        json.dump(manifest, f)
    return manifest


def test_whitespace_eos_bundle_uses_eos_as_line_start(tmp_path):
    settings = contract.TextSettings(normalization="whitespace", eos=True, unknown_token="<unk>", min_count=0)
    tokens = ["<unk>", "<eos>", "the", "cat", "sat", "on", "mat", "Dog"]
    window = 3
    _handmade_data(tmp_path / "data", tokens, settings, window)
    model = build_model(len(tokens), TINY_MODEL)  # untrained: the arithmetic is what is tested
    config = config_lib.from_dict(None)
    export_bundle(model, str(tmp_path / "data"), config, str(tmp_path / "bundle"))
    texts = ["", "the cat sat on the mat", "Dog\u00a0dog <eos> <unk> x", "cat", "the cat sat on the mat the cat"]
    nxt, score = call(tf.saved_model.load(str(tmp_path / "bundle")), texts, k=20)
    assert nxt["words"].shape == (len(texts), len(tokens))  # k is capped at the vocabulary size
    check_against_reference(model, texts, nxt, score, contract.Vocabulary(tokens), settings, window, k=20)
    assert score["tokens"].tolist() == [1, 7, 6, 2, 9]  # every word and the final <eos> are predicted


def test_next_words_rejects_k_below_one(tiny_bundle):
    bundle = tf.saved_model.load(tiny_bundle.bundle_dir)
    with pytest.raises(tf.errors.InvalidArgumentError, match="k must be >= 1"):
        call(bundle, ["some words"], k=0)


def test_load_bundle_checks_files_and_fingerprint(tiny_bundle, tmp_path):
    loaded = bundle_lib.load_bundle(tiny_bundle.bundle_dir)
    assert loaded.tokens == tiny_bundle.vocab.tokens and loaded.settings == tiny_bundle.settings
    assert loaded.window_length == tiny_bundle.config.preprocess.window_length
    manifest = json.loads((Path(tiny_bundle.data_dir) / contract.MANIFEST_FILE).read_text())
    assert loaded.fingerprint == manifest["fingerprint"] == loaded.info.fingerprint

    def copy(name):
        path = tmp_path / name
        shutil.copytree(tiny_bundle.bundle_dir, path)
        return path

    missing = copy("missing")
    os.remove(missing / "nextword" / "config.yaml")
    with pytest.raises(FileNotFoundError, match=rf"^{missing}: not a nextword bundle: missing nextword/config.yaml;"):
        bundle_lib.load_bundle(str(missing))
    with pytest.raises(FileNotFoundError, match="missing saved_model.pb"):
        bundle_lib.load_bundle(str(tmp_path / "nowhere"))

    tampered = copy("tampered")
    vocab_path = tampered / "nextword" / "vocab.txt"
    vocab_path.write_text(vocab_path.read_text().replace("\n", "\nextra\n", 1))
    with pytest.raises(ValueError, match=rf"^{tampered}: fingerprint mismatch: vocab.txt"):
        bundle_lib.load_bundle(str(tampered))

    other = copy("other_manifest")
    manifest_path = other / "nextword" / "manifest.json"
    manifest_path.write_text(json.dumps({**manifest, "fingerprint": "0" * 16}))
    with pytest.raises(ValueError, match="fingerprint mismatch: manifest.json says 0000000000000000"):
        bundle_lib.load_bundle(str(other))

    broken = copy("broken")
    (broken / "nextword" / "bundle.json").write_text("{not json")
    with pytest.raises(ValueError, match="bundle.json: not valid JSON"):
        bundle_lib.load_bundle(str(broken))


def test_export_refuses_mismatched_data_and_model(tiny_bundle, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_bundle.data_dir, data)
    with pytest.raises(ValueError, match="the model predicts 7 ids but vocab.txt has"):
        export_bundle(build_model(7, TINY_MODEL), str(data), tiny_bundle.config, str(tmp_path / "b1"))
    (data / "vocab.txt").write_text("<???>\nother\n")
    mismatch = r"vocab.txt: vocabulary fingerprint \w+ does not match \w+ in .*manifest.json"
    with pytest.raises(ValueError, match=mismatch):
        export_bundle(tiny_bundle.model, str(data), tiny_bundle.config, str(tmp_path / "b2"))
    assert not (tmp_path / "b1").exists() and not (tmp_path / "b2").exists()


def _generate(bundle, text, words=12, temperature=0.0, top_k=0, seed=0, allow_unknown=False, top_p=1.0) -> list[str]:
    out = bundle.signatures["generate"](
        text=tf.constant(text), words=tf.constant(words), temperature=tf.constant(temperature),
        top_k=tf.constant(top_k), top_p=tf.constant(top_p), seed=tf.constant(seed),
        allow_unknown=tf.constant(allow_unknown),
    )  # fmt: skip
    return [w.decode() for w in out["words"].numpy()]


def test_generate_is_greedy_at_temperature_zero_and_reproducible_by_seed(tiny_bundle):
    bundle = tf.saved_model.load(tiny_bundle.bundle_dir)
    text = " ".join(corpus_lines(tiny_bundle)[0].split()[:4])
    greedy = _generate(bundle, text)
    assert len(greedy) == 12
    # Greedy: each word is next_words' top-1 for the text so far.
    so_far = text
    for word in greedy[:3]:
        top = bundle.signatures["next_words"](text=tf.constant([so_far]), k=tf.constant(1))["words"].numpy()[0, 0]
        assert top.decode() == word
        so_far += " " + word
    sampled = _generate(bundle, text, temperature=1.0, seed=7)
    assert sampled == _generate(bundle, text, temperature=1.0, seed=7)  # same seed, same words
    assert any(_generate(bundle, text, temperature=1.0, seed=s) != sampled for s in range(1, 4))
    top_two = _generate(bundle, text, words=1, temperature=5.0, top_k=2, seed=3)
    best = bundle.signatures["next_words"](text=tf.constant([text]), k=tf.constant(2))["words"].numpy()[0]
    assert top_two[0] in {w.decode() for w in best}
    # Nucleus: at a hot temperature only the words whose probability reaches top_p together are drawn.
    probs = bundle.signatures["next_words"](text=tf.constant([text]), k=tf.constant(3))
    words, p = [w.decode() for w in probs["words"].numpy()[0]], probs["probs"].numpy()[0]
    nucleus = words[:1] if p[0] >= 0.5 else words[:2] if p[0] + p[1] >= 0.5 else None
    if nucleus is not None:  # at temperature 1 the top words' probabilities are next_words' own
        drawn = {_generate(bundle, text, words=1, temperature=1.0, top_p=0.5, seed=s)[0] for s in range(20)}
        assert drawn <= set(nucleus), (drawn, nucleus, p)
    assert _generate(bundle, "") == []  # nothing to continue from


def test_generate_never_emits_the_unknown_symbol_unless_asked(tiny_bundle):
    bundle = tf.saved_model.load(tiny_bundle.bundle_dir)
    unknown = tiny_bundle.vocab.tokens[0]
    text = "zzqx unknownword"  # every word unknown: the model's favourite next id is the unknown symbol
    hot = {"words": 300, "temperature": 50.0, "seed": 11}  # nearly uniform sampling over the vocabulary
    assert unknown not in _generate(bundle, text, **hot)
    assert unknown not in _generate(bundle, text)
    assert unknown in _generate(bundle, text, **hot, allow_unknown=True)


def test_generate_command_prints_the_continued_text(tiny_bundle, capsys):
    from batch_predict import generate

    text = " ".join(corpus_lines(tiny_bundle)[0].split()[:3])
    args = [
        text,
        "--words",
        "5",
        "--seed",
        "2",
        "--temperature",
        "0.7",
        "--set",
        f"predict.bundle_dir={tiny_bundle.bundle_dir}",
    ]
    assert generate.main(args) == 0
    first = capsys.readouterr().out.strip()
    assert first.startswith(text + " ") and len(first.split()) == len(text.split()) + 5
    assert generate.main(args) == 0 and capsys.readouterr().out.strip() == first  # same seed, same text
    assert generate.main(["", "--set", f"predict.bundle_dir={tiny_bundle.bundle_dir}"]) == 1
    assert "no word left after normalization" in capsys.readouterr().err


# --- per-token scores, streams (document context), the model fingerprint -----------
def score_tokens(bundle, texts: list[str]) -> dict:
    out = bundle.signatures[bundle_lib.SIGNATURE_SCORE_TOKENS](text=tf.constant(texts, dtype=tf.string))
    return {name: value.numpy() for name, value in out.items()}


def stream(bundle, lines: list[str], state, last_id: int, signature=bundle_lib.SIGNATURE_SCORE_STREAM) -> dict:
    out = bundle.signatures[signature](
        text=tf.constant(lines, dtype=tf.string), state=tf.constant(state, tf.float32), last_id=tf.constant(last_id)
    )
    return {name: value.numpy() for name, value in out.items()}


def check_token_scores(model, texts, out, vocab, settings, window):
    """score_tokens: every scored token's text, unknown flag and log-probability, summing to the line's."""
    splits = np.cumsum(out["tokens"])[:-1]
    for i, (values, strings, unknown) in enumerate(
        zip(*(np.split(out[k], splits) for k in ("token_log_prob", "token_text", "token_unknown")), strict=True)
    ):
        ids = line_ids(texts[i], vocab, settings)
        words = contract.tokenize(texts[i], settings)
        expected_text = ([*words, contract.EOS_TOKEN] if settings.eos else words[1:]) if ids else []
        assert [s.decode() for s in strings] == expected_text
        assert unknown.tolist() == [t == contract.UNK_ID for t in ids[1:]]
        np.testing.assert_allclose(values, reference_token_log_probs(model, ids, window), rtol=1e-4, atol=1e-4)
        assert float(np.sum(values.astype(np.float64))) == pytest.approx(float(out["log_prob"][i]), rel=1e-5, abs=1e-5)
        known = float(np.sum(values[~unknown].astype(np.float64)))
        assert known == pytest.approx(float(out["known_log_prob"][i]), rel=1e-5, abs=1e-5)


def test_score_tokens_per_token_values_sum_to_the_score_signature(tiny_bundle):
    bundle = tf.saved_model.load(tiny_bundle.bundle_dir)
    texts = sample_texts(tiny_bundle)
    out = score_tokens(bundle, texts)
    _, score = call(bundle, texts)
    for name in ("log_prob", "known_log_prob", "tokens", "unknown_tokens", "word_count", "unknown_count"):
        assert out[name].tolist() == score[name].tolist(), name  # the same computation, the same numbers
    window = tiny_bundle.config.preprocess.window_length
    check_token_scores(tiny_bundle.model, texts, out, tiny_bundle.vocab, tiny_bundle.settings, window)
    assert out["token_unknown"].any() and out["known_log_prob"][4] > out["log_prob"][4]  # "zzz unknownword"


def test_score_tokens_with_eos_predicts_every_word_and_the_final_eos(tmp_path):
    settings = contract.TextSettings(normalization="whitespace", eos=True, unknown_token="<unk>", min_count=0)
    tokens = ["<unk>", "<eos>", "the", "cat", "sat", "on", "mat"]
    _handmade_data(tmp_path / "data", tokens, settings, 3)
    model = build_model(len(tokens), TINY_MODEL)
    export_bundle(model, str(tmp_path / "data"), config_lib.from_dict(None), str(tmp_path / "bundle"))
    texts = ["", "the cat sat on the mat", "dog the", "cat"]
    out = score_tokens(tf.saved_model.load(str(tmp_path / "bundle")), texts)
    check_token_scores(model, texts, out, contract.Vocabulary(tokens), settings, 3)
    assert out["tokens"].tolist() == [1, 7, 3, 2]


def test_stream_in_any_chunks_equals_the_trainers_carried_evaluation(tiny_bundle):
    bundle = tf.saved_model.load(tiny_bundle.bundle_dir)
    loaded = bundle_lib.load_bundle(tiny_bundle.bundle_dir)
    lines = corpus_lines(tiny_bundle)[:30] + ["", "zzz unknownword"] + corpus_lines(tiny_bundle)[30:40]
    per_line = document_ids(lines, tiny_bundle.vocab, tiny_bundle.settings)
    window = tiny_bundle.config.preprocess.window_length
    reference = reference_carried(tiny_bundle.model, TINY_MODEL, [i for ids in per_line for i in ids], window)
    zero = np.zeros([loaded.state_size], np.float32)
    whole = stream(bundle, lines, zero, -1)
    np.testing.assert_allclose(whole["token_log_prob"], reference, rtol=1e-4, atol=1e-4)
    counts = [len(ids) for ids in per_line]
    counts[0] -= 1  # the document's first token is context only, as in training
    assert whole["tokens"].tolist() == counts and int(whole["last_id"]) == per_line[-1][-1]
    splits = np.cumsum(counts)[:-1]
    line_sums = [float(np.sum(v.astype(np.float64))) for v in np.split(whole["token_log_prob"], splits)]
    np.testing.assert_allclose(whole["log_prob"], line_sums, rtol=1e-5, atol=1e-5)
    # Any cut into calls, empty ones too, carries the state exactly; advance_stream = score_stream's state.
    state, last, values = zero, -1, []
    for lo, hi in [(0, 1), (1, 1), (1, 7), (7, 8), (8, 31), (31, len(lines))]:
        out = stream(bundle, lines[lo:hi], state, last)
        advanced = stream(bundle, lines[lo:hi], state, last, bundle_lib.SIGNATURE_ADVANCE_STREAM)
        np.testing.assert_allclose(advanced["state"], out["state"], rtol=1e-5, atol=1e-6)
        assert int(advanced["last_id"]) == int(out["last_id"])
        state, last = out["state"], int(out["last_id"])
        values += out["token_log_prob"].tolist()
    np.testing.assert_allclose(values, whole["token_log_prob"], rtol=1e-5, atol=1e-5)


def test_a_gru_bundle_streams_as_the_trainers_carried_evaluation(tmp_path):
    settings = contract.TextSettings(normalization="whitespace", eos=True, unknown_token="<unk>", min_count=0)
    tokens = ["<unk>", "<eos>", "the", "cat", "sat", "on", "mat"]
    _handmade_data(tmp_path / "data", tokens, settings, 3)
    cfg = dataclasses.replace(TINY_MODEL, cell="gru", num_layers=2)
    model = build_model(len(tokens), cfg)  # untrained: the state's bookkeeping is what is tested
    export_bundle(model, str(tmp_path / "data"), config_lib.from_dict(None), str(tmp_path / "bundle"))
    assert bundle_lib.load_bundle(str(tmp_path / "bundle")).state_size == 2 * cfg.units  # one state (h) per layer
    lines = ["the cat sat on the mat", "", "mat on the cat", "dog the sat", "the the cat"]
    per_line = document_ids(lines, contract.Vocabulary(tokens), settings)
    reference = reference_carried(model, cfg, [i for ids in per_line for i in ids], 3)
    bundle = tf.saved_model.load(str(tmp_path / "bundle"))
    zero = np.zeros([2 * cfg.units], np.float32)
    np.testing.assert_allclose(stream(bundle, lines, zero, -1)["token_log_prob"], reference, rtol=1e-4, atol=1e-4)
    first = stream(bundle, lines[:2], zero, -1)
    rest = stream(bundle, lines[2:], first["state"], int(first["last_id"]))
    values = [*first["token_log_prob"], *rest["token_log_prob"]]
    np.testing.assert_allclose(values, reference, rtol=1e-4, atol=1e-4)


def test_model_fingerprint_names_vocabulary_settings_context_and_weights(tiny_bundle, tmp_path):
    base = bundle_lib.load_bundle(tiny_bundle.bundle_dir).model_fingerprint
    same = export_bundle(tiny_bundle.model, tiny_bundle.data_dir, tiny_bundle.config, str(tmp_path / "same"))
    assert bundle_lib.load_bundle(same).model_fingerprint == base  # the same weights exported again
    shorter = export_bundle(tiny_bundle.model, tiny_bundle.data_dir, tiny_bundle.config, str(tmp_path / "short"),
                            context_tokens=2)  # fmt: skip
    other = build_model(len(tiny_bundle.vocab.tokens), TINY_MODEL)
    other.set_weights([w + 1e-3 for w in tiny_bundle.model.get_weights()])
    moved = export_bundle(other, tiny_bundle.data_dir, tiny_bundle.config, str(tmp_path / "moved"))
    prints = {bundle_lib.load_bundle(path).model_fingerprint for path in (shorter, moved)}
    assert len(prints | {base}) == 3 and all(len(p) == 16 for p in prints)
