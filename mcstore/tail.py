"""Tail deltas: the rows of each array that are not yet in a complete shard.

Shards are written only when complete, so they never change. What a commit adds beyond the
last complete shard goes to one small delta object ``tail/<n>-<nonce>.bin``: per array, in
``array_names`` order, the rows this commit added above what is already in shards or in an
earlier delta. A checkpoint is a delta that holds the whole tail.

Each commit record lists its **chain**: the last checkpoint and the deltas since, with the
extents they were cut at, so a reader joins the tail from the record alone: one request for
the record, then the chain's objects concurrently, never the records in between. A commit
writes a checkpoint when the chain would grow past ``MAX_CHAIN`` (so opening a tree on an
object store takes a bounded number of requests however many small commits it had), when
the timeline crosses an epoch (every level's shards close there, so the tail is small), or
when the gist set changes; in between, deltas merge like a binary counter (``plan_delta``)
so the chain stays short without rewriting the whole tail often. Records written before chains existed name only their own delta
and ``tail_from``; their tails are joined from the records of ``tail_from .. version``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import format as F
from .backend import Backend
from .errors import CorruptTree, damaged
from .records import CommitLog, Snapshot

# tail objects a reader joins at most, a fact of each tree chosen at create: few on object
# stores, where each is a request (open + tail then take at most 10), more on local disk,
# where a short chain would only cost rewrites
MAX_CHAIN = {"object_store": 6, "local": 12}
# a full chain's new delta absorbs the newest entries while each weighs at most this many times
# what it holds so far: 2 rewrote rows 3.7x (128 commits an epoch) to 7x (2048) with 6 entries
# in a simulation, where 1 went from 3.9x to 39x (checkpoints forced by a chain of equals)
MERGE_RATIO = 2


def chain_of(snap: Snapshot, log: CommitLog) -> list[dict]:
    """The chain entries of ``snap``: from its record, or (older records) from the records
    of its ``tail_from .. version``."""
    if "chain" in snap.rec:
        return list(snap.rec["chain"])
    out: list[dict] = []
    prev = None
    for r in log.records(list(range(snap.tail_from, snap.version + 1))):
        rs = Snapshot(r)
        d = r.get("delta")
        if d:
            full = rs.tail_from == rs.version or prev is None
            out.append(entry(d, rs.extent, None if full else prev.extent))
        prev = rs
    return out


def entry(delta: dict, to: F.Extent, since: F.Extent | None, weight: int = 1) -> dict:
    """A chain entry: the delta object, the extents it was cut at (``since`` None: a
    checkpoint, holding the whole tail at ``to``) and how many commits it covers."""
    return {
        **delta,
        "to": [to.length, to.nseg, to.nheap, to.gset],
        "since": None if since is None else [since.length, since.nseg, since.nheap, since.gset],
        "weight": weight,
    }


def _extent(v) -> F.Extent:
    return F.Extent(int(v[0]), int(v[1]), int(v[2]), str(v[3]))


class Tail:
    """The tail rows of one version, kept between reads, and the deltas they were joined from.

    Not locked: the tree holds its lock around every call."""

    def __init__(self, be: Backend, geo: F.Geometry):
        self._be = be
        self._geo = geo
        self.rows: dict[str, np.ndarray] | None = None
        self.version = -1
        self.chain: list[dict] = []
        self.deltas: dict[str, bytes] = {}  # path -> bytes, for the chain of ``version``

    def get(self, snap: Snapshot, log: CommitLog) -> dict[str, np.ndarray]:
        if self.rows is not None and self.version == snap.version:
            return self.rows
        chain = chain_of(snap, log)
        keys = [e["path"] for e in chain]
        got = self._read([e for e in chain if e["path"] not in self.deltas], snap.version)
        for e in chain:
            if e["path"] in self.deltas:
                continue
            raw = got.get(e["path"])
            if raw is None:
                raise damaged(
                    self._be.url, e["path"], f"(tail of version {snap.version}) is missing"
                )
            if len(raw) != e["size"] or F.crc32c(raw) != e["crc"]:
                raise damaged(
                    self._be.url,
                    e["path"],
                    f"(tail of version {snap.version}) does not match its checksum",
                )
            self.deltas[e["path"]] = raw
        self.deltas = {k: self.deltas[k] for k in keys}
        self.rows = assemble(self._be.url, self._geo, snap, chain, self.deltas)
        self.version, self.chain = snap.version, chain
        return self.rows

    def _read(self, need: list[dict], version: int) -> dict[str, bytes | None]:
        """The deltas of chain entries ``need`` (None: missing). A record's sizes can be
        re-signed and an object can be huge (a sparse file): each size must be the one its
        entry's extents give, and no more than that (and one byte) is read of any delta."""
        for e in need:
            if e["size"] != delta_nbytes(self._geo, e):
                raise damaged(
                    self._be.url,
                    e["path"],
                    f"(tail of version {version}) has a size its commit's extents do not give",
                )
        reqs = [(e["path"], 0, e["size"] + 1) for e in need]
        try:
            raws = self._be.read_ranges(reqs) if reqs else []
        except FileNotFoundError:
            raws = []
            for r in reqs:
                try:
                    raws.append(self._be.read_range(*r))
                except FileNotFoundError:
                    raws.append(None)
        return {e["path"]: raw for e, raw in zip(need, raws, strict=True)}

    def write_delta(self, version: int, nonce: str, blob: bytes) -> dict:
        """Write the delta of ``version``; -> its object entry (path, size, checksum)."""
        path = f"tail/{version:020d}-{nonce}.bin"
        self._be.write(path, blob)
        self.deltas[path] = blob
        return {"path": path, "size": len(blob), "crc": F.crc32c(blob)}

    def advance(self, rec: dict, rows: dict[str, np.ndarray]) -> None:
        """After committing ``rec``: its tail is ``rows`` (what a reader would assemble)."""
        self.rows, self.version, self.chain = rows, rec["version"], list(rec["chain"])
        keep = {e["path"] for e in self.chain}
        self.deltas = {k: v for k, v in self.deltas.items() if k in keep}


