"""The model's parts: heads and cells, and how tied embeddings learn against untied on a known Markov chain."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from nextword import config as config_lib
from nextword.artifacts import bundle as bundle_lib
from nextword.config import ModelConfig, TrainConfig
from nextword.text import contract
from tests.support import synthetic
from tests.support.tiny_bundle import corpus_lines, document_ids, line_ids, reference_carried, reference_score
from trainer import data, evaluate, heads, lm, recurrent, steps
from trainer.export import export_bundle
from trainer.inputs import Inputs
from trainer.model import build_model, cudnn_eligible
from trainer.strategy import LOCAL_WORKER

pytestmark = pytest.mark.train

WINDOW = 20


def chain_windows(chain: synthetic.MarkovChain, num_windows: int, seed: int) -> np.ndarray:
    """Ids [num_windows, WINDOW + 1] int32 of one walk along the chain."""
    rng = np.random.default_rng(seed)
    state, ids = 0, []
    for _ in range(num_windows * (WINDOW + 1)):
        ids.append(state)
        state = int(chain.successors[state, rng.choice(chain.successors.shape[1], p=chain.probs[state])])
    return np.array(ids, dtype=np.int32).reshape(num_windows, WINDOW + 1)


def valid_perplexity(tie: bool, train: np.ndarray, valid: np.ndarray, vocab_size: int) -> float:
    keras.utils.set_random_seed(1)
    cfg = ModelConfig(num_layers=1, embedding_dim=64, units=64, dropout=0.0, head="tied" if tie else "full")
    model = build_model(vocab_size, cfg)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss=loss, jit_compile=False)  # no XLA on CPU
    model.fit(train[:, :-1], train[:, 1:], batch_size=32, epochs=6, verbose=0)  # ~360 steps
    return math.exp(model.evaluate(valid[:, :-1], valid[:, 1:], verbose=0))


def test_tied_embeddings_learn_about_as_fast_as_untied():
    spec = synthetic.ChainSpec(vocab_size=100, branching=5, seed=7)  # the shipped corpus's chain
    chain = synthetic.make_chain(spec)
    windows = chain_windows(chain, 2000, seed=0)
    train, valid = windows[:-100], windows[-100:]
    untied = valid_perplexity(False, train, valid, spec.vocab_size)
    tied = valid_perplexity(True, train, valid, spec.vocab_size)
    # Measured: untied 5.5, tied 6.7; with Keras' default embedding init the tied model was at 28.9.
    assert untied < 8 and tied < 1.5 * untied, (untied, tied)


def test_locked_dropout_uses_one_mask_per_sequence_and_keeps_cudnn_eligibility():
    cfg = ModelConfig(num_layers=1, embedding_dim=8, units=8, dropout=0.5, locked_dropout=True)
    model = build_model(50, cfg)
    ones = np.ones((4, 6, 8), "float32")
    dropped = model.get_layer("embedding_dropout")(ones, training=True).numpy()
    assert (dropped == dropped[:, :1]).all()  # the same units dropped at every time step
    assert 0 < (dropped == 0).mean() < 1
    free = build_model(50, ModelConfig(num_layers=1, embedding_dim=8, units=8, dropout=0.5))
    varied = free.get_layer("embedding_dropout")(ones, training=True).numpy()
    assert not (varied == varied[:, :1]).all()
    assert cudnn_eligible(model) == []


def test_tied_output_with_other_units_projects_to_the_embedding_size():
    model = build_model(50, ModelConfig(num_layers=1, embedding_dim=8, units=12, dropout=0.5, head="tied"))
    assert model.get_layer("tied_projection").kernel.shape == (12, 8)
    assert model(np.zeros((2, 5), "int32")).shape == (2, 5, 50)
    names = [w.path for w in model.weights]
    assert not any("logits" in n and "kernel" in n for n in names)  # the output reuses the embedding


def test_auto_head_is_tied_below_5000_words_and_adaptive_from_there():
    cfg = ModelConfig(num_layers=1, embedding_dim=8, units=8, dropout=0.5, head="auto")
    assert heads.resolve(4999, cfg) == "tied" and heads.resolve(5000, cfg) == "adaptive"
    adaptive = build_model(10000, cfg)
    assert adaptive.get_layer("embedding").ranges == [(0, 1000), (1000, 4000), (4000, 10000)]
    assert heads.resolve(50, ModelConfig(head="adaptive", adaptive_cutoffs=(60,))) == "tied"  # no cluster left
    full = build_model(50, ModelConfig(num_layers=1, embedding_dim=8, units=8, dropout=0.5, head="full"))
    assert full.get_layer("logits").kernel.shape == (8, 50)  # its own output matrix


@pytest.mark.parametrize("cell, states", [("lstm", 2), ("gru", 1)])
def test_each_cell_is_cudnn_eligible_and_carries_its_states(cell, states):
    cfg = ModelConfig(embedding_dim=8, units=8, dropout=0.5, num_layers=2, cell=cell)
    model = build_model(50, cfg, with_state=True)
    assert cudnn_eligible(model) == []
    assert [i.name for i in model.inputs[1:]] == recurrent.state_names(cfg, True)
    assert len(model.inputs) == 1 + 2 * states and len(model.outputs) == 1 + 2 * states
    stateless = build_model(50, cfg)
    assert [w.shape for w in stateless.weights] == [w.shape for w in model.weights]  # the same weights either way


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_an_unrolled_stack_has_the_same_weights_and_outputs_and_says_it_is_not_for_cudnn(cell):
    cfg = ModelConfig(embedding_dim=8, units=8, dropout=0.5, num_layers=2, cell=cell)
    rolled = build_model(50, cfg, with_state=True)
    unrolled = build_model(50, cfg, with_state=True, unroll=True)
    assert [w.path for w in unrolled.weights] == [w.path for w in rolled.weights]
    unrolled.set_weights(rolled.get_weights())
    ids = np.random.default_rng(0).integers(0, 50, (3, 7)).astype("int32")
    states = [np.full((3, 8), 0.1, "float32") for _ in rolled.inputs[1:]]
    for a, b in zip(rolled([ids, *states]), unrolled([ids, *states]), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    assert cudnn_eligible(unrolled) == [f"{cell}_0: unroll=True", f"{cell}_1: unroll=True"]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("pipelined", [False, True])
def test_the_projected_lstm_computes_what_keras_lstm_computes(training, pipelined):
    # Unrolled, the input projection runs ahead of the loop (step by step when pipelined, outside
    # training): the same outputs and states as Keras' own LSTM from the same weights and states.
    x = np.random.default_rng(1).normal(size=(3, 6, 5)).astype("float32")
    h, c = (np.random.default_rng(seed).normal(size=(3, 4)).astype("float32") for seed in (2, 3))
    keras_lstm = keras.layers.LSTM(4, return_sequences=True, return_state=True, unroll=True)
    expected = keras_lstm(x, initial_state=[h, c], training=training)
    projected = recurrent.ProjectedLSTM(4, return_sequences=True, return_state=True, unroll=True, pipelined=pipelined)
    projected(x, initial_state=[h, c])
    projected.set_weights(keras_lstm.get_weights())
    for a, b in zip(expected, projected(x, initial_state=[h, c], training=training), strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)


def test_bf16_matmuls_keep_the_weights_and_come_within_bf16_rounding_of_float32():
    cfg = ModelConfig(embedding_dim=16, units=16, dropout=0.0, num_layers=2, head="full")
    exact = build_model(300, cfg, with_state=True, unroll=True)
    mixed = build_model(300, cfg, with_state=True, unroll=True, matmul_dtype="bfloat16")
    assert [(w.path, w.dtype) for w in mixed.weights] == [(w.path, w.dtype) for w in exact.weights]
    mixed.set_weights(exact.get_weights())
    ids = np.random.default_rng(0).integers(0, 300, (4, 9)).astype("int32")
    states = [np.zeros((4, 16), "float32") for _ in exact.inputs[1:]]
    want, got = exact([ids, *states])[0].numpy(), mixed([ids, *states])[0].numpy()
    assert got.dtype == np.float32
    assert 0 < np.abs(got - want).max() < 0.02 * np.abs(want).max()  # bf16 has 8 bits of mantissa


@pytest.mark.parametrize("matmul_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("head", ["full", "tied", "adaptive"])
@pytest.mark.parametrize("with_state", [False, True])
def test_the_eval_step_sums_what_the_whole_window_logits_give(head, with_state, matmul_dtype):
    # The eval step makes and reduces the logits a few time steps at a time (steps.EVAL_HEAD_STEPS);
    # a window of 12 positions is blocks of 5, 5 and 2. Its figures and states are the model's own.
    cfg = ModelConfig(embedding_dim=16, units=16, dropout=0.0, num_layers=2, head=head, adaptive_cutoffs=(20, 60))
    keras.utils.set_random_seed(3)
    model = build_model(120, cfg, with_state=with_state, unroll=with_state, matmul_dtype=matmul_dtype)
    ids = np.random.default_rng(4).integers(0, 120, (3, 13)).astype("int32")
    ids[2, 9:] = -1  # padding ends the last window of a segment
    weights = tf.constant([1.0, 1.0, 0.0])
    states = steps.zero_states(model, 3)
    got, got_states = steps.replica_eval_step(model, tf.constant(ids), weights, states)
    inputs, targets, mask = steps.split_window(tf.constant(ids))
    logits, want_states = steps.forward(model, inputs, states, training=False)
    np.testing.assert_allclose(got.numpy(), steps.eval_sums(logits, targets, weights, mask).numpy(), rtol=1e-6)
    assert got.numpy()[1] == 2 * 12  # the zero-weight window counts no token
    for a, b in zip(got_states, want_states, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_the_eval_step_takes_windows_of_a_length_unknown_when_traced():
    # Traced without the window's length, the head runs as one block: the same figures.
    model = build_model(50, ModelConfig(num_layers=1, embedding_dim=8, units=8, dropout=0.0, head="full"))
    signature = [tf.TensorSpec([None, None], tf.int32)]
    step = tf.function(lambda ids: steps.replica_eval_step(model, ids, tf.ones([3]), ())[0], input_signature=signature)
    ids = tf.constant(np.random.default_rng(5).integers(0, 50, (3, 13)).astype("int32"))
    inputs, targets, mask = steps.split_window(ids)
    want = steps.eval_sums(model(inputs), targets, tf.ones([3]), mask).numpy()
    np.testing.assert_allclose(step(ids).numpy(), want, rtol=1e-6)


# --- The model's contract (trainer/lm.py): a toy cell and a toy head, registered here only ----------
class ToyOutput(lm.OutputHead):
    """An output matrix of its own, with none of the shipped heads' code."""

    def __init__(self, vocab_size: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.vocab_size))

    def call_blocks(self, blocks):
        return [keras.ops.matmul(hidden, self.kernel) for hidden in blocks]


