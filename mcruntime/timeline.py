"""A tree as a zoomable timeline, for the explorer (``mc serve``'s ``/``, ``mc explore``).

A browser showing a 1M-token history cannot be sent the history: it is sent what it can draw.
``strips`` folds every level of detail of a stretch ``[start, stop)`` into ``width`` buckets (one
per pixel column) on the server: per bucket the number of level-ℓ nodes that overlap it (0: that level
does not cover it yet) and, where the stretch holds few enough nodes to read, their gists' mean
norm; the raw strip carries
the role of the segment each bucket starts in. The raw text is sent a page at a time
(``text_page``), segments a window at a time (``segment_rows``). Everything is read from the
tree's public data; nothing needs the model but ``text_page``'s tokenizer.
"""

from __future__ import annotations

import re

import numpy as np

import mcstore
from mcruntime.lexical import STOPWORDS, words
from mcruntime.render import Role, role_of

MAX_WIDTH = 4096  # buckets a strip may ask for (a very wide screen)
NORM_NODES = 4096  # gists read per level for the norms of one view (~4.5 MiB at d=576)
PAGE_TOKENS = 4096  # raw tokens per text page
MAX_SEGMENTS = 2000  # segments sent for one view; beyond, the raw strip's roles show them
ROLES = [str(r) for r in Role]  # the raw strip's role codes index this list


def clamp(tree, start: int | None, stop: int | None) -> tuple[int, int]:
    """``[start, stop)`` inside ``[0, length)`` (defaults: the whole tree)."""
    n = tree.length
    a = 0 if start is None else max(0, min(int(start), n))
    b = n if stop is None else max(a, min(int(stop), n))
    return a, b


def overview(tree) -> dict:
    """What the timeline needs first: length, block, levels, segment count, tags, version."""
    return {
        "version": tree.version,
        "length": tree.length,
        "block": tree.block,
        "levels": [
            {
                "level": lv,
                "nodes": tree.num_nodes(lv) if lv else tree.length,
                "span": tree.block**lv,
            }
            for lv in range(tree.num_levels)
        ],
        "segments": len(tree.segments()),
        "tags": tree.tags(),
        "roles": ROLES,
    }


def strips(tree, start: int | None = None, stop: int | None = None, width: int = 800) -> dict:
    """Every level of ``[start, stop)`` folded into ``width`` buckets (see the module doc)."""
    a, b = clamp(tree, start, stop)
    width = max(1, min(int(width), MAX_WIDTH))
    span = max(1, b - a)
    edges = a + (np.arange(width + 1, dtype=np.int64) * span) // width  # bucket k: [e_k, e_k+1)
    edges[-1] = max(edges[-1], a + 1)
    out = []
    for level in range(tree.num_levels):
        size = tree.block**level
        have = tree.num_nodes(level) if level else tree.length
        lo = np.minimum(edges[:-1] // size, have)  # nodes overlapping each bucket: [lo, hi)
        hi = np.minimum(-(-np.maximum(edges[1:], edges[:-1] + 1) // size), have)
        count = np.maximum(hi - lo, 0)
        row = {"level": level, "span": size, "count": count.tolist(), "norm": None}
        first, last = int(lo[0]), int(hi[-1])
        if level and 0 < last - first <= NORM_NODES:
            g = tree.gists(level, first, last)
            g = mcstore.bf16_to_float32(g) if g.dtype == np.uint16 else g.astype(np.float32)
            cs = np.concatenate([[0.0], np.cumsum(np.linalg.norm(g, axis=1))])
            total = cs[np.maximum(hi, lo) - first] - cs[lo - first]
            row["norm"] = [
                round(float(t / c), 4) if c else None for t, c in zip(total, count, strict=False)
            ]
        out.append(row)
    roles = _roles(tree, a, span, width)
    return {"start": a, "stop": b, "width": width, "levels": out, "roles": roles}


def _roles(tree, a: int, span: int, width: int) -> list[int]:
    """Per bucket, the role (index into ``ROLES``) of the segment its first token is in; -1
    where the bucket starts past the end."""
    segs = tree.segments()
    if not segs or tree.length == 0:
        return [-1] * width
    starts = np.array([s.start for s in segs], dtype=np.int64)
    codes = np.array([ROLES.index(str(role_of(s.source))) for s in segs], dtype=np.int64)
    pos = a + (np.arange(width, dtype=np.int64) * span) // width
    k = np.searchsorted(starts, pos, side="right") - 1
    out = np.where((k >= 0) & (pos < tree.length), codes[k.clip(0)], -1)
    return out.tolist()


def segment_row(i: int, seg) -> dict:
    """One segment as the explorer shows it."""
    return {
        "id": i,
        "start": seg.start,
        "stop": seg.stop,
        "source": seg.source,
        "role": str(role_of(seg.source)),
        "tags": list(seg.tags),
        "time_ns": int(seg.time),
    }


def segment_rows(tree, start=None, stop=None, limit: int = MAX_SEGMENTS) -> dict:
    """The segments overlapping ``[start, stop)``, at most ``limit`` (``more``: how many not)."""
    a, b = clamp(tree, start, stop)
    segs = tree.segments()
    starts = [s.start for s in segs]
    lo = max(0, int(np.searchsorted(starts, a, side="right")) - 1)
    hi = int(np.searchsorted(starts, b, side="left")) if b > a else lo + 1
    hi = min(max(hi, lo + 1), len(segs))
    limit = max(1, min(int(limit), MAX_SEGMENTS))
    rows = [segment_row(i, segs[i]) for i in range(lo, min(hi, lo + limit))]
    return {"start": a, "stop": b, "total": len(segs), "more": max(0, hi - lo - limit),
            "data": rows}  # fmt: skip


def text_page(tree, tokenizer, start: int, stop: int | None = None) -> dict:
    """The raw text of ``[start, stop)``, at most ``PAGE_TOKENS`` tokens of it; ``next``: where
    the next page starts (None at ``stop``)."""
    a, b = clamp(tree, start, stop)
    end = min(b, a + PAGE_TOKENS)
    text = tokenizer.decode(tree.tokens(a, end).tolist()) if end > a else ""
    return {"start": a, "stop": end, "text": text, "next": end if end < b else None}


def highlights(text: str, query: str) -> list[list[int]]:
    """``[start, stop)`` character ranges of ``text`` holding the query's content words (the
    words the lexical index matched: ``mcruntime.lexical.words`` less its stopwords)."""
    wanted = {w for w in words(query) if w not in STOPWORDS}
    out = []
    for m in re.finditer(r"\w+", text):
        w = m.group(0).lower()
        if w in wanted or any(p in wanted for p in w.split("_") if p):
            out.append([m.start(), m.end()])
    return out
