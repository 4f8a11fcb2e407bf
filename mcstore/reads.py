"""Reading rows of complete shards: locating the shard, its index, chunks through the cache.

A complete shard can live in four places: this tree's canonical name, a staged copy that a
commit's ``override`` points at (see ``shards``), a redaction's rewritten copy (``redact``),
or a base tree this one was forked from.
A shard's index (the offsets of its chunks) is read once per handle with one ranged read of
the shard's end; chunks then come by ranged reads, consecutive chunks of one shard coalesced
into one request and requests to object stores issued concurrently. Decoded chunks (one token
block, or one gist row) go to the byte-bounded LRU cache, keyed by object, so a cached chunk
stays valid across versions: shards never change.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from . import format as F
from .backend import Backend
from .cache import LRUCache
from .errors import damaged
from .records import Snapshot
from .shards import Bases

Chunk = tuple[int, Backend, str]  # (chunk number in the array, where, shard object key)
BATCH_SHARDS = 64  # shards one step of a long read locates, checks and fetches


class ShardReader:
    """The complete-shard reads of one tree handle, with its chunk and index caches."""

    def __init__(self, be: Backend, geo: F.Geometry, bases: Bases, cache_bytes: int):
        self._be = be
        self._geo = geo
        self._bases = bases
        self.cache = LRUCache(cache_bytes)
        self._indexes: dict[tuple[str, str], np.ndarray] = {}
        # overrides this handle copied to the canonical name: read that name again
        self.fixed_overrides: set[str] = set()
        self._executor: ThreadPoolExecutor | None = None

    def stats(self) -> dict[str, int]:
        s = self.cache.stats()
        s["shard_indexes"] = len(self._indexes)
        return s

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def locate(self, snap: Snapshot, name: str, shard: int) -> tuple[Backend, str]:
        spec = self._geo.spec(name)
        rd = snap.redact.get(f"{name}/{shard}")
        if rd is not None:  # a redaction's copy: wins over every other place
            return self._be, rd
        ov = snap.override.get(f"{name}/{shard}")
        if ov is not None and f"{name}/{shard}" not in self.fixed_overrides:
            return self._be, ov
        for be, counts in self._bases:
            if shard < counts.get(name, 0):
                return be, spec.chunk_key(shard)
        return self._be, spec.chunk_key(shard)

    def rows(self, snap: Snapshot, name: str, a: int, b: int) -> np.ndarray:
        """Rows [a, b) that lie in complete shards, through the chunk cache.

        The counts that say how many rows exist come from a commit record, which whoever
        writes the tree can re-sign: a long read first loads the index of its last shard (a
        count no object backs fails after one request), then goes ``BATCH_SHARDS`` shards at
        a time, each batch's shards found before its rows are gathered."""
        spec = self._geo.spec(name)
        s0, s1 = a // spec.shard_rows, (b - 1) // spec.shard_rows + 1
        if s1 - s0 <= BATCH_SHARDS:
            return self._rows(snap, spec, name, a, b)
        self._load_indexes(spec, [self.locate(snap, name, s1 - 1)])
        step = BATCH_SHARDS * spec.shard_rows
        first = a - a % step
        return np.concatenate(
            [
                self._rows(snap, spec, name, max(a, x), min(b, x + step))
                for x in range(first, b, step)
            ]
        )

    def _rows(self, snap: Snapshot, spec: F.ArraySpec, name: str, a: int, b: int) -> np.ndarray:
        cr, cps = spec.chunk_rows, spec.chunks_per_shard
        c0, c1 = a // cr, (b - 1) // cr + 1
        chunks: dict[int, np.ndarray] = {}
        missing: list[Chunk] = []
        for c in range(c0, c1):
            be, key = self.locate(snap, name, c // cps)
            got = self.cache.get((be.url, key, c % cps))
            if got is None:
                missing.append((c, be, key))
            else:
                chunks[c] = got
        if missing:
            self._fetch(spec, missing, chunks)
        parts = [chunks[c] for c in range(c0, c1)]
        rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
        off = c0 * cr
        return rows[a - off : b - off]

    def prefetch(self, snap: Snapshot, level: int, indices: Iterable[int], *, wait: bool) -> Future:
        """Warm the cache with nodes of ``level`` (0: token blocks) that lie in complete
        shards, in a background thread unless ``wait``."""
        idx = sorted({int(i) for i in indices})
        block = self._geo.block

        def work():
            if level == 0:
                name, scale = "tokens", block
            else:
                name, scale = F.gist_names(level, snap.gset)[0], 1
            bound = self._geo.bound(name, snap.extent)
            runs: list[list[int]] = []
            for i in idx:
                if i < 0 or (i + 1) * scale > bound:
                    continue
                if runs and runs[-1][1] == i:
                    runs[-1][1] = i + 1
                else:
                    runs.append([i, i + 1])
            for a, b in runs:
                self.rows(snap, name, a * scale, b * scale)

        if wait:
            fut: Future = Future()
            fut.set_result(work())
            return fut
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="mcstore-prefetch")
        return self._executor.submit(work)

    def _load_indexes(self, spec: F.ArraySpec, locs: list[tuple[Backend, str]]) -> None:
        todo = [loc for loc in dict.fromkeys(locs) if (loc[0].url, loc[1]) not in self._indexes]
        if not todo:
            return
        data_len = spec.shard_nbytes - spec.index_nbytes
        by_be: dict[str, list[tuple[Backend, str]]] = {}
        for loc in todo:
            by_be.setdefault(loc[0].url, []).append(loc)
        for items in by_be.values():
            be = items[0][0]
            try:
                raws = be.read_ranges([(k, data_len, spec.shard_nbytes) for _, k in items])
            except FileNotFoundError as e:
                missing = next((k for _, k in items if k in str(e)), items[0][1])
                raise damaged(be.url, missing, "is missing but a commit references it") from None
            for (b, key), raw in zip(items, raws, strict=True):
                try:
                    idx = F.decode_index(spec, raw)
                except ValueError as e:
                    raise damaged(b.url, key, f"has a bad shard index ({e})") from None
                self._indexes[(b.url, key)] = idx

    def _fetch(self, spec: F.ArraySpec, missing: list[Chunk], into: dict[int, np.ndarray]) -> None:
        cps = spec.chunks_per_shard
        self._load_indexes(spec, [(be, key) for _, be, key in missing])
        # coalesce consecutive chunks of one shard object into one ranged read
        runs: list[list[Chunk]] = []
        for item in missing:
            c, be, key = item
            if runs:
                pc, pbe, pkey = runs[-1][-1]
                idx = self._indexes[(be.url, key)]
                if (
                    pbe is be
                    and pkey == key
                    and pc + 1 == c
                    and idx[pc % cps, 0] + idx[pc % cps, 1] == idx[c % cps, 0]
                ):
                    runs[-1].append(item)
                    continue
            runs.append([item])
        by_be: dict[str, list[list[Chunk]]] = {}
        for run in runs:
            by_be.setdefault(run[0][1].url, []).append(run)
        for group in by_be.values():
            be = group[0][0][1]
            reqs = []
            for run in group:
                idx = self._indexes[(be.url, run[0][2])]
                first, last = run[0][0] % cps, run[-1][0] % cps
                reqs.append((run[0][2], int(idx[first, 0]), int(idx[last, 0] + idx[last, 1])))
            try:
                raws = be.read_ranges(reqs)
            except FileNotFoundError:
                raise damaged(be.url, reqs[0][0], "is missing but a commit references it") from None
            for run, (key, start, _end), raw in zip(group, reqs, raws, strict=True):
                idx = self._indexes[(be.url, key)]
                for c, _, _ in run:
                    o = int(idx[c % cps, 0]) - start
                    piece = raw[o : o + int(idx[c % cps, 1])]
                    try:
                        arr = F.decode_chunk(spec, piece)
                    except ValueError as e:
                        raise damaged(be.url, key, f"has a bad chunk {c % cps} ({e})") from None
                    self.cache.put((be.url, key, c % cps), arr)
                    into[c] = arr