TOY_CELL = recurrent.Cell(keras.layers.SimpleRNN, ("h",), None, lambda layer, cfg: None)
TOY_HEAD = heads.Head(
    lambda vocab_size, cfg: keras.layers.Embedding(vocab_size, cfg.embedding_dim, name="embedding"),
    # named other than the shipped heads' output layer: nothing may find the head by its name
    lambda x, embedding, vocab_size, cfg, matmul_dtype: ToyOutput(vocab_size, name="toy_output")(x),
)
TOY_MODEL = ModelConfig(embedding_dim=8, units=8, num_layers=2, dropout=0.0, cell="toy_rnn", head="toy_dense")


@pytest.fixture
def toy_parts():
    recurrent.CELLS.register("toy_rnn", TOY_CELL)
    heads.HEADS.register("toy_dense", TOY_HEAD)
    yield TOY_MODEL
    del recurrent.CELLS["toy_rnn"], heads.HEADS["toy_dense"]


def test_a_registered_toy_cell_and_head_train_evaluate_and_export(toy_parts, tiny_bundle, tmp_path):
    keras.utils.set_random_seed(5)
    vocab_size = len(tiny_bundle.vocab.tokens)
    model = build_model(vocab_size, toy_parts)
    assert cudnn_eligible(model) == [
        "toy_rnn_0: no cuDNN kernel for SimpleRNN",
        "toy_rnn_1: no cuDNN kernel for SimpleRNN",
    ]
    read_manifest, tokens = data.read_manifest_and_vocab(tiny_bundle.data_dir)
    spec = data.DataSpec(data_dir=tiny_bundle.data_dir, manifest=read_manifest, vocab=tokens)
    strategy = tf.distribute.get_strategy()
    inputs = Inputs(
        spec, TrainConfig(per_replica_batch_size=512, carry_state=False, model=toy_parts), strategy, LOCAL_WORKER
    )
    evaluator = evaluate.Evaluator(model, strategy, inputs)  # the trainer's evaluation, here of the train split
    before = evaluator("train")
    # Training: the trainer's step, through the head's target log-probabilities, on the split's windows.
    optimizer = keras.optimizers.Adam(0.05)
    step = tf.function(lambda ids: steps.replica_train_step(model, optimizer, ids, (), tf.zeros([1]), 512, 1.0)[0])
    batches = iter(inputs.train(0, 0))
    losses = [float(step(next(batches))[0]) for _ in range(8)]
    after = evaluator("train")
    assert after["tokens"] == before["tokens"] == spec.targets("train")
    assert after["perplexity"] < 0.7 * before["perplexity"] and losses[-1] < losses[0], (before, after, losses)
    # Export: the bundle scores as the Keras model does, and its streams carry the toy cell's states.
    config = dataclasses.replace(
        tiny_bundle.config, train=dataclasses.replace(tiny_bundle.config.train, model=toy_parts)
    )
    bundle_dir = export_bundle(model, tiny_bundle.data_dir, config, str(tmp_path / "bundle"))
    loaded = tf.saved_model.load(bundle_dir)
    lines = corpus_lines(tiny_bundle)[:3]
    window = tiny_bundle.config.preprocess.window_length
    ids_of = [line_ids(line, tiny_bundle.vocab, tiny_bundle.settings) for line in lines]
    scored = loaded.signatures[contract.SIGNATURE_SCORE](text=tf.constant(lines))["log_prob"].numpy()
    np.testing.assert_allclose(scored, [reference_score(model, i, window)[0] for i in ids_of], rtol=1e-4, atol=1e-4)
    per_line = document_ids(lines, tiny_bundle.vocab, tiny_bundle.settings)
    carried = reference_carried(model, toy_parts, [i for line in per_line for i in line], window)
    state = tf.zeros([2 * toy_parts.units])  # one state (h) per layer
    stream = loaded.signatures[bundle_lib.SIGNATURE_SCORE_STREAM](text=tf.constant(lines), state=state, last_id=-1)
    np.testing.assert_allclose(stream["token_log_prob"].numpy(), carried, rtol=1e-4, atol=1e-4)


