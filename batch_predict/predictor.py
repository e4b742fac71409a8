"""The one scoring path: a bundle's next words, line and document scores, and generation.

Everything that asks the model goes through a `Predictor`: the batch job (batch_predict/handler.py and
transforms.py, which only read ranges, batch lines and commit), the one-line `nextword predict`,
`nextword generate` and the Python API (`nextword.load`). It is the pre- and post-processing around
`LoadedBundle`, which only loads the SavedModel and calls its signatures:

- line context: each text on its own; texts are grouped by length into model calls of at most
  `max_batch_tokens` padded positions (core.length_groups);
- document context: the texts in order as one stream, the recurrent state carried from text to text
  (a `Document`), in calls of about `max_batch_tokens` tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from batch_predict import core
from nextword import cache
from nextword.artifacts import bundle as bundle_lib
from nextword.ngram import ArpaTables
from nextword.text import contract

CONTEXTS = ("line", "document")


class LoadedBundle:
    """The bundle's signatures called with Python lists, answering NumPy (picklable across processes)."""

    def __init__(self, path: str):
        import tensorflow as tf

        bundle_lib.load_bundle(path)  # checked again where it is loaded: workers may see another file
        self._tf = tf
        self._saved_model = tf.saved_model.load(path)
        self._signatures = self._saved_model.signatures

    def next_words(self, texts: Sequence[str], k: int) -> dict[str, np.ndarray]:
        out = self._signatures[contract.SIGNATURE_NEXT_WORDS](text=self._strings(texts), k=self._tf.constant(k))
        return {name: value.numpy() for name, value in out.items()}

    def score(self, texts: Sequence[str], per_token: bool) -> dict[str, np.ndarray]:
        """Per line: log_prob, known_log_prob, tokens, unknown_tokens, word_count, unknown_count; with
        `per_token`, also flat over the lines' scored tokens, in order: token_log_prob, token_text,
        token_unknown (score_tokens, slower than score: it tokenizes the text again for the strings)."""
        signature = bundle_lib.SIGNATURE_SCORE_TOKENS if per_token else contract.SIGNATURE_SCORE
        out = self._signatures[signature](text=self._strings(texts))
        return {name: value.numpy() for name, value in out.items()}

    def score_stream(self, texts: Sequence[str], state: np.ndarray, last_id: int) -> dict[str, np.ndarray]:
        """score's outputs for lines that continue a document, from the state after the text before them;
        also the state and last id after them (for the next call)."""
        tf = self._tf
        out = self._signatures[bundle_lib.SIGNATURE_SCORE_STREAM](
            text=self._strings(texts), state=tf.constant(state), last_id=tf.constant(last_id)
        )
        return {name: value.numpy() for name, value in out.items()}

    def advance_stream(self, texts: Sequence[str], state: np.ndarray, last_id: int) -> tuple[np.ndarray, int]:
        """The state and last id after `texts`, scoring nothing (the warm-up)."""
        tf = self._tf
        out = self._signatures[bundle_lib.SIGNATURE_ADVANCE_STREAM](
            text=self._strings(texts), state=tf.constant(state), last_id=tf.constant(last_id)
        )
        return out["state"].numpy(), int(out["last_id"].numpy())

    def generate(
        self, text: str, words: int, temperature: float, top_k: int, top_p: float, seed: int, allow_unknown: bool
    ) -> list[str]:
        tf = self._tf
        signature = self._signatures[contract.SIGNATURE_GENERATE]
        nucleus = {"top_p": tf.constant(top_p, tf.float32)}
        if "top_p" not in signature.structured_input_signature[1]:  # exported before top_p
            if top_p < 1:
                raise ValueError(
                    "top_p: this bundle was exported before top-p sampling; re-export it (nextword export)"
                )
            nucleus = {}
        out = signature(
            text=tf.constant(text), words=tf.constant(words), temperature=tf.constant(temperature, tf.float32),
            top_k=tf.constant(top_k), seed=tf.constant(seed), allow_unknown=tf.constant(allow_unknown), **nucleus,
        )  # fmt: skip
        return [w.decode("utf-8") for w in out["words"].numpy()]

    def _strings(self, texts: Sequence[str]):
        return self._tf.constant(list(texts), dtype=self._tf.string)


def as_lists(outputs: dict[str, np.ndarray]) -> dict[str, list]:
    """Plain Python lists, once per call: per-element NumPy scalars are slow."""
    return {name: value.tolist() for name, value in outputs.items()}


def line_scores(score: dict[str, list], per_token: bool) -> list[core.LineScore]:
    """score's (or score_stream's) outputs, as plain lists -> one LineScore per line."""
    offsets = np.cumsum([0, *score["tokens"]]).tolist()
    lines = []
    for i, (lo, hi) in enumerate(itertools.pairwise(offsets)):
        tokens = None
        if per_token:
            texts, unknown, values = (score[name][lo:hi] for name in ("token_text", "token_unknown", "token_log_prob"))
            tokens = [(t.decode("utf-8"), u, v) for t, u, v in zip(texts, unknown, values, strict=True)]
        lines.append(core.LineScore(
            score["log_prob"][i], score["tokens"][i], score["unknown_tokens"][i], score["known_log_prob"][i], tokens
        ))  # fmt: skip
    return lines


