"""Deterministic test gister and a plain in-memory model of a tree."""

from __future__ import annotations

import numpy as np

DIM = 8


def gister(level: int, children: np.ndarray) -> np.ndarray:
    """A hash-like deterministic function of the children (numpy only)."""
    if level == 1:
        x = children.astype(np.int64)
        j = np.arange(1, DIM + 1, dtype=np.int64)
        w = np.arange(1, x.shape[1] + 1, dtype=np.int64)
        h = ((x * w[None, :]).sum(1)[:, None] * (2654435761 % 9973) * j[None, :]) % 10007
        return (h / 10007.0 * 4 - 2).astype(np.float16)
    x = children.astype(np.float32)
    w = np.linspace(1.0, 2.0, x.shape[1], dtype=np.float32)
    y = np.tanh((x * w[None, :, None]).sum(1) / x.shape[1] + 0.1 * level)
    return y.astype(np.float16)


def expected_gists(tokens: np.ndarray, block: int, gist=gister) -> dict[int, np.ndarray]:
    """Every level's gists, recomputed from scratch (independent of the store's increments)."""
    out = {}
    cur = np.asarray(tokens, np.int32)
    lv = 1
    while len(cur) // block > 0:
        n = len(cur) // block
        kids = cur[: n * block].reshape(n, block, *cur.shape[1:])
        cur = gist(lv, kids)
        out[lv] = cur
        lv += 1
    return out


class Model:
    """What a tree should contain: tokens and segments per version."""

    def __init__(self):
        self.versions: dict[int, tuple[np.ndarray, list[tuple[int, int, str]]]] = {
            1: (np.zeros(0, np.int32), [])
        }
        self.head = 1

    def append(self, version: int, toks: np.ndarray, source: str) -> None:
        old, segs = self.versions[self.head]
        new = np.concatenate([old, toks.astype(np.int32)])
        self.versions[version] = (new, [*segs, (len(old), len(new), source)])
        self.head = version

    def same_content(self, version: int) -> None:
        self.versions[version] = self.versions[self.head]
        self.head = version


def check_tree(t, toks: np.ndarray, segs, block: int) -> None:
    """Every read of ``t`` against the model (tokens, gists at every level, segments)."""
    assert t.length == len(toks)
    assert np.array_equal(t.tokens(0, t.length), toks)
    exp = expected_gists(toks, block)
    assert t.num_levels == (0 if len(toks) == 0 else 1 + len(exp))
    for lv, g in exp.items():
        assert t.num_nodes(lv) == len(g)
        got = t.gists(lv, 0, len(g))
        assert got.dtype == np.float16
        assert np.array_equal(got.view(np.uint16), g.view(np.uint16)), f"level {lv}"
    got_segs = [(s.start, s.stop, s.source) for s in t.segments()]
    assert got_segs == list(segs)
