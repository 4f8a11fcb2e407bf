"""Whole-tree operations: copy-on-write fork, garbage collection, verify."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from . import format as F
from .backend import Backend, normalize_url
from .entry import create
from .entry import open as open_tree
from .errors import CorruptTree, StoreAccessError, TreeExists
from .records import Snapshot, write_head_hint
from .telemetry import merge_files


def fork(
    src_url: str,
    dst_url: str,
    *,
    version: int | str | None = None,
    storage_options: dict | None = None,
    dst_storage_options: dict | None = None,
):
    """Start a new tree at ``dst_url`` from ``src_url`` at ``version`` (default: newest).

    Copy-on-write: the new tree's arrays below the fork point are the source's immutable
    shards, referenced by URL (``bases`` in the new root); only the source's tail (less than
    one epoch), its small JSON objects and its committed named objects are copied. The source
    gets a pin ``refs/forks/<id>.json`` naming the pinned version (skipped, with a note in the
    returned tree's ``fork_note``, if the source is not writable)."""
    src = open_tree(src_url, "r", version=version, storage_options=storage_options)
    dso = storage_options if dst_storage_options is None else dst_storage_options
    snap = src._snap
    geo = src.geo
    dst_be = Backend(dst_url, dso)
    if dst_be.exists("zarr.json") or dst_be.exists(F.log_key(1)):
        raise TreeExists(f"{dst_be.url}: a tree already exists here; pick another destination")
    if normalize_url(dst_url) == src.url:
        raise TreeExists(f"{src.url}: cannot fork a tree onto itself")
    counts: dict[str, int] = {}
    for name in F.array_names(snap.length, geo.block, snap.gset):
        spec = geo.spec(name)
        r = geo.rows(spec, snap.length, snap.nseg, snap.nheap)
        if r // spec.shard_rows:
            counts[name] = r // spec.shard_rows
    bases = [
        *src._facts.get("bases", []),
        {"url": src.url, "version": snap.version, "shards": counts},
    ]
    dst = create(
        dst_url,
        dim=geo.dim,
        dtype=geo.dtype,
        block=geo.block,
        epoch=geo.epoch,
        storage_options=dso,
        _bases=bases,
    )
    # version 2 of the fork: the source's tail, binding, objects and shadowed shards
    tail = src._tail_state()
    override = {}
    for key, path in snap.override.items():
        stage = f"stage/fork-{uuid.uuid4().hex[:12]}/{key}"
        dst._be.write(stage, src._be.read(path))
        override[key] = stage
    bkey = None
    if snap.rec.get("binding"):
        bkey = dst._blobs.write("binding", src._blobs.read(snap.rec["binding"]))
    okey = None
    if snap.rec.get("objects"):
        m = src._objects_map()
        for name in m:
            data = src.read_object(name)
            if not dst._be.exists(m[name]["path"]):
                dst._be.write(m[name]["path"], data)
        okey = dst._blobs.write("objects", m)
    base_rec = {**dst._snap.rec, "gset": snap.gset}
    if override:
        base_rec["override"] = override
    dst._snap = Snapshot(base_rec)
    dst._tail.rows = {name: np.array(rows) for name, rows in tail.items()}
    dst._tail.version = dst.version
    # the fork commit: lengths of the source, consolidated tail, nothing else new
    v = dst._commit(
        {},
        snap.length,
        snap.nseg,
        snap.nheap,
        message=f"fork of {src.url} at version {snap.version}",
        objects=okey,
        binding=bkey,
        consolidate=True,
        replaced=dst._tail.rows,
    )
    assert v == 2
    dst.fork_note = None
    try:
        pin = {"url": dst.url, "version": snap.version, "time": time.time_ns()}
        src._be.write(f"refs/forks/{dst._facts['tree_id']}.json", F.encode_blob(pin))
    except (OSError, StoreAccessError) as e:
        dst.fork_note = f"could not pin {src.url} (read-only source?): {e}"
    return dst


@dataclass
class GCReport:
    url: str
    removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    kept_young: list[str] = field(default_factory=list)
    telemetry_merged: int = 0
    reachable: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict:
        return {
            "url": self.url,
            "removed": len(self.removed),
            "bytes_freed": self.bytes_freed,
            "kept_young": len(self.kept_young),
            "telemetry_merged": self.telemetry_merged,
            "reachable": self.reachable,
            "dry_run": self.dry_run,
        }


def gc(
    url: str,
    *,
    storage_options: dict | None = None,
    grace: float = 3600.0,
    dry_run: bool = False,
    compact_telemetry: bool = True,
) -> GCReport:
    """Remove objects that no commit, tag or pin reaches and that are older than ``grace``
    seconds (so a writer between writing its data and its commit is never robbed).

    Every commit is a snapshot, so everything any commit references is kept; what goes is the
    debris of crashed or conflicting writers, unfinished regists, and merged telemetry."""
    t = open_tree(url, "r", storage_options=storage_options)
    be = t._be
    geo = t.geo
    head = t.version
    recs = t._log.records(list(range(1, head + 1)))
    keep: set[str] = {"zarr.json", "log/head"}
    gsets: set[str] = set()
    for r in recs:
        keep.add(F.log_key(r["version"]))
        if r.get("delta"):
            keep.add(r["delta"]["path"])
        for p in (r.get("override") or {}).values():
            keep.add(p)
        for k in ("binding", "objects"):
            if r.get(k):
                keep.add(r[k])
        if r.get("objects"):
            for ent in t._blobs.read(r["objects"]).values():
                keep.add(ent["path"])
        gsets.add(r["gset"])
    # canonical shards: kept if their array is used by some commit and the head commits them
    shard_limit: dict[str, int] = {}
    for r in recs:
        for name in F.array_names(r["length"], geo.block, r["gset"]):
            spec = geo.spec(name)
            n = geo.rows(spec, r["length"], r["nseg"], r["nheap"]) // spec.shard_rows
            shard_limit[name] = max(shard_limit.get(name, 0), n)
    report = GCReport(url=t.url, dry_run=dry_run)
    now = time.time()
    doomed: list[tuple[str, int]] = []
    for path, size, mtime in be.walk(""):
        if _reachable(path, keep, shard_limit, geo):
            report.reachable += 1
            continue
        if path.startswith("telemetry/"):
            continue
        if mtime is not None and now - mtime < grace:
            report.kept_young.append(path)
            continue
        doomed.append((path, size))
    if compact_telemetry and not dry_run:
        report.telemetry_merged = merge_files(be)
    if not dry_run:
        be.delete([p for p, _ in doomed])
    report.removed = [p for p, _ in doomed]
    report.bytes_freed = sum(s for _, s in doomed)
    write_head_hint(be, head) if not dry_run else None
    return report


def _reachable(path: str, keep: set[str], shard_limit: dict[str, int], geo) -> bool:
    if path in keep or path.startswith("refs/"):
        return True
    parts = path.split("/")
    if parts[0] == "arrays" and len(parts) >= 3:
        name = parts[1]
        if name not in shard_limit:
            return False
        if parts[2] == "zarr.json":
            return True
        if parts[2] == "c" and len(parts) >= 4 and parts[3].isdigit():
            return int(parts[3]) < shard_limit[name]
    return False


def verify(url: str, *, storage_options: dict | None = None, version=None) -> dict:
    """Read every committed row of a version (checksums included); CorruptTree if any fails."""
    t = open_tree(url, "r", version=version, storage_options=storage_options, cache_bytes=0)
    n = 0
    for name in F.array_names(t.length, t.block, t._snap.gset):
        spec = t.geo.spec(name)
        r = t.geo.rows(spec, t.length, t._snap.nseg, t._snap.nheap)
        step = spec.shard_rows * 8
        for a in range(0, r, step):
            t._rows(name, a, min(r, a + step))
        n += r
    if t.length and t.tokens(0, t.length).size != t.length:
        raise CorruptTree(f"{t.url}: token count mismatch")
    t.segments()
    return {"url": t.url, "version": t.version, "rows": n}
