"""Exports a trained model as one bundle: a SavedModel that takes raw strings.

Layout of `<bundle>/`:
    saved_model.pb, variables/, ...   the SavedModel (keras.export.ExportArchive)
    nextword/vocab.txt                the vocabulary, line number = id
    nextword/manifest.json            the preprocessing manifest the model was trained on
    nextword/config.yaml              the resolved config of the run
    nextword/bundle.json              fingerprint, text settings, window length, the CRC32C of
                                      saved_model.pb and variables/*; written last

Signatures (batch = any number of lines; right padding never changes a result):

    serving_default(text: string [batch]) ->
        words: string [batch, k], probs: float32 [batch, k], log_prob: float32 [batch], tokens: int32 [batch]
        (k = min(predict.top_k at export, vocabulary size); every input and output batched, so TF Serving's
        REST row format ({"instances": [...]}) and a Vertex AI endpoint or batch prediction job can call it:
        next_words' words and probs and score's log_prob and tokens, for each line)

    next_words(text: string [batch], k: int32 []) ->
        words: string [batch, k'], probs: float32 [batch, k'], word_count: int32 [batch],
        unknown_count: int32 [batch]
    score(text: string [batch]) ->
        log_prob: float32 [batch], known_log_prob: float32 [batch], tokens: int32 [batch],
        unknown_tokens: int32 [batch], word_count: int32 [batch], unknown_count: int32 [batch]
    generate(text: string [], words: int32 [], temperature: float32 [], top_k: int32 [], top_p: float32 [],
             seed: int32 [], allow_unknown: bool []) -> words: string [n], n <= words

Semantics (the model is stateless: every line starts from a zero state).
C = `context_tokens`, by default the training `window_length` (training saw
windows of that many tokens from a zero state; a model trained with
train.carry_state saw longer contexts and may be exported with a larger C).
- Context: a line's ids are its words, with `<eos>` before and after when the
  text settings use `<eos>` (the leading one stands for the end of the previous
  line, as in training, and serves as the start-of-line marker).
- next_words: top-k' (k' = min(k, vocabulary size)) of the softmax after the
  last C context ids. A line with no context id (no word, and no `<eos>` in
  the settings) cannot be predicted: its words are "" and probs 0.
  `<???>` and `<eos>` are ordinary predictions ("a rare word", "end of line").
- score: the trainer's evaluation protocol (for C = window_length, stride =
  window_length). The ids are cut into windows of C + 1 ids with stride C
  (consecutive windows share one id), and every id after the first is
  predicted once from the preceding ids of its window. log_prob is the sum of
  those natural-log probabilities, tokens their number (ids - 1, at least 0),
  unknown_tokens how many of them are `<???>`, known_log_prob the sum over the
  others. Any length works; logits are computed at most `logit_budget` floats
  at a time, and only where a token is predicted, so a 100,000-word line needs
  no more memory than a batch.
- word_count / unknown_count: words of the text after normalization, and how
  many of them are not in the vocabulary (for flags such as "all unknown").
- generate: continues one text word by word, each from the softmax after the
  last C ids (as next_words). temperature 0: the most likely word (greedy);
  otherwise sampled from softmax(logits / temperature), restricted to the
  top_k most likely words when top_k > 0 and then to the smallest set of most
  likely words whose probability reaches top_p when top_p < 1 (nucleus
  sampling, Holtzman et al. 2020), with a stateless generator seeded by
  (seed, step): the same seed gives the same words. The unknown symbol is never
  emitted unless allow_unknown; generation stops after `<eos>` where the text
  settings have it. A text with no context id generates nothing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time

import keras
import tensorflow as tf

from nextword import config as config_lib
from nextword import storage
from nextword.artifacts import bundle as bundle_lib
from nextword.config import Config
from nextword.text import contract, graph_text
from nextword.text.contract import TextSettings
from trainer import lm
from trainer.data import read_manifest_and_vocab
from trainer.model import weights_sha256

_LOG = logging.getLogger(__name__)

# Floats of logits `score` computes at once (64 MiB): bounds memory for any line length.
DEFAULT_LOGIT_BUDGET = 1 << 24
# What an export killed midway leaves in the bundle directory, which the next export removes:
# TensorFlow's atomic writes (<name>.tmp<hex>), its sharded variables save, and our own writes.
_LEFTOVERS = (
    storage.Owned("", r"(?:saved_model|fingerprint)\.pb\.tmp[0-9a-f]{32}"),
    storage.Owned(bundle_lib.VARIABLES_DIR, r"variables_temp"),
    storage.Owned(contract.BUNDLE_META_DIR, storage.temp_names(*bundle_lib.META_FILES, bundle_lib.NGRAM_FILE)),
)
# The n-gram tables of an earlier export: this one writes them again, or leaves them out.
_NGRAM = (storage.Owned(contract.BUNDLE_META_DIR, re.escape(bundle_lib.NGRAM_FILE)),)
# The SavedModel's own files, removed before TensorFlow writes them again: it opens some in place (the
# variables' index), which would write through a link or into a hard-linked copy of the bundle.
_SAVED_MODEL = (
    storage.Owned("", r"(?:saved_model|fingerprint)\.pb"),
    storage.Owned(bundle_lib.VARIABLES_DIR, r"variables\.(?:index|data-\d{5,}-of-\d{5,})"),
)
_INFO = f"{contract.BUNDLE_META_DIR}/{contract.BUNDLE_INFO_FILE}"
# The signature TF Serving, Vertex AI's prebuilt containers and saved_model_cli call when none is named.
SIGNATURE_SERVING = "serving_default"
# A model version folder as TF Serving and Vertex AI read it: a positive integer; other names are ignored.
_VERSION = re.compile(r"[1-9][0-9]*")
# Where a --serving-dir export is built before it is renamed into place (not an integer: servers skip it).
_STAGING_PREFIX = ".export-"


class BundleGraph:
    """The bundle's signatures over one Keras model, its vocabulary and its text settings."""

    def __init__(
        self,
        model: keras.Model,
        tokens: list[str],
        settings: TextSettings,
        context_tokens: int,
        logit_budget: int = DEFAULT_LOGIT_BUDGET,
    ):
        self.model = model
        # The model's hidden states and its output head apart (trainer/lm.py): next_words projects only
        # the last position, score only the predicted ones, and the streams carry the recurrent states.
        self.lm = lm.of(model)
        self.output_layer = self.lm.head
        self.table = graph_text.vocab_table(tokens)
        self.vocab = tf.constant(tokens, dtype=tf.string)
        self.vocab_size = len(tokens)
        self.settings = settings
        self.window = context_tokens
        self.rows_per_slice = max(1, logit_budget // (context_tokens * self.vocab_size))
        self.positions_per_slice = max(1, logit_budget // self.vocab_size)
        self.state_size = sum(self.lm.state_units)

    # --- shared pieces -----------------------------------------------------
    def _hidden(self, ids: tf.Tensor) -> tf.Tensor:
        """ids [batch, t] from a zero state -> hidden [batch, t, units], the output head's input."""
        return self.lm.hidden(ids, (), training=False)[0]

    def _words(self, text: tf.Tensor) -> tuple[tf.RaggedTensor, tf.Tensor, tf.Tensor]:
        """ids of the words [batch, (words)], word_count [batch], unknown_count [batch]."""
        ids = graph_text.lookup_ids(graph_text.tokenize(text, self.settings), self.table)
        word_count = tf.cast(ids.row_lengths(), tf.int32)
        unknown_count = tf.reduce_sum(tf.cast(tf.equal(ids, contract.UNK_ID), tf.int32), axis=1)
        return ids, word_count, unknown_count

    @staticmethod
    def _gather_padded(ids: tf.RaggedTensor, positions: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
        """ids.flat_values at `positions` where valid, else 0 (padding)."""
        flat = tf.concat([ids.flat_values, tf.zeros([1], tf.int32)], axis=0)
        pad_index = tf.cast(tf.size(ids.flat_values), positions.dtype)
        return tf.gather(flat, tf.where(valid, positions, pad_index))

    # --- next_words --------------------------------------------------------
    def next_words(self, text: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        tf.debugging.assert_greater_equal(k, 1, message="next_words: k must be >= 1")
        word_ids, word_count, unknown_count = self._words(text)
        context = graph_text.with_eos(word_ids, self.settings, contract.EOS_ID, before=True, after=False)
        lengths = context.row_lengths()  # [batch] int64
        used = tf.minimum(lengths, self.window)  # context ids used, [batch]
        offsets = tf.range(_widest(used, self.window), dtype=tf.int64)[tf.newaxis, :]  # [1, w], w <= W
        starts = (context.row_starts() + lengths - used)[:, tf.newaxis]  # [batch, 1]
        ids = self._gather_padded(context, starts + offsets, offsets < used[:, tf.newaxis])  # [batch, w]
        hidden = self._hidden(ids)  # [batch, w, units]
        last = tf.gather(hidden, tf.maximum(used - 1, 0), batch_dims=1)  # [batch, units]
        logits = self.output_layer(last[:, tf.newaxis, :])[:, 0, :]  # [batch, V]
        probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        top = tf.math.top_k(probs, k=tf.minimum(k, self.vocab_size))  # [batch, k']
        has_context = (used > 0)[:, tf.newaxis]
        return {
            "words": tf.where(has_context, tf.gather(self.vocab, top.indices), ""),
            "probs": tf.where(has_context, top.values, 0.0),
            "word_count": word_count,
            "unknown_count": unknown_count,
        }

    # --- score -------------------------------------------------------------
    def _windows(self, ids: tf.RaggedTensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Windows of up to W+1 ids, stride W: ids [c, w+1], valid [c, w+1], line of each window [c].

        w is W, or less when every line of the call is shorter (right padding never changes a result).
        """
        predicted = tf.maximum(ids.row_lengths() - 1, 0)  # [batch]
        per_line = (predicted + self.window - 1) // self.window  # windows per line, [batch]
        line_of = tf.repeat(tf.range(ids.nrows()), per_line)  # [c]
        first_window = tf.repeat(tf.cumsum(per_line, exclusive=True), per_line)  # [c]
        index_in_line = tf.range(tf.size(line_of, out_type=tf.int64)) - first_window  # [c]
        starts = tf.gather(ids.row_starts(), line_of) + index_in_line * self.window  # [c]
        width = _widest(predicted, self.window)
        positions = starts[:, tf.newaxis] + tf.range(width + 1, dtype=tf.int64)  # [c, w+1]
        valid = positions < tf.gather(ids.row_limits(), line_of)[:, tf.newaxis]  # [c, w+1]
        return self._gather_padded(ids, positions, valid), valid, line_of

    def _token_log_probs(self, windows: tf.Tensor, valid: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """log P(id_i | ids_<i of the window) at every predicted position of windows [s, w+1]:
        ([m] float32, whether each target is the unknown word [m] bool, window of each [m] int64),
        window by window, positions in order.

        The output layer (the bulk of the work) runs only where a token is predicted, never on padding.
        """
        hidden = self._hidden(windows[:, :-1])  # [s, w, units]
        predicted_at = tf.where(valid[:, 1:])  # [m, 2] (window, position)
        logits = self.output_layer(tf.gather_nd(hidden, predicted_at)[tf.newaxis])[0]  # [m, V]
        targets = tf.gather_nd(windows[:, 1:], predicted_at)  # [m]
        return _target_log_probs(logits, targets), tf.equal(targets, contract.UNK_ID), predicted_at[:, 0]

    def _line_log_probs(self, text: tf.Tensor, per_token: bool) -> dict[str, tf.Tensor]:
        """The score protocol over a batch of lines; with `per_token`, also every scored token's value."""
        word_ids, word_count, unknown_count = self._words(text)
        ids = graph_text.with_eos(word_ids, self.settings, contract.EOS_ID, before=True)
        windows, valid, line_of = self._windows(ids)
        num_windows = tf.shape(windows)[0]
        batch = tf.cast(ids.nrows(), tf.int32)
        step = self.rows_per_slice

        def body(i, totals, *tokens):
            lo = i * step
            hi = tf.minimum(lo + step, num_windows)
            log_probs, unknown, window_of = self._token_log_probs(windows[lo:hi], valid[lo:hi])
            values = tf.cast(log_probs, tf.float64)
            values = tf.stack([values, tf.where(unknown, tf.zeros_like(values), values)], axis=1)  # [m, 2]
            window_sums = tf.math.unsorted_segment_sum(values, window_of, num_segments=tf.shape(windows[lo:hi])[0])
            totals = totals + tf.math.unsorted_segment_sum(window_sums, line_of[lo:hi], batch)  # [batch, 2]
            return (i + 1, totals, *(t.write(i, log_probs) for t in tokens))

        num_slices = (num_windows + step - 1) // step
        initial = (tf.constant(0), tf.zeros([batch, 2], tf.float64))  # per line: all tokens, known tokens only
        if per_token:
            initial += (tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False, element_shape=[None]),)
        # One slice at a time: parallel iterations would multiply the logits' memory.
        _, totals, *tokens = tf.while_loop(lambda i, *_: i < num_slices, body, initial, parallel_iterations=1)
        predicted = ids[:, 1:]
        unknown = tf.equal(predicted, contract.UNK_ID)
        out = {
            "log_prob": tf.cast(totals[:, 0], tf.float32),
            "known_log_prob": tf.cast(totals[:, 1], tf.float32),
            "tokens": tf.cast(predicted.row_lengths(), tf.int32),
            "unknown_tokens": tf.reduce_sum(tf.cast(unknown, tf.int32), axis=1),
            "word_count": word_count,
            "unknown_count": unknown_count,
        }
        if per_token:
            # Windows run line by line and, within a line, in order: the values come out line-major.
            token_log_prob = tokens[0].concat()[: tf.size(predicted.flat_values)]
            words = graph_text.tokenize(text, self.settings)
            strings = graph_text.with_eos(words, self.settings, contract.EOS_TOKEN, before=True)
            out.update(
                token_log_prob=token_log_prob, token_text=strings[:, 1:].flat_values, token_unknown=unknown.flat_values
            )
        return out

    def score(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._line_log_probs(text, per_token=False)

    def score_tokens(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._line_log_probs(text, per_token=True)

    def serve(self, text: tf.Tensor, k: int) -> dict[str, tf.Tensor]:
        """serving_default: next_words with a fixed k and score, in one call; every output has the batch first."""
        width = min(k, self.vocab_size)
        nxt = self.next_words(text, tf.constant(width, tf.int32))
        scored = self.score(text)
        # A static k in the signature, so saved_model_cli and a server's metadata show [-1, k].
        return {
            "words": tf.ensure_shape(nxt["words"], [None, width]),
            "probs": tf.ensure_shape(nxt["probs"], [None, width]),
            "log_prob": scored["log_prob"],
            "tokens": scored["tokens"],
        }

    # --- streams: document context, the recurrent state carried from call to call --------------
    def _stream_hidden(self, ids: tf.Tensor, state: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """ids [1, t] from `state` [S] -> hidden [1, t, units] (the output head's input), state after [S].

        `state` is the recurrent layers' states in order, each [units] (trainer/lm.py's state spec).
        """
        hidden, after = self.lm.hidden(ids, tf.split(state[tf.newaxis], self.lm.state_units, axis=1), training=False)
        return hidden, tf.concat(after, axis=1)[0]

    def _stream(self, text: tf.Tensor, state: tf.Tensor, last_id: tf.Tensor):
        """The chunk's tokens (each line's words, then `<eos>` when the settings have it) after `last_id`.

        Returns (ids [n, (t)], strings [n, (t)], word_count, unknown_count, scored [t] flat: the first token
        of a document (last_id < 0) is context only, as in training; targets [m], hidden [m, units],
        state after, last id after).
        """
        word_ids, word_count, unknown_count = self._words(text)
        strings = graph_text.tokenize(text, self.settings)
        word_ids = graph_text.with_eos(word_ids, self.settings, contract.EOS_ID)
        strings = graph_text.with_eos(strings, self.settings, contract.EOS_TOKEN)
        flat = word_ids.flat_values
        has_previous = tf.cast(last_id >= 0, tf.int32)
        sequence = tf.concat([tf.reshape(last_id, [1])[:has_previous], flat], axis=0)  # [s]
        inputs, targets = sequence[:-1], sequence[1:]
        scored = tf.range(tf.size(flat)) >= 1 - has_previous

        def run():
            hidden, after = self._stream_hidden(inputs[tf.newaxis], state)
            return hidden[0], after

        def idle():
            return tf.zeros([0, self.lm.hidden_units], tf.float32), state

        hidden, after = tf.cond(tf.size(inputs) > 0, run, idle)
        last = tf.cond(tf.size(sequence) > 0, lambda: sequence[-1], lambda: last_id)
        return word_ids, strings, word_count, unknown_count, scored, targets, hidden, after, last

    def score_stream(self, text: tf.Tensor, state: tf.Tensor, last_id: tf.Tensor) -> dict[str, tf.Tensor]:
        ids, strings, word_count, unknown_count, scored, targets, hidden, after, last = self._stream(
            text, state, last_id
        )
        count = tf.shape(targets)[0]
        step = self.positions_per_slice

        def body(i, values):
            lo = i * step
            hi = tf.minimum(lo + step, count)
            logits = self.output_layer(hidden[lo:hi][tf.newaxis])[0]  # [p, V]
            return i + 1, values.write(i, _target_log_probs(logits, targets[lo:hi]))

        values = tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False, element_shape=[None])
        _, values = tf.while_loop(
            lambda i, _: i < (count + step - 1) // step, body, (tf.constant(0), values), parallel_iterations=1
        )
        token_log_prob = values.concat()[:count]
        line_of = tf.boolean_mask(tf.cast(ids.value_rowids(), tf.int32), scored)  # [m]
        unknown = tf.equal(targets, contract.UNK_ID)
        lines = tf.cast(ids.nrows(), tf.int32)

        def per_line(values, dtype=tf.float64):
            return tf.math.unsorted_segment_sum(tf.cast(values, dtype), line_of, lines)

        value64 = tf.cast(token_log_prob, tf.float64)
        return {
            "log_prob": tf.cast(per_line(value64), tf.float32),
            "known_log_prob": tf.cast(per_line(tf.where(unknown, tf.zeros_like(value64), value64)), tf.float32),
            "tokens": per_line(tf.ones_like(targets), tf.int32),
            "unknown_tokens": per_line(unknown, tf.int32),
            "word_count": word_count,
            "unknown_count": unknown_count,
            "token_log_prob": token_log_prob,
            "token_text": tf.boolean_mask(strings.flat_values, scored),
            "token_unknown": unknown,
            # for the continuous cache of document scoring (batch_predict/predictor.py, nextword/cache.py)
            "token_hidden": hidden,
            "token_id": targets,
            "state": after,
            "last_id": last,
        }

    def advance_stream(self, text: tf.Tensor, state: tf.Tensor, last_id: tf.Tensor) -> dict[str, tf.Tensor]:
        """The state after the chunk's tokens, without the output layer (warming up on earlier text)."""
        ids, *_, targets, _, after, last = self._stream(text, state, last_id)
        return {"state": after, "last_id": last, "tokens": tf.cast(tf.size(ids.flat_values), tf.int32)}

    # --- generate ----------------------------------------------------------
    def generate(
        self,
        text: tf.Tensor,
        words: tf.Tensor,
        temperature: tf.Tensor,
        top_k: tf.Tensor,
        top_p: tf.Tensor,
        seed: tf.Tensor,
        allow_unknown: tf.Tensor,
    ) -> dict[str, tf.Tensor]:
        word_ids, _, _ = self._words(text[tf.newaxis])
        context = graph_text.with_eos(word_ids, self.settings, contract.EOS_ID, before=True, after=False)
        context = context.flat_values  # [c] int32
        is_unknown = tf.equal(tf.range(self.vocab_size), contract.UNK_ID)  # [V]
        k = tf.where(top_k > 0, tf.minimum(top_k, self.vocab_size), self.vocab_size)

        def next_id(ids: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
            window = ids[tf.maximum(tf.size(ids) - self.window, 0) :][tf.newaxis]  # [1, w]
            hidden = self._hidden(window)[:, -1:, :]  # [1, 1, units]
            logits = tf.cast(self.output_layer(hidden)[0, 0], tf.float32)  # [V]
            logits = tf.where(is_unknown & ~allow_unknown, tf.float32.min, logits)
            kth = tf.math.top_k(logits, k=k).values[-1]
            logits = tf.where(logits < kth, tf.float32.min, logits)
            greedy = tf.argmax(logits, output_type=tf.int32)
            scaled = logits / tf.maximum(temperature, 1e-6)
            # Nucleus: keep the most likely words until their probability reaches top_p (at least one word).
            probs = tf.nn.softmax(scaled)  # [V]
            descending = tf.sort(probs, direction="DESCENDING")  # [V]
            short = tf.reduce_sum(tf.cast(tf.cumsum(descending) < top_p, tf.int32))  # words that stay short of it
            floor = descending[tf.minimum(short, self.vocab_size - 1)]
            scaled = tf.where(probs < floor, tf.float32.min, scaled)
            sampled = tf.random.stateless_categorical(scaled[tf.newaxis], 1, seed=tf.stack([seed, step]))[0, 0]
            return tf.where(temperature > 0, tf.cast(sampled, tf.int32), greedy)

        def body(step, ids, out, stopped):
            chosen = next_id(ids, step)
            stopped = tf.logical_and(tf.constant(self.settings.eos), tf.equal(chosen, contract.EOS_ID))
            return step + 1, tf.concat([ids, chosen[tf.newaxis]], 0), out.write(step, chosen), stopped

        def more(step, ids, out, stopped):
            return (step < words) & ~stopped & (tf.size(ids) > 0)

        initial = (tf.constant(0), context, tf.TensorArray(tf.int32, size=0, dynamic_size=True), tf.constant(False))
        _, _, out, _ = tf.while_loop(
            more, body, initial, shape_invariants=(tf.TensorShape([]), tf.TensorShape([None]), None, tf.TensorShape([]))
        )
        return {"words": tf.gather(self.vocab, out.stack())}


def _target_log_probs(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """log-softmax of logits [m, V] at targets [m] -> [m] float32 (the output may already be log-probabilities)."""
    logits = tf.cast(logits, tf.float32)
    return tf.gather(logits, targets, batch_dims=1) - tf.reduce_logsumexp(logits, axis=-1)


def _widest(lengths: tf.Tensor, window: int) -> tf.Tensor:
    """max(lengths) clipped to [1, window]: the padded width a call needs (lengths may be empty)."""
    longest = tf.reduce_max(tf.concat([lengths, tf.zeros([1], lengths.dtype)], axis=0))
    return tf.clip_by_value(longest, 1, window)


def build_archive(graph: BundleGraph, serving_top_k: int) -> keras.export.ExportArchive:
    archive = keras.export.ExportArchive()
    archive.track(graph.model)
    archive.track(graph.table)
    text_spec = tf.TensorSpec([None], tf.string, name="text")
    # Named, so write_out does not make the first endpoint (next_words, with its scalar k) the default.
    archive.add_endpoint(SIGNATURE_SERVING, lambda text: graph.serve(text, serving_top_k), input_signature=[text_spec])
    k_spec = tf.TensorSpec([], tf.int32, name="k")
    archive.add_endpoint(contract.SIGNATURE_NEXT_WORDS, graph.next_words, input_signature=[text_spec, k_spec])
    archive.add_endpoint(contract.SIGNATURE_SCORE, graph.score, input_signature=[text_spec])
    archive.add_endpoint(bundle_lib.SIGNATURE_SCORE_TOKENS, graph.score_tokens, input_signature=[text_spec])
    stream = [
        text_spec,
        tf.TensorSpec([graph.state_size], tf.float32, name="state"),
        tf.TensorSpec([], tf.int32, name="last_id"),
    ]
    archive.add_endpoint(bundle_lib.SIGNATURE_SCORE_STREAM, graph.score_stream, input_signature=stream)
    archive.add_endpoint(bundle_lib.SIGNATURE_ADVANCE_STREAM, graph.advance_stream, input_signature=stream)
    scalar = [
        tf.TensorSpec([], tf.string, name="text"),
        tf.TensorSpec([], tf.int32, name="words"),
        tf.TensorSpec([], tf.float32, name="temperature"),
        tf.TensorSpec([], tf.int32, name="top_k"),
        tf.TensorSpec([], tf.float32, name="top_p"),
        tf.TensorSpec([], tf.int32, name="seed"),
        tf.TensorSpec([], tf.bool, name="allow_unknown"),
    ]
    archive.add_endpoint(contract.SIGNATURE_GENERATE, graph.generate, input_signature=scalar)
    return archive


def _ours(content: dict) -> bool:
    """Whether a bundle.json is one nextword wrote (a BundleInfo of this format)."""
    try:
        bundle_lib.BundleInfo.from_dict(content, _INFO)
    except ValueError:
        return False
    return True


def export_bundle(
    model: keras.Model,
    data_dir: str,
    config: Config,
    bundle_dir: str,
    *,
    context_tokens: int | None = None,
    logit_budget: int = DEFAULT_LOGIT_BUDGET,
) -> str:
    """Writes the bundle for `model` (trained on `data_dir`) to `bundle_dir` and returns its path.

    context_tokens: ids the signatures condition on (default: the data's window_length).
    """
    manifest, tokens = read_manifest_and_vocab(data_dir)  # the trainer's own checks
    settings = manifest.text
    model_vocab = model.output_shape[-1]
    if model_vocab != len(tokens):
        raise ValueError(
            f"{data_dir}: the model predicts {model_vocab} ids but {contract.VOCAB_FILE} has {len(tokens)} tokens; "
            "export the model with the data it was trained on"
        )
    window_length = manifest.window_length
    context_tokens = context_tokens or window_length
    meta_dir = storage.join(bundle_dir, contract.BUNDLE_META_DIR)
    info_path = storage.join(meta_dir, contract.BUNDLE_INFO_FILE)
    meta_names = [f"{contract.BUNDLE_META_DIR}/{name}" for name in bundle_lib.META_FILES]
    storage.claim(bundle_dir, "export", _LEFTOVERS + _SAVED_MODEL + _NGRAM, meta_names, marker=_INFO, trust=_ours,
                  key="the bundle directory (train.model_dir/bundle)")  # fmt: skip
    # The commit marker goes first, so a failed export never looks complete; then a killed export's leftovers.
    storage.clear_owned(bundle_dir, _LEFTOVERS + _SAVED_MODEL + _NGRAM, marker=_INFO)
    graph = BundleGraph(model, tokens, settings, context_tokens, logit_budget)
    build_archive(graph, config.predict.top_k).write_out(bundle_dir, verbose=False)
    storage.makedirs(meta_dir)
    storage.write_text(storage.join(meta_dir, contract.VOCAB_FILE), contract.vocab_text(tokens))
    storage.write_text(
        storage.join(meta_dir, contract.MANIFEST_FILE), json.dumps(manifest.to_dict(), indent=2, sort_keys=True)
    )
    storage.write_text(storage.join(meta_dir, contract.CONFIG_FILE), config_lib.to_yaml(config))
    sha256 = weights_sha256(model)
    chosen = chosen_mixtures(config.train.model_dir, sha256)
    cache = dict(chosen.get("cache", {}).get("parameters", {}))
    checksums = bundle_lib.savedmodel_checksums(bundle_dir)
    ngram = ngram_parameters(config, chosen, tokens, bool(cache))
    if ngram:
        tables, ngram = ngram
        cache = dict(chosen["ngram"].get("cache_parameters", cache)) if cache else cache  # chosen with the n-gram
        ngram_path = storage.join(bundle_dir, bundle_lib.NGRAM_PATH)
        with storage.atomic_write(ngram_path) as f:
            f.write(tables.to_bytes())
        checksums[bundle_lib.NGRAM_PATH] = storage.crc32c(ngram_path)
    info = bundle_lib.BundleInfo(
        fingerprint=manifest.fingerprint,
        text=settings,
        window_length=window_length,
        context_tokens=context_tokens,
        vocab_size=len(tokens),
        created_unix=int(time.time()),
        signatures=[*bundle_lib.SIGNATURES, SIGNATURE_SERVING],
        checksums=checksums,
        state_size=graph.state_size,
        weights_sha256=sha256,
        cache=cache,
        ngram=ngram or {},
    )
    storage.write_marker(info_path, info.to_dict())
    _LOG.info("exported bundle %s (fingerprint %s, vocabulary %d)", bundle_dir, info.fingerprint, len(tokens))
    return bundle_dir


def chosen_mixtures(model_dir: str, sha256: str) -> dict:
    """metrics.json where `nextword evaluate` or training chose its "cache" and "ngram" for the weights whose
    sha256 this is; {} where they were chosen for other weights, or not at all."""
    from trainer.evaluate import read_metrics

    metrics = read_metrics(model_dir)
    return metrics if metrics.get("weights_sha256") == sha256 else {}


def ngram_parameters(config: Config, chosen: dict, tokens: list[str], with_cache: bool):
    """(the n-gram tables, bundle.json's `ngram`) where `chosen` (chosen_mixtures) gives the n-gram a weight
    above 0 on valid for some context order (the weights with the cache where the bundle has the cache);
    None otherwise, or where the baseline's tables exceed evaluate's NGRAM_MEMORY_BYTES."""
    from trainer.evaluate import ngram_tables

    weights = chosen.get("ngram", {}).get("weights", {}).get("lstm_cache_ngram" if with_cache else "lstm_ngram")
    tables = ngram_tables(config, tokens) if isinstance(weights, list) and any(weights) else None
    if tables is None or len(weights) != tables.order + 1:  # chosen for other tables: mixed in by none
        return None
    return tables, {"weights_by_order": weights[1:], "order": tables.order}


def serving_versions(serving_dir: str) -> list[int]:
    """The integer versions in a TF Serving model folder, ascending ([] when the folder does not exist)."""
    if not tf.io.gfile.isdir(serving_dir):
        return []
    names = (name.rstrip("/") for name in tf.io.gfile.listdir(serving_dir))
    return sorted(int(name) for name in names if _VERSION.fullmatch(name))


def export_serving_version(model: keras.Model, data_dir: str, config: Config, serving_dir: str) -> str:
    """Writes the bundle as `serving_dir/<version>/` (version: one above the highest there, from 1) and returns it.

    The version folder appears whole: the bundle is built under a name servers ignore (`.export-…`) and
    renamed into place, so TF Serving, which polls the folder and loads the highest version, never sees a
    part of it. Other versions are never written, cleared or replaced: a version taken meanwhile by another
    export moves this one to the next number. On gs:// there is no rename of a folder: the bundle is built
    locally and copied with saved_model.pb last (a server reads a version through saved_model.pb).
    """
    if storage.is_remote(serving_dir):
        with tempfile.TemporaryDirectory(prefix=_STAGING_PREFIX) as staging:
            export_bundle(model, data_dir, config, staging)
            target = storage.join(serving_dir, str(max(serving_versions(serving_dir), default=0) + 1))
            _upload_saved_model_last(staging, target)
    else:
        storage.makedirs(serving_dir, "--serving-dir")
        # In the serving folder itself, so the rename stays on one filesystem and is atomic.
        staging = tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=serving_dir)
        try:
            export_bundle(model, data_dir, config, staging)
            os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the version from a server running as another user
            target = _rename_to_next_version(staging, serving_dir)
        finally:
            if os.path.isdir(staging):  # the export failed: nothing of it stays
                shutil.rmtree(staging)
    _LOG.info("serving version %s written (TF Serving and Vertex AI load the highest version)", target)
    return target


def _rename_to_next_version(staging: str, serving_dir: str) -> str:
    while True:
        target = os.path.join(serving_dir, str(max(serving_versions(serving_dir), default=0) + 1))
        if os.path.lexists(target):  # created since the listing (another export): take the next number
            continue
        try:
            os.rename(staging, target)
        except OSError as err:
            # Another export renamed its version to this number first (a non-empty folder is never replaced).
            if os.path.isdir(target) and os.listdir(target):
                continue
            raise OSError(f"{target}: cannot rename the exported version into place ({err.strerror})") from err
        return target


def _upload_saved_model_last(local_dir: str, target: str) -> None:
    files = [
        os.path.relpath(os.path.join(root, name), local_dir) for root, _, names in os.walk(local_dir) for name in names
    ]
    for rel in sorted(files, key=lambda rel: rel == bundle_lib.SAVED_MODEL_FILE):
        destination = storage.join(target, *rel.split(os.sep))
        tf.io.gfile.makedirs(os.path.dirname(destination))
        tf.io.gfile.copy(os.path.join(local_dir, rel), destination, overwrite=False)