def next_words_of(out: dict[str, list], k: int | None = None) -> list[list[tuple[str, float]]]:
    """next_words' outputs, as plain lists -> per line, (word, probability) from the most likely; [] for a
    line with no context to predict from (the bundle answers an empty word there)."""
    found = []
    for words, probs in zip(out["words"], out["probs"], strict=True):
        pairs = [(w.decode("utf-8"), p) for w, p in zip(words[:k], probs[:k], strict=True)]
        found.append(pairs if pairs and pairs[0][0] else [])
    return found


class Document:
    """A stream of texts scored in order, the model's state carried from one to the next.

    A document starts after `<eos>` when the bundle has it, so every text's tokens are predicted; without
    `<eos>`, the document's first token is context only. `advance` runs texts through the model as context
    without scoring them (a warm-up); `score` scores texts that continue the document.

    With the bundle's continuous cache (bundle.json's `cache`, nextword/cache.py), each token's probability
    mixes in the document's earlier tokens, those of warm-ups included, as `nextword evaluate` chose it. With
    its n-gram (bundle.json's `ngram`, nextword/ngram.py), that probability is then mixed with the n-gram's
    of the token after the document's last order - 1 words: p = (1 - w) p + w p_ngram, w the weight for the
    context's order: 1 + the words of the longest end of the context the n-gram model holds (bundle.json's
    weights_by_order; a weight never depends on the token, so the mixture stays a distribution). A document
    starts with `<s>`, `<eos>` after it where the bundle has it; without, the first word is not known to the
    n-gram, whose first contexts stop after it.
    """

    def __init__(self, model: LoadedBundle, bundle: bundle_lib.Bundle, ngram: ArpaTables | None = None):
        self._model = model
        self.state = np.zeros([bundle.state_size], np.float32)
        self.last_id = contract.EOS_ID if bundle.settings.eos else -1
        self._cache = cache.Window(cache.CacheParams(**bundle.info.cache)) if bundle.info.cache else None
        self._ngram = (ngram, bundle.info.ngram_weights(bundle.path)) if ngram is not None else None
        self._history = np.array([0, self.last_id + 1] if self.last_id >= 0 else [-1], np.int64)  # n-gram codes

    @property
    def _needs_ids(self) -> bool:
        """Whether a warm-up must be scored to keep the cache's hidden states or the n-gram's history."""
        return bool(self._cache or self._ngram)

    def advance(self, texts: Sequence[str]) -> None:
        if texts and self._needs_ids:  # the scoring signature has the hidden states and the ids
            out = self._model.score_stream(texts, self.state, self.last_id)
            if self._cache:
                self._cache.hold(out["token_hidden"], out["token_id"])
            if self._ngram:
                self._history = self._ngram[0].continued_log_probs(self._history, out["token_id"])[2]
            self.state, self.last_id = out["state"], int(out["last_id"])
        elif texts:
            self.state, self.last_id = self._model.advance_stream(texts, self.state, self.last_id)

    def score(self, texts: Sequence[str], per_token: bool) -> tuple[list[core.LineScore], dict[str, list]]:
        """The texts' LineScores, and the call's outputs as lists (word and unknown counts per line)."""
        if not texts:
            return [], {}
        out = self._model.score_stream(texts, self.state, self.last_id)
        self.state, self.last_id = out.pop("state"), int(out.pop("last_id"))
        hidden, ids = out.pop("token_hidden", None), out.pop("token_id", None)
        if self._needs_ids and hidden is not None:
            out.update(self._mixed(out, hidden, ids))
        out = as_lists(out)
        return line_scores(out, per_token), out

    def _mixed(self, out: dict[str, np.ndarray], hidden: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
        """score_stream's token and line log-probabilities with the cache, then the n-gram, mixed in."""
        token_log_prob = np.asarray(out["token_log_prob"], np.float64)
        if self._cache:
            token_log_prob = self._cache.log_probs(hidden, ids, token_log_prob)
        if self._ngram:
            tables, weights = self._ngram
            ngram_log_prob, orders, self._history = tables.continued_log_probs(self._history, ids)
            token_log_prob = cache.mix(token_log_prob, ngram_log_prob, weights[orders])
        line_of = np.repeat(np.arange(len(out["tokens"])), out["tokens"])
        known = np.where(out["token_unknown"], 0.0, token_log_prob)
        return {
            "token_log_prob": token_log_prob.astype(np.float32),
            "log_prob": np.bincount(line_of, token_log_prob, len(out["tokens"])).astype(np.float32),
            "known_log_prob": np.bincount(line_of, known, len(out["tokens"])).astype(np.float32),
        }


class Predictor:
    """A loaded bundle, asked in batches of texts: `next_words`, `score` (line or document context) and
    `generate`. Answers are plain Python values (no NumPy, no tensors)."""

    def __init__(self, bundle: bundle_lib.Bundle, model: LoadedBundle, max_batch_tokens: int = 8192):
        """`model`: the bundle loaded (or a proxy of one shared by the processes of a machine)."""
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens: {max_batch_tokens} must be >= 1")
        self.bundle = bundle
        self.model = model
        self.max_batch_tokens = max_batch_tokens
        self._word_bound = contract.normalization(bundle.settings).word_bound
        self._ngram: ArpaTables | None = None

    @classmethod
    def load(cls, bundle_dir: str, max_batch_tokens: int = 8192) -> Predictor:
        return cls(bundle_lib.load_bundle(bundle_dir), LoadedBundle(bundle_dir), max_batch_tokens)

    def cost(self, text: str, mode: str) -> int:
        """Padded token positions `text` adds to a model call in `mode` (core.MODES)."""
        return core.line_cost(self._word_bound(text), self.bundle.context_tokens, mode, self.bundle.settings.eos)

    def groups(self, texts: Sequence[str], mode: str) -> list[list[int]]:
        """Indices of `texts` in model calls of similar length (at most max_batch_tokens padded positions)."""
        return core.length_groups([self.cost(text, mode) for text in texts], self.max_batch_tokens)

    def next_words_call(self, texts: Sequence[str], k: int) -> dict[str, list]:
        """One model call: next_words' outputs for `texts` as lists, probabilities to 6 significant digits."""
        out = self.model.next_words(texts, k)
        return as_lists({**out, "probs": core.round_significant(out["probs"])})

    def score_call(self, texts: Sequence[str], per_token: bool) -> tuple[list[core.LineScore], dict[str, list]]:
        """One model call: each text's LineScore (line context), and the outputs as lists."""
        out = as_lists(self.model.score(texts, per_token))
        return line_scores(out, per_token), out

    def document(self) -> Document:
        if self._ngram is None and self.bundle.info.ngram:
            self._ngram = bundle_lib.read_ngram(self.bundle)  # once per predictor: documents share the tables
        return Document(self.model, self.bundle, self._ngram)

    # --- the public API (nextword.load) -------------------------------------------------------------
    def next_words(self, texts: Sequence[str], k: int = 5) -> list[list[tuple[str, float]]]:
        """Per text, its k most likely next words with their probabilities, most likely first ([] for a text
        with no word left after normalization and no `<eos>` to predict from)."""
        if not 1 <= k <= len(self.bundle.tokens):
            raise ValueError(f"k: {k} must be between 1 and the vocabulary's {len(self.bundle.tokens)} words")
        texts = list(texts)
        found: list = [None] * len(texts)
        for group in self.groups(texts, "next"):
            for i, words in zip(group, next_words_of(self.next_words_call([texts[i] for i in group], k)), strict=True):
                found[i] = words
        return found

    def score(self, texts: Sequence[str], context: str = "line", per_token: bool = False) -> list[core.LineScore]:
        """Per text, the log-probability (natural log) of its tokens: each text on its own (context "line"),
        or the texts in order as one document (context "document"); with `per_token`, each token's too.

        A LineScore has log_prob, tokens, unknown (scored unknown tokens), known_log_prob, token_scores
        ((text, unknown, log_prob) per token with `per_token`) and perplexity.
        """
        if context not in CONTEXTS:
            raise ValueError(f"context: {context!r} is not one of {', '.join(CONTEXTS)}")
        texts = list(texts)
        if context == "document":
            document = self.document()
            scores: list[core.LineScore] = []
            for run in core.token_runs(texts, lambda text: self.cost(text, "score"), self.max_batch_tokens):
                scores += document.score(run, per_token)[0]
            return scores
        found: list = [None] * len(texts)
        for group in self.groups(texts, "score"):
            for i, line in zip(group, self.score_call([texts[i] for i in group], per_token)[0], strict=True):
                found[i] = line
        return found

    def generate(
        self,
        prompt: str,
        max_words: int = 20,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        allow_unknown: bool = False,
    ) -> list[str]:
        """The words that continue `prompt`: greedy at temperature 0, else sampled from the top_k most likely
        (0: all), then the smallest set of most likely words whose probability reaches top_p (1: all);
        reproducible by seed; never the unknown symbol unless allow_unknown; stops at `<eos>`."""
        if max_words < 1 or temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
            raise ValueError("max_words must be >= 1, temperature >= 0, top_k >= 0 and top_p in (0, 1]")
        return self.model.generate(prompt, max_words, temperature, top_k, top_p, seed, allow_unknown)
