"""Keeps a tree's retrieval index current and stored with it, and turns hits into score boosts.

Stored form (lexical keys; gist keys are the tree's own gists, re-read at open): each complete
epoch (``tree.epoch`` tokens) becomes one immutable committed object
``retrieval/lexical/l1-<first>-<stop>.npz`` holding the fp16 level-1 keys of its blocks and the
sparse token counts *of those blocks only*, written once when the epoch completes. Opening sums
the chunks, then indexes only the nodes committed since the last one, so open work is bounded by
one epoch of tokens plus a read of the stored keys; storing is linear in the new epochs. Keys of
higher levels are means of their children, recomputed at load.
"""

from __future__ import annotations

import io
import re

import numpy as np
import torch

from mcruntime.context import WorkingContext
from mcruntime.retrieval import Hit, RetrievalIndex, block_counts, principal_table

_CHUNK = re.compile(r"^retrieval/(\w+)/l1-(\d{12})-(\d{12})\.npz$")
_TABLES: dict[tuple[str, int], np.ndarray] = {}


class NodeIndex:
    """The retrieval index of one tree for one base model (see ``mcruntime.retrieval``)."""

    def __init__(self, tree, base, *, kind: str = "lexical", boost: float = 2.0):
        self.tree, self.base, self.kind, self.boost = tree, base, kind, boost
        self.mean = base.embedding_stats()["mean"].float().numpy()
        self.table_p = principal(base, self.mean) if kind == "lexical" else None
        dim = self.table_p.shape[1] if kind == "lexical" else base.d_model
        self.index = RetrievalIndex(dim, kind=kind, block=tree.block, vocab=base.vocab_size)
        self.stored = 0  # level-1 nodes covered by committed chunks
        if kind == "lexical":
            self._load()
        self.update()

    # -- stored chunks ------------------------------------------------------------------------

    def _chunks(self) -> list[tuple[int, int, str]]:
        out = []
        for name in self.tree.objects():
            m = _CHUNK.match(name)
            if m and m.group(1) == self.kind:
                out.append((int(m.group(2)), int(m.group(3)), name))
        return sorted(out)

    def _load(self) -> None:
        idx = self.index
        for first, stop, name in self._chunks():
            if first != self.stored or stop > self.tree.num_nodes(1):
                break  # a gap, or a chunk from another history: index the rest from tokens
            with np.load(io.BytesIO(self.tree.read_object(name)), allow_pickle=False) as z:
                keys = z["keys"].astype(np.float32)
                if keys.shape != (stop - first, idx.dim):
                    break  # written for another model: recompute from tokens
                idx.add_keys(1, keys)
                np.add.at(idx.token_counts, z["ids"].astype(np.int64), z["counts"].astype(np.int64))
            idx.blocks_seen = stop
            self.stored = stop

    def persist(self) -> int:
        """Commit a chunk for every complete epoch not stored yet; returns chunks written."""
        if self.kind != "lexical" or self.tree.mode == "r":
            return 0
        per, b = self.tree.epoch // self.tree.block, self.tree.block
        have = self.index.count(1)
        objects = {}
        while (self.stored // per + 1) * per <= have:
            first, stop = self.stored, (self.stored // per + 1) * per
            ids, counts = block_counts(self.tree.tokens(first * b, stop * b).reshape(-1, b))
            buf = io.BytesIO()
            np.savez_compressed(
                buf,
                keys=self.index.keys(1, first, stop).astype(np.float16),
                ids=ids.astype(np.int32),
                counts=counts.astype(np.int32),
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
        have, n1 = idx.count(1), t.num_nodes(1)
        for s in range(have, n1, 8192):  # bounded memory for huge first builds
            e = min(n1, s + 8192)
            if self.kind == "lexical":
                idx.add_blocks(t.tokens(s * b, e * b).reshape(-1, b).astype(np.int64), self.table_p)
            else:
                idx.add_gists(1, _f32(t.gists(1, s, e)), self.mean)
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
        if self.kind == "lexical":
            qkey = self.index.query_key(query_ids, self.table_p)
        else:
            v = query_vecs.numpy() - self.mean
            qkey = (v.mean(0) / max(float(np.linalg.norm(v.mean(0))), 1e-9)).astype(np.float32)
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


def principal(base, mean: np.ndarray) -> np.ndarray:
    """The model's projected embedding table, computed once per process per model."""
    key = (base.name, base.vocab_size)
    if key not in _TABLES:
        table = base.embed(torch.arange(base.vocab_size)).float().cpu().numpy()
        _TABLES[key] = principal_table(table, mean)
    return _TABLES[key]


def _f32(a: np.ndarray) -> np.ndarray:
    from mcruntime.streaming import to_tensor

    return to_tensor(a).numpy()
