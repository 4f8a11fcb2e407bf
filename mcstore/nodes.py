"""Segments, and what the store keeps about nodes besides their gists.

A segment is one append: where it starts, its source and tags, and its wall-clock time. The
text (JSON ``{"s": source, "t": tags}``) goes to the byte array ``seg_heap`` and ``seg_end``
holds where each segment's text ends, so every segment array is fixed-width and append-only
like the level arrays. Tokens (level 0) have no metadata columns: a token was created when
its segment was.

Node flags have two sources. The ``flags_l`` column holds flags fixed at creation; shards are
immutable, so flags that change later (pinned, tagged) are a small JSON table
``{level: {index: flags}}`` committed as the named object ``mc:flags`` and ORed over the column
on read.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from . import format as F
from .errors import damaged

FLAGS_OBJECT = "mc:flags"


@dataclass(frozen=True)
class Segment:
    start: int
    stop: int
    source: str
    tags: tuple[str, ...]
    time: int  # wall-clock ns


def segment_rows(
    start: int, nheap: int, source: str, tags: Iterable[str], now: int
) -> dict[str, np.ndarray]:
    """The rows one append adds to the segment arrays (the heap grows by len(seg_heap))."""
    text = F.canonical_json({"s": source, "t": [str(t) for t in tags]})
    return {
        "seg_start": np.array([start], np.int64),
        "seg_time": np.array([now], np.int64),
        "seg_end": np.array([nheap + len(text)], np.int64),
        "seg_heap": np.frombuffer(text, np.uint8),
    }


def decode_segments(
    url: str,
    starts: np.ndarray,
    times: np.ndarray,
    ends: np.ndarray,
    heap: bytes,
    length: int,
    *,
    first: int = 0,
    heap_from: int = 0,
) -> list[Segment]:
    """Segments ``first, first + 1, …`` from their rows; ``heap`` holds ``seg_heap`` from byte
    ``heap_from`` on (where segment ``first``'s text starts)."""
    n = len(starts)
    out = []
    prev = heap_from
    for i in range(n):
        e = int(ends[i])
        try:
            meta = json.loads(heap[prev - heap_from : e - heap_from])
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise damaged(
                url, "arrays/seg_heap", f"segment {first + i} text is not valid"
            ) from None
        stop = int(starts[i + 1]) if i + 1 < n else length
        out.append(Segment(int(starts[i]), stop, meta["s"], tuple(meta["t"]), int(times[i])))
        prev = e
    return out


def segment_index(segs: list[Segment], pos: int) -> int:
    """Index of the segment that holds token ``pos`` (a binary search: O(log n))."""
    return bisect.bisect_right(segs, pos, key=lambda s: s.start) - 1


def token_created(segs: list[Segment], start: int, stop: int) -> np.ndarray:
    """Creation time (ns) of tokens [start, stop): the time of their segment."""
    starts = np.array([s.start for s in segs], dtype=np.int64)
    times = np.array([s.time for s in segs], dtype=np.int64)
    pos = np.arange(start, stop)
    created = times[np.searchsorted(starts, pos, side="right") - 1] if len(pos) else pos
    return created.astype(np.int64)


def overlay_flags(table: dict, level: int, start: int, flags: np.ndarray) -> np.ndarray:
    """OR the committed mutable flags of ``level`` into ``flags`` (nodes from ``start``)."""
    for k, v in table.get(str(level), {}).items():
        i = int(k) - start
        if 0 <= i < len(flags):
            flags[i] |= np.uint8(v)
    return flags


def updated_flags(table: dict, level: int, indices: Iterable[int], flags: int) -> bytes:
    """The flags object after setting (flags=0: clearing) ``flags`` on nodes of ``level``."""
    lv = table.setdefault(str(level), {})
    for i in indices:
        if flags:
            lv[str(int(i))] = int(flags)
        else:
            lv.pop(str(int(i)), None)
    return json.dumps(table, sort_keys=True).encode()
