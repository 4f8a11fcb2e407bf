"""Keeps a tree's retrieval index current, and turns its hits into focus score boosts."""

from __future__ import annotations

import numpy as np
import torch

from mcruntime.context import WorkingContext
from mcruntime.retrieval import Hit, RetrievalIndex

INDEX_OBJECT = "retrieval-{kind}.npz"


class NodeIndex:
    """The retrieval index of one tree for one base model (see ``mcruntime.retrieval``)."""

    def __init__(self, tree, base, *, kind: str = "lexical", boost: float = 2.0):
        self.tree, self.base, self.kind, self.boost = tree, base, kind, boost
        stats = base.embedding_stats()
        self.mean = stats["mean"].float().numpy()
        self._table: np.ndarray | None = None
        self.index = self._load() or RetrievalIndex(
            base.d_model, kind=kind, block=tree.block, vocab=base.vocab_size
        )
        self.update()

    @property
    def table(self) -> np.ndarray:
        if self._table is None:
            self._table = self.base.embed(torch.arange(self.base.vocab_size)).float().cpu().numpy()
        return self._table

    def _load(self) -> RetrievalIndex | None:
        name = INDEX_OBJECT.format(kind=self.kind)
        try:
            if name in self.tree.objects():
                return RetrievalIndex.from_bytes(self.tree.read_object(name))
        except (AttributeError, ValueError, KeyError):
            return None
        return None

    def update(self) -> None:
        """Index every node committed since the last update, bottom-up."""
        t, idx, b = self.tree, self.index, self.tree.block
        have = idx.count(1)
        n1 = t.num_nodes(1)
        if n1 > have:
            if self.kind == "lexical":
                toks = t.tokens(have * b, n1 * b).reshape(-1, b).astype(np.int64)
                idx.add_blocks(toks, self.table, self.mean)
            else:
                idx.add_gists(1, _f32(t.gists(1, have, n1)), self.mean)
        level = 2
        while t.num_nodes(level) > 0:
            have, n = idx.count(level), t.num_nodes(level)
            if n > have:
                if self.kind == "lexical":
                    idx.add_parents(level, idx.keys(level - 1, have * b, n * b))
                else:
                    idx.add_gists(level, _f32(t.gists(level, have, n)), self.mean)
            level += 1

    def search(self, query_ids, query_vecs: torch.Tensor, k: int) -> list[Hit]:
        qkey = self.index.query_key(np.asarray(query_ids), query_vecs.numpy(), self.mean)
        return self.index.search(qkey, k)

    def boosts(self, wc: WorkingContext, hits: list[Hit]) -> np.ndarray:
        """+boost on every entry whose span meets a level-1 hit (or its neighbours): coarser
        entries get expanded, finer ones (already detailed) are protected from being collapsed
        to pay for other expansions."""
        out = np.zeros(wc.cost)
        hits = sorted((h for h in hits if h.level == 1), key=lambda h: -h.score)
        if not hits:
            return out
        b = wc.block
        starts = np.asarray(wc.starts())
        ends = starts + np.asarray([b**lvl for lvl, _ in wc.entries])
        for rank, h in enumerate(hits):
            # a fact often straddles a block boundary: bring the neighbours in as well
            s, e = (h.index - 1) * b, (h.index + 2) * b
            meet = (starts < e) & (ends > s)
            out[meet] += self.boost * (1.0 - 0.1 * rank)
        return out


def _f32(a: np.ndarray) -> np.ndarray:
    from mcruntime.streaming import to_tensor

    return to_tensor(a).numpy()
