"""Between the store and the model: entry vectors out of the tree, gists into it.

``EntryVectors`` turns working-context entries into input vectors, reading contiguous runs in
one store call each (raw tokens -> embeddings, gists -> fp32) through the store's LRU cache, and
warms that cache for the expansions the scorer is likely to ask for next (prefetch), so a slow
object store does not stall decoding.

``Gister`` is the callback the store calls on append: it batches blocks through GistNet on the
model's device and hands back the store's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mcruntime.bulk.config import GISTER_BATCH  # bulk ingest gists in the same batches
from mcruntime.context import Entry


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """Store rows -> fp32 tensor. bf16 travels as its uint16 bits."""
    if arr.dtype == np.uint16:
        return torch.from_numpy(arr.astype(np.uint16).view(np.int16)).view(torch.bfloat16).float()
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def _runs(entries: Sequence[Entry]):
    """Maximal runs of consecutive indices at one level: (level, first index, count)."""
    i, n = 0, len(entries)
    while i < n:
        level, first = entries[i]
        j = i + 1
        while j < n and entries[j] == (level, first + (j - i)):
            j += 1
        yield level, first, j - i
        i = j


class EntryVectors:
    """Reads the vectors of working-context entries from a tree, for one base model."""

    def __init__(self, tree, base):
        self.tree = tree
        self.base = base
        self.reads = 0  # store calls made (telemetry)

    def __call__(self, entries: Sequence[Entry]) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        for level, first, count in _runs(entries):
            self.reads += 1
            if level == 0:
                ids = self.tree.tokens(first, first + count)
                parts.append(self.base.embed(torch.from_numpy(ids.astype(np.int64))).float())
            else:
                parts.append(to_tensor(self.tree.gists(level, first, first + count)))
        if not parts:
            return torch.zeros(0, self.base.d_model)
        return torch.cat(parts, dim=0)

    def prefetch(self, entries: Sequence[Entry]) -> None:
        """Warm the store's cache, in the background, with the children of nodes that may be
        expanded next (level-1 nodes: their token block)."""
        if not hasattr(self.tree, "prefetch"):
            return
        b = self.tree.block
        by_level: dict[int, list[int]] = {}
        for level, index in entries:
            if level == 1:
                by_level.setdefault(0, []).append(index)  # level 0 = token blocks
            elif level >= 2:
                by_level.setdefault(level - 1, []).extend(range(index * b, (index + 1) * b))
        for level, indices in by_level.items():
            self.tree.prefetch(level, indices)


class Gister:
    """``gister(level, children) -> [k, dim]`` for ``mcstore``'s append, batched through GistNet."""

    def __init__(self, base, gistnet, *, batch: int = GISTER_BATCH, out_dtype=np.float16):
        self.base = base
        self.gistnet = gistnet.to(base.device).eval()
        self.batch = batch
        self.out_dtype = out_dtype

    @classmethod
    def for_tree(cls, base, gistnet, tree, **kw) -> Gister:
        """A gister writing the tree's own gist dtype (bf16 trees store uint16 bit patterns)."""
        return cls.for_dtype(base, gistnet, getattr(tree, "dtype", "float16"), **kw)

    @classmethod
    def for_dtype(cls, base, gistnet, dtype: str, **kw) -> Gister:
        """A gister writing gists of a tree whose dtype is ``dtype`` ("float16"/"bfloat16")."""
        out = np.uint16 if dtype == "bfloat16" else np.float16
        return cls(base, gistnet, out_dtype=out, **kw)

    @torch.no_grad()
    def __call__(self, level: int, children: np.ndarray) -> np.ndarray:
        out = []
        for s in range(0, len(children), self.batch):
            chunk = children[s : s + self.batch]
            if level == 1:
                x = self.base.embed(torch.from_numpy(np.asarray(chunk, dtype=np.int64))).float()
            else:
                x = to_tensor(np.asarray(chunk)).to(self.base.device)
            g = self.gistnet(x.float(), level)
            out.append(g.float().cpu().numpy())
        if not out:
            return np.zeros((0, self.base.d_model), dtype=self.out_dtype)
        res = np.concatenate(out, axis=0)
        if self.out_dtype == np.uint16:  # bf16 bits
            t = torch.from_numpy(res).to(torch.bfloat16)
            return t.view(torch.int16).numpy().view(np.uint16)
        return res.astype(self.out_dtype)
