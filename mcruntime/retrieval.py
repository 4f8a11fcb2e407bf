"""Retrieval assist: a faiss index over node keys at every level proposes far-away nodes.

LensNet sees the working context, which far from the fovea holds only coarse gists; a fact
buried at depth 0.3 of a million tokens is one of 31 level-3 entries. The index lets focus jump
there: the query's key is matched against the keys of every committed node, and the hits are
turned into score boosts on the working-context entries that contain them, so the allocator
drills down (one level per refocus round) to raw detail.

Two kinds of key, chosen per index:

* ``lexical``: for a level-1 node, the mean of its tokens' input embeddings (embedding-table
  mean removed), each token weighted by its inverse block frequency in the tree so far, projected
  onto the top ``dim`` principal directions of the embedding table (deterministic for a model;
  128 of SmolLM2's 576 dimensions keep the ranking and cut stored keys 4.5×); for higher levels,
  the mean of the child keys. Needs no training; what it finds is shared vocabulary.
* ``gist``: the node's gist with the embedding table's mean removed (DESIGN.md's "index over
  gists"); only as good as GistNet's content.

Keys are L2-normalised and searched by inner product (cosine), exhaustively.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEY_KINDS = ("lexical", "gist")
LEXICAL_DIM = 128


@dataclass
class Hit:
    level: int
    index: int
    score: float


def _normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-9)).astype(np.float32)


def principal_table(table: np.ndarray, mean: np.ndarray, dim: int = LEXICAL_DIM) -> np.ndarray:
    """Centred embedding table ``[V, d]`` -> its coordinates on the top ``dim`` principal axes.

    Computed from the model alone (eigenvectors of the d×d scatter matrix, signs fixed), so every
    process and machine gets the same keys for the same model."""
    x = (np.asarray(table, dtype=np.float64) - mean).astype(np.float64)
    dim = min(dim, x.shape[1])
    vals, vecs = np.linalg.eigh(x.T @ x)
    top = vecs[:, np.argsort(vals)[::-1][:dim]]
    top *= np.sign(top[np.argmax(np.abs(top), axis=0), np.arange(dim)])
    return (x @ top).astype(np.float32)


class RetrievalIndex:
    """Per-level flat inner-product indexes over node keys, plus the token statistics."""

    def __init__(self, dim: int, *, kind: str = "lexical", block: int = 32, vocab: int = 0):
        if kind not in KEY_KINDS:
            raise ValueError(f"unknown key kind {kind!r}; choose from {KEY_KINDS}")
        import faiss

        self._faiss = faiss
        self.dim, self.kind, self.block = dim, kind, block
        self.levels: dict[int, object] = {}
        self.token_counts = np.zeros(max(vocab, 1), dtype=np.int64)  # blocks containing each id
        self.blocks_seen = 0

    def count(self, level: int) -> int:
        idx = self.levels.get(level)
        return 0 if idx is None else idx.ntotal

    def add_keys(self, level: int, keys: np.ndarray) -> None:
        if level not in self.levels:
            self.levels[level] = self._faiss.IndexFlatIP(self.dim)
        if len(keys):
            self.levels[level].add(_normalise(keys))

    def keys(self, level: int, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return np.zeros((0, self.dim), np.float32)
        return self.levels[level].reconstruct_n(start, stop - start)

    # -- lexical keys -------------------------------------------------------------------------

    def idf(self) -> np.ndarray:
        df = self.token_counts.astype(np.float64)
        return np.log((1.0 + self.blocks_seen) / (1.0 + df)).astype(np.float32)

    def count_blocks(self, token_blocks: np.ndarray) -> None:
        ids, n = block_counts(token_blocks)
        np.add.at(self.token_counts, ids, n)
        self.blocks_seen += len(token_blocks)

    def add_blocks(
        self, token_blocks: np.ndarray, table_p: np.ndarray, *, batch: int = 1024
    ) -> None:
        """Level-1 keys for new blocks ``[k, 32]`` of token ids; ``table_p`` from
        :func:`principal_table`."""
        if len(token_blocks) == 0:
            return
        self.count_blocks(token_blocks)
        idf = self.idf()
        for s in range(0, len(token_blocks), batch):  # [batch, 32, dim] at a time
            ids = token_blocks[s : s + batch]
            w = idf[ids]
            keys = np.einsum("kt,ktd->kd", w, table_p[ids]) / np.maximum(
                w.sum(1, keepdims=True), 1e-6
            )
            self.add_keys(1, keys)

    def add_parents(self, level: int, child_keys: np.ndarray) -> None:
        """Level >= 2 keys: the mean of the (normalised) keys of the B children."""
        k = len(child_keys) // self.block
        if k:
            self.add_keys(level, child_keys[: k * self.block].reshape(k, self.block, -1).mean(1))

    def query_key(self, query_ids, table_p: np.ndarray) -> np.ndarray:
        ids = np.asarray(query_ids, dtype=np.int64)
        v = table_p[ids]
        w = self.idf()[ids] if self.blocks_seen else np.ones(len(ids), np.float32)
        return _normalise((w[:, None] * v).sum(0) / max(float(w.sum()), 1e-6))

    # -- gist keys ----------------------------------------------------------------------------

    def add_gists(self, level: int, gists: np.ndarray, mean: np.ndarray) -> None:
        self.add_keys(level, np.asarray(gists, dtype=np.float32) - mean)

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


def block_counts(token_blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(token id, number of blocks containing it) over ``[k, 32]`` blocks, sparse."""
    if len(token_blocks) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = len(token_blocks)
    pairs = np.unique(token_blocks.astype(np.int64) + (np.arange(k)[:, None] << 32))
    ids, n = np.unique(pairs & 0xFFFFFFFF, return_counts=True)
    return ids, n
