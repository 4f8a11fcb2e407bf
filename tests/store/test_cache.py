"""The chunk cache's budget bounds real memory, not just array bytes."""

from __future__ import annotations

import gc
import tracemalloc
import uuid

import numpy as np

import mcstore
from tests.store.helpers import DIM, gister

B, E = 4, 64  # 16-byte token blocks: the cache's worst case, overhead dominates


def test_many_tiny_entries_are_evicted_within_the_budget():
    url = f"memory://cache-{uuid.uuid4().hex[:10]}"
    n = E * 100  # 1600 token blocks, all in complete shards
    mcstore.create(url, dim=DIM, block=B, epoch=E).append(
        np.arange(n) % 997, gister=gister, source="s"
    )
    budget = 128 * 1024
    r = mcstore.open(url, cache_bytes=budget)
    r.tokens(0, E)  # shard index and the first shard's chunks: warm the read path
    gc.collect()
    tracemalloc.start()
    try:
        for a in range(E, n, E):
            assert np.array_equal(r.tokens(a, a + E), np.arange(a, a + E) % 997)
        gc.collect()
        full = tracemalloc.get_traced_memory()[0]
        s = r.cache_stats()
        r.clear_cache()
        gc.collect()
        held = full - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held <= budget, f"{s['entries']} cached entries hold {held} bytes, budget {budget}"
    assert s["evictions"] > 0 and s["bytes"] <= budget
    assert s["entries"] * 16 < budget // 8  # most of the budget is per-entry overhead
