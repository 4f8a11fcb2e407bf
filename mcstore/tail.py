"""Tail deltas: the rows of each array that are not yet in a complete shard.

Shards are written only when complete, so they never change. What a commit adds beyond the
last complete shard goes to one small delta object ``tail/<n>-<nonce>.bin``: per array, in
``array_names`` order, the rows this commit added above what is already in shards or in an
earlier delta. A reader rebuilds the tail by joining the deltas of the chain
``tail_from .. version``. A commit consolidates (its delta holds the whole tail and starts a
new chain) when the chain would grow past ``MAX_DELTAS``, when the timeline crosses an epoch
(every level's shards close there, so the tail is small), or when the gist set changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import format as F
from .backend import Backend
from .errors import CorruptTree, damaged
from .records import CommitLog, Snapshot


class Tail:
    """The tail rows of one version, kept between reads, and the deltas they were joined from.

    Not locked: the tree holds its lock around every call."""

    def __init__(self, be: Backend, geo: F.Geometry):
        self._be = be
        self._geo = geo
        self.rows: dict[str, np.ndarray] | None = None
        self.version = -1
        self.deltas: dict[str, bytes] = {}  # path -> bytes, for the chain of ``version``

    def get(self, snap: Snapshot, log: CommitLog) -> dict[str, np.ndarray]:
        if self.rows is not None and self.version == snap.version:
            return self.rows
        recs = log.records(list(range(snap.tail_from, snap.version + 1)))
        keys = [r["delta"]["path"] for r in recs if r.get("delta")]
        need = [k for k in keys if k not in self.deltas]
        got = self._be.read_many(need) if need else {}
        for r in recs:
            d = r.get("delta")
            if not d or d["path"] in self.deltas:
                continue
            raw = got.get(d["path"])
            if raw is None:
                raise damaged(
                    self._be.url, d["path"], f"(tail of version {r['version']}) is missing"
                )
            if len(raw) != d["size"] or F.crc32c(raw) != d["crc"]:
                raise damaged(
                    self._be.url,
                    d["path"],
                    f"(tail of version {r['version']}) does not match its checksum",
                )
            self.deltas[d["path"]] = raw
        self.deltas = {k: self.deltas[k] for k in keys}
        self.rows = assemble(self._be.url, self._geo, recs, self.deltas)
        self.version = snap.version
        return self.rows

    def write_delta(self, version: int, nonce: str, blob: bytes) -> dict:
        """Write the delta of ``version``; -> its entry in the commit record."""
        path = f"tail/{version:020d}-{nonce}.bin"
        self._be.write(path, blob)
        self.deltas[path] = blob
        return {"path": path, "size": len(blob), "crc": F.crc32c(blob)}

    def advance(self, rec: dict, rows: dict[str, np.ndarray], log: CommitLog) -> None:
        """After committing ``rec``: its tail is ``rows`` (what a reader would assemble)."""
        self.rows, self.version = rows, rec["version"]
        chain = {
            (r.get("delta") or {}).get("path")
            for r in log.records(list(range(rec["tail_from"], rec["version"] + 1)))
        }
        self.deltas = {k: v for k, v in self.deltas.items() if k in chain}


def needs_consolidation(geo: F.Geometry, snap: Snapshot, new: F.Extent) -> bool:
    """Whether the commit after ``snap`` (reaching ``new``) must start a new delta chain."""
    return (
        new.length // geo.epoch != snap.length // geo.epoch
        or snap.version + 1 - snap.tail_from >= F.MAX_DELTAS
        or new.gset != snap.gset
    )


@dataclass
class Growth:
    """What one commit writes for its rows: shards it completes, its delta, the new tail."""

    shards: list[tuple[str, int, bytes]]  # (array, shard number, encoded shard)
    delta: bytes
    tail: dict[str, np.ndarray]


def grow(
    geo: F.Geometry,
    old: F.Extent,
    new: F.Extent,
    old_tail: dict[str, np.ndarray],
    new_rows: dict[str, np.ndarray],
    *,
    consolidate: bool,
    replaced: dict[str, np.ndarray] | None,
) -> Growth:
    """Join each array's old tail with its new rows and cut the result at shard bounds.

    ``replaced`` (regist, fork) gives whole tails for arrays whose complete shards exist."""
    shards: list[tuple[str, int, bytes]] = []
    delta_parts: list[bytes] = []
    new_tail: dict[str, np.ndarray] = {}
    for name in new.arrays(geo.block):
        spec = geo.spec(name)
        S = spec.shard_rows
        r_new, b_new = geo.rows(name, new), geo.bound(name, new)
        if replaced is not None and name in replaced:
            full_tail, b_old, r_old = replaced[name], b_new, r_new
        else:
            r_old, b_old = geo.rows(name, old), geo.bound(name, old)
            full_tail = old_tail.get(name, spec.empty(0))
        fresh = new_rows.get(name)
        if fresh is None:
            fresh = spec.empty(0)
        if len(fresh) != r_new - r_old:
            raise AssertionError(f"{name}: {len(fresh)} new rows, expected {r_new - r_old}")

        def get(x0, x1, full_tail=full_tail, b_old=b_old, r_old=r_old, fresh=fresh):
            return F.splice(lambda a, b: full_tail[a - b_old : b - b_old], r_old, fresh, x0, x1)

        for k in range(r_old // S, r_new // S):
            shards.append((name, k, F.encode_shard(spec, get(k * S, (k + 1) * S))))
        new_tail[name] = np.array(get(b_new, r_new)) if r_new > b_new else spec.empty(0)
        lo = b_new if consolidate else max(r_old, b_new)
        if r_new > lo:
            rows = np.ascontiguousarray(
                get(lo, r_new), dtype=np.dtype(spec.dtype).newbyteorder("<")
            )
            delta_parts.append(rows.tobytes())
    return Growth(shards, b"".join(delta_parts), new_tail)


def assemble(
    url: str, geo: F.Geometry, recs: list[dict], deltas: dict[str, bytes]
) -> dict[str, np.ndarray]:
    """The tail of ``recs[-1]`` from the deltas of its chain ``recs``."""
    head = Snapshot(recs[-1])
    out: dict[str, np.ndarray] = {}
    filled: dict[str, np.ndarray] = {}
    bounds: dict[str, tuple[int, int]] = {}
    for name in head.extent.arrays(geo.block):
        b, r = geo.bound(name, head.extent), geo.rows(name, head.extent)
        bounds[name] = (b, r)
        out[name] = geo.spec(name).empty(r - b)
        filled[name] = np.zeros(r - b, dtype=bool)
    prev = None
    for rec in recs:
        for name, lo, hi, chunk in delta_pieces(geo, prev, rec, deltas):
            if name not in out:
                continue
            b, r = bounds[name]
            a0, a1 = max(lo, b), min(hi, r)
            if a1 > a0:
                out[name][a0 - b : a1 - b] = chunk[a0 - lo : a1 - lo]
                filled[name][a0 - b : a1 - b] = True
        prev = rec
    for name, f in filled.items():
        if not f.all():
            raise CorruptTree(
                f"{url}: the tail of array {name} at version {head.version} is "
                "incomplete (commit chain inconsistent); restore the tree from a copy"
            )
    return out


def delta_pieces(geo: F.Geometry, prev: dict | None, rec: dict, deltas: dict[str, bytes]):
    """(array, row_lo, row_hi, rows) for each array in the delta of ``rec``."""
    d = rec.get("delta")
    snap = Snapshot(rec)
    consolidated = snap.tail_from == snap.version
    if not d:
        return
    raw = memoryview(deltas[d["path"]])
    off = 0
    for name in snap.extent.arrays(geo.block):
        spec = geo.spec(name)
        r_new, b_new = geo.rows(name, snap.extent), geo.bound(name, snap.extent)
        if consolidated or prev is None:
            lo = b_new
        else:
            lo = max(geo.rows(name, Snapshot(prev).extent), b_new)
        if r_new > lo:
            n = (r_new - lo) * spec.itemsize
            if off + n > len(raw):
                raise CorruptTree(f"delta {d['path']} is shorter than its commit says")
            yield name, lo, r_new, spec.from_bytes(raw[off : off + n])
            off += n
    if off != len(raw):
        raise CorruptTree(f"delta {d['path']} is longer than its commit says")
