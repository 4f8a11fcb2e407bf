"""Segments decoded incrementally (a handle that moves forward decodes only the new ones) equal
segments decoded from scratch, across segment and heap shard boundaries."""

from __future__ import annotations

import numpy as np

import mcstore
from mcstore import format as F
from tests.store.helpers import DIM, gister


def _fields(segs):
    return [(s.start, s.stop, s.source, s.tags, s.time) for s in segs]


def test_incremental_segments_equal_a_fresh_decode():
    t = mcstore.create("memory://segments.mc", dim=DIM, block=4, epoch=64)
    reader = mcstore.open(t.url)
    rng = np.random.default_rng(0)
    n_seg = F.SEG_SHARD + 40  # past a segment shard and a heap shard
    for i in range(n_seg):
        toks = rng.integers(0, 1000, int(rng.integers(1, 9))).astype(np.int32)
        t.append(toks, gister=gister, source=f"doc-{i}-" + "x" * (i % 37), tags=(f"k={i}",))
        if i % 7 == 0 or i > n_seg - 3:
            got = t.segments()  # the writer's handle decodes only what its commit added
            assert _fields(got) == _fields(mcstore.open(t.url).segments())
            assert len(got) == i + 1 and got[-1].stop == t.length
            reader.refresh()  # a reader moving forward does the same
            assert _fields(reader.segments()) == _fields(got)
    segs = t.segments()
    heap = sum(len(F.canonical_json({"s": x.source, "t": list(x.tags)})) for x in segs)
    assert heap > F.HEAP_SHARD  # the segment text spans more than one heap shard too
    for s in (segs[0], segs[F.SEG_SHARD - 1], segs[F.SEG_SHARD], segs[-1]):
        for pos in {s.start, s.stop - 1}:
            assert t.segment_at(pos) == s
    # a list handed out earlier is not changed by later commits
    before = list(segs)
    t.append(np.arange(5, dtype=np.int32), gister=gister, source="last")
    assert segs == before and t.segments()[-1].source == "last"
    assert t.segments()[-2].stop == t.segments()[-1].start
