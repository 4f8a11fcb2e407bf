"""Keeps a tree's retrieval index current and stored with it, and turns hits into score boosts.

Stored form (lexical keys only: gist keys are the tree's own gists, re-read at open): the
level-1 keys of every complete epoch (``tree.epoch`` tokens) are one immutable committed object
``retrieval/<kind>/l1-<first>-<stop>.npz`` (fp16 keys + the token statistics at that point),
written once when the epoch completes. Opening loads those chunks, then indexes only the nodes
committed since the last chunk, so open work is bounded by one epoch of tokens plus a read of the
stored keys. Keys of higher levels are means of their children, recomputed at load.
"""

from __future__ import annotations

import io
import re

import numpy as np
import torch

from mcruntime.context import WorkingContext
from mcruntime.retrieval import Hit, RetrievalIndex

_CHUNK = re.compile(r"^retrieval/(\w+)/l1-(\d{12})-(\d{12})\.npz$")


class NodeIndex:
    """The retrieval index of one tree for one base model (see ``mcruntime.retrieval``)."""

    def __init__(self, tree, base, *, kind: str = "lexical", boost: float = 2.0):
        self.tree, self.base, self.kind, self.boost = tree, base, kind, boost
        stats = base.embedding_stats()
        self.mean = stats["mean"].float().numpy()
        self._table: np.ndarray | None = None
        self.index = RetrievalIndex(
            base.d_model, kind=kind, block=tree.block, vocab=base.vocab_size
        )
        self.stored = 0  # level-1 nodes covered by committed chunks
        if kind == "lexical":
            self._load()
        self.update()

    @property
    def table(self) -> np.ndarray:
        if self._table is None:
            self._table = self.base.embed(torch.arange(self.base.vocab_size)).float().cpu().numpy()
        return self._table

    # -- stored chunks ------------------------------------------------------------------------

    def _chunks(self) -> list[tuple[int, int, str]]:
        out = []
        for name in self.tree.objects():
            m = _CHUNK.match(name)
            if m and m.group(1) == self.kind:
                out.append((int(m.group(2)), int(m.group(3)), name))
        return sorted(out)

    def _load(self) -> None:
        for first, stop, name in self._chunks():
            if first != self.stored or stop > self.tree.num_nodes(1):
                break  # a gap (or a chunk from a longer history): index the rest from tokens
            with np.load(io.BytesIO(self.tree.read_object(name)), allow_pickle=False) as z:
                self.index.add_keys(1, z["keys"].astype(np.float32))
                self.index.token_counts = z["token_counts"].copy()
                self.index.blocks_seen = int(z["blocks_seen"])
            self.stored = stop

    def persist(self) -> int:
        """Commit a chunk for every complete epoch not stored yet; returns chunks written."""
        if self.kind != "lexical" or self.tree.mode == "r":
            return 0
        per = self.tree.epoch // self.tree.block
        have = self.index.count(1)
        objects = {}
        while (self.stored // per + 1) * per <= have:
            first, stop = self.stored, (self.stored // per + 1) * per
            # token statistics as they were after block `stop`, so a reload that indexes the
            # blocks after it again counts each block once
            counts = self.index.token_counts.copy()
            b = self.tree.block
            if have > stop:
                later = self.tree.tokens(stop * b, have * b).reshape(-1, b)
                for row in later:
                    np.subtract.at(counts, np.unique(row), 1)
            buf = io.BytesIO()
            np.savez(
                buf,
                keys=self.index.keys(1, first, stop).astype(np.float16),
                token_counts=counts,
                blocks_seen=np.int64(stop),
            )
            objects[f"retrieval/{self.kind}/l1-{first:012d}-{stop:012d}.npz"] = buf.getvalue()
            self.stored = stop
        if objects:
            self.tree.commit_objects(objects, message=f"retrieval index up to node {self.stored}")
        return len(objects)

    # -- incremental build --------------------------------------------------------------------

    def update(self) -> None:
        """Index every node committed since the last update, bottom-up."""
        t, idx, b = self.tree, self.index, self.tree.block
        have = idx.count(1)
        n1 = t.num_nodes(1)
        if n1 > have:
            if self.kind == "lexical":
                for s in range(have, n1, 8192):  # bounded memory for huge first builds
                    e = min(n1, s + 8192)
                    toks = t.tokens(s * b, e * b).reshape(-1, b).astype(np.int64)
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

    # -- use ----------------------------------------------------------------------------------

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
