"""A byte-bounded LRU cache for decoded chunks (gist rows, token blocks), with counters.

An entry costs more than its array's bytes: the array object and the view over it, the
``bytes`` buffer it was decoded from (the cache keeps it alive), the key tuple and its shard
key string, and the OrderedDict slot. Measured with tracemalloc through ``Tree`` reads, that
is 550-590 bytes an entry whatever its size (the most for the smallest chunks), so a cache
of 128-byte token blocks used to hold ~5x the memory it accounted. Each entry is charged ``ENTRY_OVERHEAD`` on top of its
array bytes so that ``max_bytes`` bounds real memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

ENTRY_OVERHEAD = 640  # bytes an entry costs beyond value.nbytes (measured 550-590)


def entry_cost(value: np.ndarray) -> int:
    return value.nbytes + ENTRY_OVERHEAD


class LRUCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._d: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            v = self._d.get(key)
            if v is None:
                self.misses += 1
                return None
            self._d.move_to_end(key)
            self.hits += 1
            return v

    def put(self, key: tuple, value: np.ndarray) -> None:
        if self.max_bytes <= 0 or entry_cost(value) > self.max_bytes:
            return
        value.setflags(write=False)
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self._bytes -= entry_cost(old)
            self._d[key] = value
            self._bytes += entry_cost(value)
            while self._bytes > self.max_bytes:
                _, ev = self._d.popitem(last=False)
                self._bytes -= entry_cost(ev)
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self._bytes = 0

    def stats(self) -> dict[str, int]:
        """Counters; ``bytes`` is what the entries cost, overhead included."""
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "entries": len(self._d),
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
            }
