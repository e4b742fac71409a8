"""The defaults' size, chosen by the training split: what train.model.units, train.model.dropout and
train.per_replica_batch_size mean when left at 0 / null.

Measured in bench/quality.py (README, "Quality"): below SMALL_CORPUS_TOKENS a wider, more strongly
regularized LSTM on twice as many, smaller batches per epoch beats the 256-unit recipe (Vim manual
0.841 vs 0.910 of the Kneser-Ney baseline's test perplexity, Shakespeare 0.768 vs 0.794); on the
Penn Treebank's 0.9M tokens it converges slower per CPU-second, so large corpora keep the 256-unit one.
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
    dropout: float
    per_replica_batch_size: int


SMALL = Size(units=384, dropout=0.65, per_replica_batch_size=16)
LARGE = Size(units=256, dropout=0.5, per_replica_batch_size=32)


def for_tokens(train_tokens: int) -> Size:
    return SMALL if train_tokens < SMALL_CORPUS_TOKENS else LARGE


def resolve(config: Config, train_tokens: int) -> Config:
    """The config with every size left to the corpus filled in (units, embedding_dim, dropout, batch).

    Each key set by the user stays as set; embedding_dim 0 is the units (a tied head without a projection).
    """
    train, model = config.train, config.train.model
    size = for_tokens(train_tokens)
    units = model.units or size.units
    chosen = dataclasses.replace(
        model,
        units=units,
        embedding_dim=model.embedding_dim or units,
        dropout=size.dropout if model.dropout is None else model.dropout,
    )
    batch = train.per_replica_batch_size or size.per_replica_batch_size
    resolved = dataclasses.replace(config, train=dataclasses.replace(train, model=chosen, per_replica_batch_size=batch))
    if resolved != config:
        _LOG.info(
            "sized by the training split (%d tokens, %s corpus): units %d, embedding_dim %d, dropout %g, "
            "per_replica_batch_size %d (set train.model.units, train.model.dropout or "
            "train.per_replica_batch_size to choose)",
            train_tokens,
            "small" if size is SMALL else "large",
            chosen.units,
            chosen.embedding_dim,
            chosen.dropout,
            batch,
        )
    return resolved