def plan_delta(
    geo: F.Geometry,
    snap: Snapshot,
    chain: list[dict],
    new: F.Extent,
    *,
    checkpoint: bool,
    max_chain: int,
) -> tuple[F.Extent | None, list[dict], int]:
    """What the commit after ``snap`` (reaching ``new``) writes to its tail:
    (``since`` for :func:`grow`, the chain entries it keeps, the new entry's weight).

    An entry's weight is the number of commits it covers. A new delta covers only its own
    commit while the chain has room; when it is full, the delta absorbs the newest entries
    while each weighs at most ``MERGE_RATIO`` times what it holds so far (size-tiered merging,
    as in an LSM tree), so rows are rewritten a few times, not once per commit. If the chain would
    still outgrow ``max_chain``, at an epoch crossing (the tail is small there) and when the
    gist set changes, the commit writes a checkpoint."""
    if checkpoint or new.length // geo.epoch != snap.length // geo.epoch or new.gset != snap.gset:
        return None, [], 0
    if new == snap.extent:  # no rows: the chain stays as it is
        return snap.extent, list(chain), 0
    keep, since, weight = list(chain), snap.extent, 1
    if len(keep) + 1 > max_chain:
        while (
            keep
            and keep[-1].get("since") is not None
            and keep[-1].get("weight", 0) <= MERGE_RATIO * weight
        ):
            weight += keep[-1]["weight"]
            since = _extent(keep.pop()["since"])
        if len(keep) + 1 > max_chain:
            return None, [], 0
    return since, keep, weight


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
    since: F.Extent | None,
    replaced: dict[str, np.ndarray] | None,
) -> Growth:
    """Join each array's old tail with its new rows and cut the result at shard bounds.

    The delta holds the tail rows added since extent ``since`` (None: the whole tail, a
    checkpoint). ``replaced`` (regist, fork) gives whole tails for arrays whose complete
    shards exist."""
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
        lo = b_new if since is None else max(geo.rows(name, since), b_new)
        if r_new > lo:
            rows = np.ascontiguousarray(
                get(lo, r_new), dtype=np.dtype(spec.dtype).newbyteorder("<")
            )
            delta_parts.append(rows.tobytes())
    return Growth(shards, b"".join(delta_parts), new_tail)


def assemble(
    url: str, geo: F.Geometry, snap: Snapshot, chain: list[dict], deltas: dict[str, bytes]
) -> dict[str, np.ndarray]:
    """The tail of ``snap`` from the deltas of its chain."""
    head = snap.extent
    out: dict[str, np.ndarray] = {}
    filled: dict[str, np.ndarray] = {}
    bounds: dict[str, tuple[int, int]] = {}
    for name in head.arrays(geo.block):
        b, r = geo.bound(name, head), geo.rows(name, head)
        bounds[name] = (b, r)
        out[name] = geo.spec(name).empty(r - b)
        filled[name] = np.zeros(r - b, dtype=bool)
    for e in chain:
        for name, lo, hi, chunk in delta_pieces(geo, e, deltas[e["path"]]):
            if name not in out:
                continue
            b, r = bounds[name]
            a0, a1 = max(lo, b), min(hi, r)
            if a1 > a0:
                out[name][a0 - b : a1 - b] = chunk[a0 - lo : a1 - lo]
                filled[name][a0 - b : a1 - b] = True
    for name, f in filled.items():
        if not f.all():
            raise CorruptTree(
                f"{url}: the tail of array {name} at version {snap.version} is "
                "incomplete (commit chain inconsistent); restore the tree from a copy"
            )
    return out


def _layout(geo: F.Geometry, e: dict):
    """(array, spec, row_lo, row_hi) for each array with rows in the delta of entry ``e``."""
    to = _extent(e["to"])
    since = None if e.get("since") is None else _extent(e["since"])
    for name in to.arrays(geo.block):
        spec = geo.spec(name)
        r_new, b_new = geo.rows(name, to), geo.bound(name, to)
        lo = b_new if since is None else max(geo.rows(name, since), b_new)
        if r_new > lo:
            yield name, spec, lo, r_new


def delta_nbytes(geo: F.Geometry, e: dict) -> int:
    """Bytes of the delta of chain entry ``e``, from its extents (less than one shard of
    each array: the rows past the last complete shard)."""
    return sum((hi - lo) * spec.itemsize for _, spec, lo, hi in _layout(geo, e))


def delta_pieces(geo: F.Geometry, e: dict, raw: bytes):
    """(array, row_lo, row_hi, rows) for each array in the delta of chain entry ``e``."""
    view = memoryview(raw)
    off = 0
    for name, spec, lo, r_new in _layout(geo, e):
        n = (r_new - lo) * spec.itemsize
        if off + n > len(view):
            raise CorruptTree(f"delta {e['path']} is shorter than its commit says")
        yield name, lo, r_new, spec.from_bytes(view[off : off + n])
        off += n
    if off != len(view):
        raise CorruptTree(f"delta {e['path']} is longer than its commit says")
