"""What every tree handle can do without writing: read one version of the tree.

A handle sees one snapshot (a commit record) at a time and moves only on ``refresh()`` or
its own commits. Rows below the last complete shard come through ``reads`` (shared chunk
cache), rows above it from the tail (``tail``); everything else a reader needs is small JSON
(``objects``), segment rows (``nodes``) or the commit log (``records``). The state of a
handle lives here; :class:`mcstore.tree.Tree` adds the writes.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Self

import numpy as np

from . import format as F
from .backend import Backend
from .bases import ForkBases
from .errors import CorruptTree, InvalidArgument
from .nodes import (
    FLAGS_OBJECT,
    Segment,
    decode_segments,
    overlay_flags,
    segment_index,
    token_created,
)
from .objects import Blobs, read_named, resolve_map
from .reads import ShardReader
from .records import CommitLog, Expired, LogEntry, Snapshot, find_head, list_tags, read_expired
from .tail import MAX_CHAIN, Tail
from .telemetry import Telemetry


class TreeView:
    """One version of one tree, for reading. Every handle is a :class:`Tree`."""

    # ------------------------------------------------------------------ construction
    def __init__(
        self,
        backend: Backend,
        facts: dict,
        rec: dict,
        *,
        mode: str,
        pinned: bool,
        cache_bytes: int,
        telemetry: bool,
        allow_bases: Iterable[str] = (),
    ):
        self._be = backend
        self._facts = facts
        self.geo = F.Geometry(
            int(facts["block"]), int(facts["dim"]), str(facts["dtype"]), int(facts["epoch"])
        )
        self.mode = mode
        self._pinned = pinned
        self._lock = threading.RLock()
        self._snap = Snapshot(rec)
        self._log = CommitLog(backend)
        self._log.remember(rec)
        self._tail = Tail(backend, self.geo)
        # (base, shards per array) for each fork base, opened and checked on its first read
        self._bases = ForkBases(backend, facts, allow_bases).readers
        self._reader = ShardReader(backend, self.geo, self._bases, cache_bytes)
        self._blobs = Blobs(backend)
        self._segments_cache: tuple[int, list[Segment]] | None = None
        self._telemetry = Telemetry(backend, telemetry)
        # what the operation that made this handle wants its caller to know (fork: a pin
        # that could not be written); empty for a plain open
        self.notes: list[str] = []
        if rec.get("tree") != facts.get("tree_id"):
            raise CorruptTree(
                f"{self.url}: commit {rec['version']} belongs to tree {rec.get('tree')!r} but "
                f"zarr.json names tree {facts.get('tree_id')!r} (a racing create or mixed copy); "
                "restore the tree from a copy"
            )

    # ------------------------------------------------------------------ properties
    @property
    def url(self) -> str:
        return self._be.url

    @property
    def version(self) -> int:
        return self._snap.version

    @property
    def length(self) -> int:
        return self._snap.length

    @property
    def tail_chain(self) -> int:
        """The longest tail chain a commit leaves (see ``tail``); trees from before it was a
        fact get the object-store bound."""
        return int(self._facts.get("tail_chain", MAX_CHAIN["object_store"]))

    @property
    def dim(self) -> int:
        return self.geo.dim

    @property
    def block(self) -> int:
        return self.geo.block

    @property
    def dtype(self) -> str:
        """Logical gist dtype: "float16" or "bfloat16" (returned as uint16 bit patterns)."""
        return self.geo.dtype

    @property
    def epoch(self) -> int:
        return self.geo.epoch

    @property
    def num_levels(self) -> int:
        return F.num_levels(self.length, self.block)

    def num_nodes(self, level: int) -> int:
        return F.num_nodes(self.length, level, self.block)

    @property
    def storage_options(self) -> dict:
        return self._be.storage_options

    @property
    def io_stats(self) -> dict[str, int]:
        return self._be.stats.snapshot()

    def cache_stats(self) -> dict[str, int]:
        return self._reader.stats()

    def clear_cache(self) -> None:
        """Drop every cached chunk (shard indexes stay: they are small and never change)."""
        self._reader.cache.clear()

    def __repr__(self) -> str:
        return f"<mcstore.Tree {self.url} v{self.version} len={self.length} mode={self.mode}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._telemetry.close()
        self._reader.close()

    # ------------------------------------------------------------------ store protocol
    # Used by the whole-tree operations (``ops``: fork, gc, verify) and by tests; not for
    # the runtime, which reads tokens, gists, segments and objects through the methods below.
    @property
    def snapshot(self) -> Snapshot:
        """The commit this handle sees (version, extent, tail chain, overrides)."""
        return self._snap

    @property
    def backend(self) -> Backend:
        """The object access layer of this tree (requests and bytes in ``stats``)."""
        return self._be

    @property
    def tree_id(self) -> str:
        return self._facts["tree_id"]

    @property
    def fork_bases(self) -> list[dict]:
        """The trees this one was forked from: url, version and complete shards per array."""
        return [dict(b) for b in self._facts.get("bases", [])]

    def records(
        self, first: int = 1, last: int | None = None, *, skip: Expired | None = None
    ) -> list[Snapshot]:
        """Commits ``first..last`` (default: up to this handle's version), oldest first,
        leaving out the versions in ``skip``."""
        last = self.version if last is None else last
        vs = [v for v in range(first, last + 1) if skip is None or v not in skip]
        return [Snapshot(r) for r in self._log.records(vs)]

    def blob(self, key: str):
        """A ``meta/`` blob (binding, object map) as parsed JSON, verified."""
        return self._blobs.read(key)

    def array_rows(self, name: str, a: int, b: int, snap: Snapshot | None = None) -> np.ndarray:
        """Rows [a, b) of physical array ``name`` at this version (or ``snap``)."""
        return self._rows(name, a, b, snap)

    def tail_rows(self) -> dict[str, np.ndarray]:
        """Every array's rows past its last complete shard, at this version."""
        return self._tail_state()

    def shard_location(self, name: str, shard: int, *, override: bool = True) -> tuple:
        """(backend, key) where complete shard ``shard`` of array ``name`` is read at this
        version: a staged copy its commit points to (unless ``override`` is False), a fork
        base, or this tree's canonical name. A base's backend is checked on first use."""
        if override:
            return self._reader.locate(self._snap, name, shard)
        key = self.geo.spec(name).chunk_key(shard)
        for be, counts in self._bases:
            if shard < counts.get(name, 0):
                return be, key
        return self._be, key

    # ------------------------------------------------------------------ binding
    @property
    def binding(self) -> dict | None:
        key = self._snap.rec.get("binding")
        if not key:
            return None
        return self._blobs.read(key)["binding"]

    def _gistnets(self) -> list:
        key = self._snap.rec.get("binding")
        if not key:
            return [None]
        return self._blobs.read(key)["gistnets"]

    def same_binding(self, binding: dict | None) -> bool:
        """Whether ``binding`` is the one this version records. The store keeps a binding as
        an opaque JSON object and compares it canonically; what a difference means (a stale
        gist set, a tokenizer that gives other text) is the runtime's to judge."""
        return F.canonical_json(self.binding) == F.canonical_json(binding)

    # ------------------------------------------------------------------ refresh
    def refresh(self) -> int:
        """Move to the newest commit (no-op for a handle opened at a fixed version)."""
        if self._pinned:
            return self.version
        with self._lock:
            head = find_head(self._be, self.version)
            if head != self.version:
                self._snap = Snapshot(self._log.record(head))  # segments() sees the new version
            return self.version

    # ------------------------------------------------------------------ tail
    def _tail_state(self) -> dict[str, np.ndarray]:
        with self._lock:
            return self._tail.get(self._snap, self._log)

    # ------------------------------------------------------------------ reads
    def _rows(self, name: str, a: int, b: int, snap: Snapshot | None = None) -> np.ndarray:
        snap = snap or self._snap
        r = self.geo.rows(name, snap.extent)
        if not 0 <= a <= b <= r:
            raise InvalidArgument(
                f"{self.url}: rows [{a}, {b}) of {name} out of range; version {snap.version} "
                f"has {r}"
            )
        if a == b:
            return self.geo.spec(name).empty(0)
        bound = self.geo.bound(name, snap.extent)
        tail = self._tail_state()[name] if b > bound else self.geo.spec(name).empty(0)
        return F.splice(lambda x0, x1: self._reader.rows(snap, name, x0, x1), bound, tail, a, b)

    # ------------------------------------------------------------------ public reads
    def tokens(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.length if stop is None else stop
        return np.array(self._rows("tokens", start, stop), dtype=np.int32)

    def gists(self, level: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Gists of nodes [start, stop) at ``level`` >= 1, shape [n, dim]: float16, or for a
        bfloat16 tree the bf16 bit patterns as uint16 (see bf16_to_float32)."""
        if level < 1:
            raise InvalidArgument(f"{self.url}: gists exist at levels >= 1, not {level}")
        stop = self.num_nodes(level) if stop is None else stop
        if level >= F.MAX_LEVEL or (stop == 0 and start == 0 and self.num_nodes(level) == 0):
            return np.zeros((0, self.dim), dtype=self.geo.stored_dtype)
        name = F.gist_names(level, self._snap.gset)[0]
        return np.array(self._rows(name, start, stop))

    def node_meta(self, level: int, start: int = 0, stop: int | None = None) -> dict:
        """Columns created_at (int64 ns), gist_version (uint16, index into gistnet_table()),
        flags (uint8: creation flags OR the committed mutable flags)."""
        stop = self.num_nodes(level) if stop is None else stop
        if level == 0:
            n = stop - start
            return {
                "created_at": token_created(self.segments(), start, stop),
                "gist_version": np.zeros(n, np.uint16),
                "flags": overlay_flags(self._flags_table(), 0, start, np.zeros(n, np.uint8)),
            }
        if self.num_nodes(level) == 0 and start == stop == 0:
            z = np.zeros(0)
            return {
                "created_at": z.astype(np.int64),
                "gist_version": z.astype(np.uint16),
                "flags": z.astype(np.uint8),
            }
        gv = F.gist_names(level, self._snap.gset)[1]
        flags = np.array(self._rows(f"flags_{level}", start, stop))
        return {
            "created_at": np.array(self._rows(f"created_{level}", start, stop)),
            "gist_version": np.array(self._rows(gv, start, stop)),
            "flags": overlay_flags(self._flags_table(), level, start, flags),
        }

    def gistnet_table(self) -> list:
        """GistNet ids indexed by node_meta()["gist_version"]."""
        return list(self._gistnets())

    def _flags_table(self) -> dict:
        if FLAGS_OBJECT not in self.objects():
            return {}
        return json.loads(self.read_object(FLAGS_OBJECT))

    def segments(self) -> list[Segment]:
        """Every segment, oldest first; cached per version.

        Segment rows are append-only along a tree's history and a handle only moves forward,
        so a newer version reuses the segments decoded for an older one and decodes only the
        ones it added, plus the previous last one (its stop moves to the next start): a chat
        turn costs the same whatever the number of segments before it."""
        snap = self._snap
        cached = self._segments_cache
        if cached and cached[0] == snap.version:
            return cached[1]
        n = snap.nseg
        keep: list[Segment] = []
        if cached and cached[0] < snap.version and 0 < len(cached[1]) <= n:
            keep = cached[1][:-1]
        k = len(keep)
        heap_from = int(self._rows("seg_end", k - 1, k)[0]) if k else 0
        new = decode_segments(
            self.url,
            self._rows("seg_start", k, n),
            self._rows("seg_time", k, n),
            self._rows("seg_end", k, n),
            self._rows("seg_heap", heap_from, snap.nheap).tobytes(),
            snap.length,
            first=k,
            heap_from=heap_from,
        )
        if k and (not new or new[0].start != cached[1][-1].start):
            # not an extension of the cached version (never expected): decode everything
            self._segments_cache = None
            return self.segments()
        out = keep + new
        self._segments_cache = (snap.version, out)
        return out

    def segment_at(self, pos: int) -> Segment:
        if not 0 <= pos < self.length:
            raise InvalidArgument(f"{self.url}: token {pos} out of range [0, {self.length})")
        segs = self.segments()
        return segs[segment_index(segs, pos)]

    def log(self, limit: int | None = None) -> list[LogEntry]:
        """Commits, newest first (all of them unless ``limit``); expired ones are left out."""
        expired = self.expired()
        newest_first = (v for v in range(self.version, 0, -1) if v not in expired)
        kept = list(itertools.islice(newest_first, limit))  # limit None: all of them
        recs = list(reversed(self._log.records(sorted(kept))))
        return [
            LogEntry(r["version"], r["time"], r.get("message"), r["length"], r["parent"])
            for r in recs
        ]

    def expired(self) -> Expired:
        """Versions a retention policy removed (see ``mcstore.gc``)."""
        return read_expired(self._be)

    # ------------------------------------------------------------------ tags
    def tags(self) -> dict[str, int]:
        return list_tags(self._be)

    # ------------------------------------------------------------------ objects
    def objects_map(self) -> dict:
        """Committed named objects: name -> {path, size, sha256}."""
        return resolve_map(self._blobs, self._snap.rec.get("objects"))[0]

    def object_map_keys(self, key: str | None) -> tuple[dict, list[str]]:
        """(the object map a record names, every map blob it is joined from)."""
        return resolve_map(self._blobs, key)

    def objects(self) -> list[str]:
        return sorted(self.objects_map())

    def read_object(self, name: str) -> bytes:
        m = self.objects_map()
        if name not in m:
            raise InvalidArgument(f"{self.url}: no object {name!r} at version {self.version}")
        return read_named(self._be, name, m[name])

    # ------------------------------------------------------------------ cache / prefetch
    def prefetch(self, level: int, indices: Iterable[int], *, wait: bool = False) -> Future:
        """Warm the cache with nodes (level 0: token blocks) in a background thread."""
        return self._reader.prefetch(self._snap, level, indices, wait=wait)

    # ------------------------------------------------------------------ telemetry
    def record_access(self, level: int, indices) -> None:
        """Count an access to nodes (cheap: buffered in memory, flushed in batches)."""
        self._telemetry.record(level, indices)

    def flush_telemetry(self) -> str | None:
        """Write buffered access counts as one small object under telemetry/ (never a commit)."""
        return self._telemetry.flush()

    def access_stats(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        """(counts, last_access ns) per node of ``level``, over every flushed and buffered
        access by any session."""
        n = self.num_nodes(level) if level > 0 else (self.length + self.block - 1) // self.block
        return self._telemetry.stats(level, n)

    # ------------------------------------------------------------------ info
    def info(self, *, storage_bytes: bool = True) -> dict:
        levels = [
            {"level": lv, "nodes": self.num_nodes(lv) if lv else self.length}
            for lv in range(self.num_levels)
        ]
        out = {
            "url": self.url,
            "format": self._facts["format"],
            "version": self.version,
            "length": self.length,
            "levels": levels,
            "dim": self.dim,
            "dtype": self.dtype,
            "block": self.block,
            "epoch": self.epoch,
            "binding": self.binding,
            "segments": self._snap.nseg,
            "tags": self.tags(),
            "objects": self.objects(),
            "forked_from": [b["url"] for b in self._facts.get("bases", [])],
        }
        if storage_bytes:
            out["bytes"] = sum(s for _, s, _ in self._be.walk(""))
        return out
