"""Scorers: one signed number per working-context entry (> 0 wants detail, < 0 can give it up).

LensNet is the learned one. The non-learned baselines it must beat, behind the same interface:

* ``recency``: newer is more important (what a plain sliding window believes);
* ``similarity``: cosine between an entry's vector and the query's mean vector, both with the
  embedding table's mean direction removed (gists live in the embedding space);
* ``attention``: the attention mass the base model itself puts on each entry when it reads the
  query, averaged over layers and heads.

Scores are centred per call (z-scores around the median), so the allocator's thresholds mean
the same for every scorer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from mcruntime.context import WorkingContext


@dataclass
class FocusView:
    """What a scorer may look at."""

    wc: WorkingContext
    vectors: torch.Tensor  # [n, d] fp32 entry vectors, in entry order
    query: torch.Tensor  # [q, d] fp32 embeddings of the newest raw tokens (the question)
    base: object
    prefix: torch.Tensor | None = None  # [p, d] vectors before the entries (template)


class Scorer(Protocol):
    """What the focus asks of a scorer: signed scores per entry, and whether it may run in
    every refocus round (``per_round``: False for one that costs a model forward per call;
    later rounds then inherit its scores, ``mcruntime.inherit``)."""

    name: str
    per_round: bool

    def __call__(self, view: FocusView) -> np.ndarray: ...


def _standardise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        return x
    spread = np.std(x)
    return (x - np.median(x)) / (spread if spread > 1e-9 else 1.0)


class RecencyScorer:
    name = "recency"
    per_round = True

    def __call__(self, view: FocusView) -> np.ndarray:
        starts = np.asarray(view.wc.starts(), dtype=np.float64)
        return _standardise(starts / max(1, view.wc.length))


class SimilarityScorer:
    name = "similarity"
    per_round = True

    def __call__(self, view: FocusView) -> np.ndarray:
        mean = view.base.embedding_stats()["mean"].float()
        v = torch.nn.functional.normalize(view.vectors - mean, dim=-1)
        q = torch.nn.functional.normalize((view.query - mean).mean(0), dim=-1)
        return _standardise((v @ q).numpy())


class AttentionScorer:
    """Attention mass from the query positions onto each entry (one eager forward, no cache)."""

    name = "attention"
    per_round = False  # one eager forward per question, not one per refocus round

    @torch.no_grad()
    def __call__(self, view: FocusView) -> np.ndarray:
        base = view.base
        prefix = view.prefix if view.prefix is not None else view.vectors[:0]
        seq = torch.cat([prefix, view.vectors, view.query], dim=0)
        n_pre, n, q = len(prefix), len(view.vectors), len(view.query)
        attentions = base.attentions(seq[None], torch.arange(len(seq))[None])
        # [layers, heads, q, n] -> mean attention of query rows on entry columns
        mass = torch.stack([a[0, :, -q:, n_pre : n_pre + n].float() for a in attentions])
        mass = mass.mean(dim=(0, 1, 2))
        # a gist stands for many tokens; compare by log mass so scores are not dominated by
        # the attention sink at the first positions
        return _standardise(torch.log(mass + 1e-9).numpy())


class LensScorer:
    """LensNet's scores, with illegal directions already meaningless to the allocator."""

    name = "lensnet"
    per_round = True

    def __init__(self, lensnet):
        self.lensnet = lensnet.eval()

    @torch.no_grad()
    def __call__(self, view: FocusView) -> np.ndarray:
        from mcmodels.lensnet import entry_features

        wc = view.wc
        levels = torch.tensor([lvl for lvl, _ in wc.entries], dtype=torch.long)
        starts = torch.tensor(wc.starts(), dtype=torch.float64)
        feats = entry_features(levels[None], starts[None], wc.length, block=wc.block)
        dev = next(self.lensnet.parameters()).device
        s = self.lensnet(
            view.vectors[None].to(dev),
            levels[None].to(dev),
            feats.to(dev),
            view.query[None].to(dev),
        )
        return s[0].float().cpu().numpy().astype(np.float64)


SCORERS = {
    "recency": RecencyScorer,
    "similarity": SimilarityScorer,
    "attention": AttentionScorer,
}


def make_scorer(name: str, *, lensnet=None) -> Scorer:
    if name == "lensnet":
        if lensnet is None:
            raise ValueError("the lensnet scorer needs a LensNet checkpoint")
        return LensScorer(lensnet)
    try:
        return SCORERS[name]()
    except KeyError:
        raise ValueError(
            f"unknown scorer {name!r}; choose from lensnet, {', '.join(SCORERS)}"
        ) from None
