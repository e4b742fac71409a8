"""A synthetic corpus generator with a known entropy rate.

Text comes from a first-order Markov chain over made-up words (syllables
joined together, so no text is copied from anywhere): each word has a few
possible successors with Dirichlet-drawn probabilities. The chain's entropy
rate H = -sum_i pi_i sum_j P_ij log P_ij (pi: the stationary distribution) is
the best achievable cross-entropy per token, so exp(H) is the perplexity a
perfect model reaches; tests check that training gets close to it.

Lines are capitalised and end with a full stop, so the seed normalization has
work to do; the chain runs on across line breaks within a file, as the
preprocessing stream does.

    python -m tests.support.synthetic --out tests/data/synthetic   # regenerates the tests' corpus
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass

import numpy as np

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]


@dataclass(frozen=True)
class ChainSpec:
    vocab_size: int = 100
    branching: int = 5
    alpha: float = 1.0
    seed: int = 7


@dataclass(frozen=True)
class MarkovChain:
    words: list[str]
    successors: np.ndarray  # [V, branching] word ids
    probs: np.ndarray  # [V, branching] successor probabilities
    stationary: np.ndarray  # [V]

    @property
    def entropy_rate(self) -> float:
        """Nats per token."""
        row_entropy = -(self.probs * np.log(self.probs)).sum(axis=1)  # [V]
        return float(self.stationary @ row_entropy)

    @property
    def perplexity(self) -> float:
        return float(np.exp(self.entropy_rate))


def make_words(count: int, rng: np.random.Generator) -> list[str]:
    words: set[str] = set()
    result = []
    while len(result) < count:
        n = int(rng.integers(1, 4))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(n))
        if word not in words:
            words.add(word)
            result.append(word)
    return result


def make_chain(spec: ChainSpec) -> MarkovChain:
    rng = np.random.default_rng(spec.seed)
    words = make_words(spec.vocab_size, rng)
    successors = np.stack(
        [rng.choice(spec.vocab_size, size=spec.branching, replace=False) for _ in range(spec.vocab_size)]
    )
    probs = rng.dirichlet([spec.alpha] * spec.branching, size=spec.vocab_size)
    transition = np.zeros((spec.vocab_size, spec.vocab_size))
    np.put_along_axis(transition, successors, probs, axis=1)
    # Stationary distribution: left eigenvector of the transition matrix.
    values, vectors = np.linalg.eig(transition.T)
    stationary = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    stationary = stationary / stationary.sum()
    return MarkovChain(words, successors, probs, stationary)


def generate_lines(chain: MarkovChain, num_tokens: int, rng: np.random.Generator) -> list[str]:
    """Lines of 4-14 words; the chain continues across lines."""
    state = int(rng.choice(len(chain.words), p=chain.stationary))
    lines, produced = [], 0
    while produced < num_tokens:
        length = min(int(rng.integers(4, 15)), num_tokens - produced)
        line = []
        for _ in range(length):
            line.append(chain.words[state])
            state = int(chain.successors[state, rng.choice(chain.successors.shape[1], p=chain.probs[state])])
        produced += length
        lines.append(" ".join(line).capitalize() + ".")
    return lines


def write_corpus(out_dir: str, spec: ChainSpec, num_files: int, tokens_per_file: int) -> dict:
    """Writes `num_files` files under nested folders and GENERATOR.json."""
    chain = make_chain(spec)
    rng = np.random.default_rng(spec.seed + 1)
    for i in range(num_files):
        path = os.path.join(out_dir, f"part-{i % 2}", f"doc-{i:02d}.txt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(generate_lines(chain, tokens_per_file, rng)) + "\n")
    info = {
        "generator": "tests.support.synthetic first-order Markov chain",
        "spec": asdict(spec),
        "num_files": num_files,
        "tokens_per_file": tokens_per_file,
        "entropy_rate_nats": chain.entropy_rate,
        "perplexity": chain.perplexity,
    }
    with open(os.path.join(out_dir, "GENERATOR.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="tests/data/synthetic")
    parser.add_argument("--files", type=int, default=6)
    parser.add_argument("--tokens-per-file", type=int, default=25000)
    args = parser.parse_args(argv)
    info = write_corpus(args.out, ChainSpec(), args.files, args.tokens_per_file)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
