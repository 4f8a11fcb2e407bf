"""Retrieval assist: a faiss index over node keys at every level proposes far-away nodes.

LensNet sees the working context, which far from the fovea holds only coarse gists; a fact
buried at depth 0.3 of a million tokens is one of 31 level-3 entries. The index lets focus jump
there: the query's key is matched against the keys of every committed node, and the hits are
turned into score boosts on the working-context entries that contain them, so the allocator
drills down (one level per refocus round) to raw detail.

Two kinds of key, chosen per index:

* ``gist``: the node's gist with the embedding table's mean direction removed (DESIGN.md's
  "index over gists"); only as good as GistNet's content.
* ``lexical``: for a level-1 node, the mean of its tokens' input embeddings (mean direction
  removed), each token weighted by its inverse frequency in the tree so far; for higher levels,
  the mean of the child keys. Needs no training; what it finds is shared vocabulary.

Keys are L2-normalised and searched by inner product (cosine). The index is rebuilt
incrementally: ``add`` takes only the nodes committed since the last call.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np

KEY_KINDS = ("lexical", "gist")


@dataclass
class Hit:
    level: int
    index: int
    score: float


def _normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-9)).astype(np.float32)


class RetrievalIndex:
    """Per-level flat inner-product indexes over node keys."""

    def __init__(self, dim: int, *, kind: str = "lexical", block: int = 32, vocab: int = 0):
        if kind not in KEY_KINDS:
            raise ValueError(f"unknown key kind {kind!r}; choose from {KEY_KINDS}")
        import faiss

        self._faiss = faiss
        self.dim, self.kind, self.block = dim, kind, block
        self.levels: dict[int, object] = {}
        self.token_counts = np.zeros(max(vocab, 1), dtype=np.int64)
        self.blocks_seen = 0
        self._l1_keys_raw: list[np.ndarray] = []  # unnormalised level-1 keys, to build parents

    def count(self, level: int) -> int:
        idx = self.levels.get(level)
        return 0 if idx is None else idx.ntotal

    def add_keys(self, level: int, keys: np.ndarray) -> None:
        """Stored keys (already computed): appended as they are."""
        self._add(level, keys)

    def _add(self, level: int, keys: np.ndarray) -> None:
        if level not in self.levels:
            self.levels[level] = self._faiss.IndexFlatIP(self.dim)
        if len(keys):
            self.levels[level].add(_normalise(keys))

    # -- keys ---------------------------------------------------------------------------------

    def idf(self) -> np.ndarray:
        df = self.token_counts.astype(np.float64)
        return np.log((1.0 + self.blocks_seen) / (1.0 + df)).astype(np.float32)

    def add_blocks(
        self,
        token_blocks: np.ndarray,
        embed_table: np.ndarray,
        mean: np.ndarray,
        *,
        batch: int = 1024,
    ) -> None:
        """Level-1 lexical keys for new blocks ``[k, 32]`` of token ids."""
        if len(token_blocks) == 0:
            return
        for row in token_blocks:
            np.add.at(self.token_counts, np.unique(row), 1)
        self.blocks_seen += len(token_blocks)
        idf = self.idf()
        for s in range(0, len(token_blocks), batch):  # [batch, 32, d] at a time, not [k, 32, d]
            ids = token_blocks[s : s + batch]
            w = idf[ids]
            vecs = embed_table[ids] - mean
            keys = np.einsum("kt,ktd->kd", w, vecs) / np.maximum(w.sum(1, keepdims=True), 1e-6)
            self._add(1, keys)

    def add_parents(self, level: int, child_keys: np.ndarray) -> None:
        """Level >= 2 keys: the mean of the (normalised) keys of the B children."""
        k = len(child_keys) // self.block
        if k:
            self._add(level, child_keys[: k * self.block].reshape(k, self.block, -1).mean(1))

    def add_gists(self, level: int, gists: np.ndarray, mean: np.ndarray) -> None:
        self._add(level, np.asarray(gists, dtype=np.float32) - mean)

    def keys(self, level: int, start: int, stop: int) -> np.ndarray:
        idx = self.levels[level]
        return (
            np.stack([idx.reconstruct(i) for i in range(start, stop)])
            if stop > start
            else np.zeros((0, self.dim), np.float32)
        )

    def query_key(
        self, query_ids: np.ndarray, query_vecs: np.ndarray, mean: np.ndarray
    ) -> np.ndarray:
        v = np.asarray(query_vecs, dtype=np.float32) - mean
        if self.kind == "lexical" and self.blocks_seen:
            w = self.idf()[np.asarray(query_ids)]
            return _normalise((w[:, None] * v).sum(0) / max(float(w.sum()), 1e-6))
        return _normalise(v.mean(0))

    # -- search -------------------------------------------------------------------------------

    def search(self, qkey: np.ndarray, k: int = 4, levels: list[int] | None = None) -> list[Hit]:
        hits: list[Hit] = []
        for level in sorted(levels or self.levels):
            idx = self.levels.get(level)
            if idx is None or idx.ntotal == 0:
                continue
            scores, ids = idx.search(qkey[None].astype(np.float32), min(k, idx.ntotal))
            hits += [
                Hit(level, int(i), float(s))
                for s, i in zip(scores[0], ids[0], strict=True)
                if i >= 0
            ]
        return hits

    # -- persistence --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """One npz (no pickle): faiss indexes serialised per level, plus the token statistics."""
        arrays = {
            f"level_{lvl}": self._faiss.serialize_index(idx) for lvl, idx in self.levels.items()
        }
        meta = {
            "dim": self.dim,
            "kind": self.kind,
            "block": self.block,
            "blocks_seen": self.blocks_seen,
        }
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        arrays["token_counts"] = self.token_counts
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> RetrievalIndex:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            self = cls(
                meta["dim"], kind=meta["kind"], block=meta["block"], vocab=len(z["token_counts"])
            )
            self.token_counts = z["token_counts"].copy()
            self.blocks_seen = meta["blocks_seen"]
            for name in z.files:
                if name.startswith("level_"):
                    self.levels[int(name[6:])] = self._faiss.deserialize_index(z[name])
        return self
