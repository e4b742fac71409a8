"""The defaults' size, chosen by the training split and the device: what train.model.units,
train.model.num_layers, train.model.dropout and train.per_replica_batch_size mean when left at 0 / null.

The model grows with the data along one of two ladders, each rung a size for training splits below a
token count:

- On CPU the rungs up to 5M tokens are the recipes measured in bench/quality.py (bench/README.md,
  "Quality"): a wide, strongly regularized layer for small corpora, a narrower one that converges faster
  per CPU-second on the Penn Treebank. Past that no natural corpus here was large enough to measure, so the
  larger rungs follow the rule those measurements and the literature agree on: more data wants more
  capacity and less dropout, and on a CPU an epoch's cost grows with units squared, so width grows slowly.
- On a GPU the rungs are published sizes: Zaremba et al. 2014 ("medium", 2 x 650, dropout 0.5, on the
  Penn Treebank's 0.9M tokens), the 2 x 1024 LSTMs of the WikiText-103 baselines (Grave et al. 2017), and
  Jozefowicz et al. 2016's LSTM-2048-512 (a 512-wide projection) for the One Billion Word benchmark;
  every size cuDNN-eligible (the recurrent layers keep their cuDNN defaults; dropout stays outside them).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from nextword.config import Config

_LOG = logging.getLogger(__name__)

SMALL_CORPUS_TOKENS = 500_000


@dataclass(frozen=True)
class Size:
    units: int
    num_layers: int
    dropout: float
    per_replica_batch_size: int
    embedding_dim: int = 0  # 0: the units (a tied head without a projection)
    source: str = ""  # why this size: a measurement or a paper


@dataclass(frozen=True)
class Rung:
    below_tokens: float  # for training splits with fewer tokens than this
    size: Size


_MEASURED = "measured here, bench/quality.py"
CPU_LADDER = (
    Rung(SMALL_CORPUS_TOKENS, Size(384, 1, 0.65, 16, source=_MEASURED + " (Vim manual, Shakespeare)")),
    Rung(5_000_000, Size(256, 1, 0.5, 32, source=_MEASURED + " (Penn Treebank)")),
    Rung(50_000_000, Size(512, 1, 0.3, 32, source="grown with the data, dropout lowered; not measured on CPU")),
    Rung(float("inf"), Size(512, 2, 0.2, 64, source="grown with the data, dropout lowered; not measured on CPU")),
)
GPU_LADDER = (
    Rung(SMALL_CORPUS_TOKENS, Size(650, 1, 0.65, 32, source="Zaremba et al. 2014 medium width, one layer")),
    Rung(5_000_000, Size(650, 2, 0.5, 32, source="Zaremba et al. 2014 medium (2 x 650)")),
    Rung(50_000_000, Size(1024, 2, 0.25, 64, source="WikiText-103 LSTM baselines (Grave et al. 2017)")),
    Rung(float("inf"), Size(2048, 2, 0.1, 128, 512, "Jozefowicz et al. 2016, LSTM-2048-512")),
)

SMALL = CPU_LADDER[0].size
LARGE = CPU_LADDER[1].size


def for_tokens(train_tokens: int, on_gpu: bool = False) -> Size:
    """The size of the first rung whose bound is above the training split's tokens."""
    ladder = GPU_LADDER if on_gpu else CPU_LADDER
    return next(rung.size for rung in ladder if train_tokens < rung.below_tokens)


def resolve(config: Config, train_tokens: int, on_gpu: bool = False) -> Config:
    """The config with every size left to the corpus filled in (units, layers, embedding_dim, dropout, batch).

    Each key set by the user stays as set; embedding_dim 0 is the units, or the rung's projection when the
    units are the rung's too.
    """
    train, model = config.train, config.train.model
    size = for_tokens(train_tokens, on_gpu)
    units = model.units or size.units
    projection = size.embedding_dim if units == size.units else 0
    chosen = dataclasses.replace(
        model,
        units=units,
        num_layers=model.num_layers or size.num_layers,
        embedding_dim=model.embedding_dim or projection or units,
        dropout=size.dropout if model.dropout is None else model.dropout,
    )
    batch = train.per_replica_batch_size or size.per_replica_batch_size
    resolved = dataclasses.replace(config, train=dataclasses.replace(train, model=chosen, per_replica_batch_size=batch))
    if resolved != config:
        _LOG.info(
            "sized by the training split (%d tokens) for %s: %d x %d units, embedding_dim %d, dropout %g, "
            "per_replica_batch_size %d (%s; set train.model.units, num_layers, dropout or "
            "train.per_replica_batch_size to choose)",
            train_tokens,
            "a GPU" if on_gpu else "the CPU",
            chosen.num_layers,
            chosen.units,
            chosen.embedding_dim,
            chosen.dropout,
            batch,
            size.source,
        )
    return resolved