def test_a_part_is_chosen_by_a_registered_name_and_must_keep_the_contract(toy_parts):
    with pytest.raises(ValueError, match=r"train.model.cell: 'nope' is not one of lstm, gru, toy_rnn"):
        build_model(50, dataclasses.replace(toy_parts, cell="nope"))
    with pytest.raises(ValueError, match="'toy_rnn' is registered already"):
        recurrent.CELLS.register("toy_rnn", TOY_CELL)
    not_a_head = heads.Head(TOY_HEAD.embedding, lambda x, *_: keras.layers.Dense(50, name="plain")(x))
    heads.HEADS.register("not_a_head", not_a_head)
    try:  # broken where the model is built, not in training, evaluation or export
        with pytest.raises(TypeError, match=r"the last layer \(plain, Dense\) must be the output head"):
            build_model(50, dataclasses.replace(toy_parts, head="not_a_head"))
    finally:
        del heads.HEADS["not_a_head"]


def test_the_config_offers_every_shipped_cell_and_head():
    for key, registry in (("train.model.cell", recurrent.CELLS), ("train.model.head", heads.HEADS)):
        for name in registry:
            assert config_lib.from_dict(None, [f"{key}={name}"]) is not None
        with pytest.raises(config_lib.ConfigError, match=key):
            config_lib.from_dict(None, [f"{key}=unregistered"])
