"""Whole-tree operations: copy-on-write fork, garbage collection, verify."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import format as F
from .backend import open_backend
from .entry import create
from .entry import open as open_tree
from .errors import CorruptTree, StoreAccessError, TreeExists
from .records import write_head_hint
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
    gets a pin ``refs/forks/<id>.json`` naming the pinned version (skipped, with a line in the
    returned tree's ``notes``, if the source is not writable)."""
    src = open_tree(src_url, "r", version=version, storage_options=storage_options)
    dso = storage_options if dst_storage_options is None else dst_storage_options
    snap, geo = src.snapshot, src.geo
    dst_be = open_backend(dst_url, dso)
    if dst_be.exists("zarr.json") or dst_be.exists(F.log_key(1)):
        raise TreeExists(f"{dst_be.url}: a tree already exists here; pick another destination")
    if dst_be.url == src.url:
        raise TreeExists(f"{src.url}: cannot fork a tree onto itself")
    counts = {
        name: geo.shards(name, snap.extent)
        for name in snap.extent.arrays(geo.block)
        if geo.shards(name, snap.extent)
    }
    dst = create(
        dst_be,
        dim=geo.dim,
        dtype=geo.dtype,
        block=geo.block,
        epoch=geo.epoch,
        bases=[*src.fork_bases, {"url": src.url, "version": snap.version, "shards": counts}],
    )
    v = dst.adopt(src)  # version 2: the source's extent, tail, binding, objects
    assert v == 2
    try:
        pin = {"url": dst.url, "version": snap.version, "time": time.time_ns()}
        src.backend.write(f"refs/forks/{dst.tree_id}.json", F.encode_blob(pin))
    except (OSError, StoreAccessError) as e:
        dst.notes.append(f"could not pin {src.url} (read-only source?): {e}")
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
    be, geo = t.backend, t.geo
    head = t.version
    snaps = t.records()
    keep: set[str] = {"zarr.json", "log/head"}
    # canonical shards: kept if their array is used by some commit and the head commits them
    shard_limit: dict[str, int] = {}
    for s in snaps:
        keep |= s.references()
        if s.rec.get("objects"):
            keep.update(ent["path"] for ent in t.blob(s.rec["objects"]).values())
        for name in s.extent.arrays(geo.block):
            shard_limit[name] = max(shard_limit.get(name, 0), geo.shards(name, s.extent))
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
    ext = t.snapshot.extent
    n = 0
    for name in ext.arrays(t.block):
        r = t.geo.rows(name, ext)
        step = t.geo.spec(name).shard_rows * 8
        for a in range(0, r, step):
            t.array_rows(name, a, min(r, a + step))
        n += r
    if t.length and t.tokens(0, t.length).size != t.length:
        raise CorruptTree(f"{t.url}: token count mismatch")
    t.segments()
    return {"url": t.url, "version": t.version, "rows": n}
