"""Whole-tree operations: copy-on-write fork, garbage collection, verify."""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field

from . import format as F
from .backend import concurrently, open_backend
from .bases import home, within
from .entry import create, read_facts
from .entry import open as open_tree
from .errors import (
    CorruptTree,
    InvalidArgument,
    StoreAccessError,
    TreeExists,
    damaged,
)
from .objects import blob_key
from .records import (
    EXPIRED_KEY,
    LOG_NAME,
    Snapshot,
    find_head,
    fork_pins,
    parse_record,
    write_expired,
    write_head_hint,
)
from .telemetry import merge_telemetry


def fork(
    src_url: str,
    dst_url: str,
    *,
    version: int | str | None = None,
    storage_options: dict | None = None,
    dst_storage_options: dict | None = None,
    allow_bases: list[str] | None = None,
):
    """Start a new tree at ``dst_url`` from ``src_url`` at ``version`` (default: newest).

    Copy-on-write: the new tree's arrays below the fork point are the source's immutable
    shards, referenced by URL (``bases`` in the new root); only the source's tail (less than
    one epoch), its small JSON objects and its committed named objects are copied. The source
    gets a pin ``refs/forks/<id>.json`` naming the pinned version (skipped, with a line in the
    returned tree's ``notes``, if the source is not writable).

    The new root records each base's tree id, which every open checks; a fork in another
    folder or bucket than its source opens with ``allow_bases`` naming the source
    (``mcstore.bases``). ``allow_bases`` here: where ``src_url``'s own bases may lie."""
    src = open_tree(
        src_url, "r", version=version, storage_options=storage_options, allow_bases=allow_bases
    )
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
        bases=[
            *src.fork_bases,
            {"url": src.url, "version": snap.version, "tree_id": src.tree_id, "shards": counts},
        ],
    )
    v = dst.adopt(src)  # version 2: the source's extent, tail, binding, objects
    assert v == 2
    try:
        pin = {"url": dst.url, "version": snap.version, "time": time.time_ns()}
        src.backend.write(f"refs/forks/{dst.tree_id}.json", F.encode_blob(pin))
    except (OSError, StoreAccessError) as e:
        dst.notes.append(f"could not pin {src.url} (read-only source?): {e}")
    far = [b["url"] for b in dst.fork_bases if not within(b["url"], home(dst.url))]
    if far:
        dst.notes.append(
            f"{dst.url} reads shards from {', '.join(far)}, outside its own folder or bucket: "
            f"open it with allow_bases={far} (mc: -o allow_bases={','.join(far)})"
        )
    return dst


MIN_GRACE = 900.0  # seconds: longer than a writer takes from its first shard to its record


@dataclass
class GCReport:
    url: str
    removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    kept_young: list[str] = field(default_factory=list)
    telemetry_merged: int = 0
    telemetry_deferred: int = 0  # telemetry files left for the next gc (bounds of one merge)
    reachable: int = 0
    dry_run: bool = False
    expired: list[int] = field(default_factory=list)  # versions this run expired
    kept_versions: int = 0
    notes: list[str] = field(default_factory=list)  # what the caller should know
    # deleted, then written back: a commit made meanwhile reaches them (a writer adopted them)
    restored: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "url": self.url,
            "removed": len(self.removed),
            "bytes_freed": self.bytes_freed,
            "kept_young": len(self.kept_young),
            "telemetry_merged": self.telemetry_merged,
            "telemetry_deferred": self.telemetry_deferred,
            "reachable": self.reachable,
            "dry_run": self.dry_run,
            "expired_versions": len(self.expired),
            "kept_versions": self.kept_versions,
        }


def gc(
    url: str,
    *,
    storage_options: dict | None = None,
    grace: float = 3600.0,
    dry_run: bool = False,
    compact_telemetry: bool = True,
    keep_last: int | None = None,
    keep_since: float | None = None,
    no_live_writers: bool = False,
    purge_below: int = 0,
) -> GCReport:
    """Remove objects that no kept commit, tag or pin reaches and that are older than
    ``grace`` seconds (so a writer between writing its data and its commit is never robbed).

    By default every commit is kept (each is a snapshot); what goes is the debris of crashed
    or conflicting writers, unfinished regists, and merged telemetry. ``keep_last`` /
    ``keep_since`` (seconds) expire older snapshots, as lakehouse formats do: a version is
    expired when it is older than ``keep_since`` *and* not among the last ``keep_last`` (either
    alone suffices); the newest version, tagged versions and versions a fork pinned are never
    expired. An expired version then reads as ``VersionNotFound`` naming the retention.

    A grace below ``MIN_GRACE`` could delete the data of a commit a live writer is making;
    it is refused unless ``no_live_writers`` says nobody writes this tree now.

    Age alone does not prove an object abandoned: a writer may adopt an old one (a resumed
    append finds a crashed writer's identical shard). So the listing is only a first cut:
    after it, gc finds the head again and adds what commits made meanwhile reach, and right
    before each delete it reads the object's time again (a writer that adopts re-stamps).
    What remains is docs/architecture.md#garbage-collection: a writer that re-stamps, commits
    and checks its shards all between gc's last look at a shard and its delete.

    ``purge_below`` (``mcstore.purge``, once it expired every version below it): what only
    those versions reach, and any writer's debris for them, goes whatever its age, the
    records last (a rerun after a crash still finds what they reach)."""
    check_gc_args(url, grace, keep_last, keep_since, no_live_writers)
    t = open_tree(url, "r", storage_options=storage_options)
    be = t.backend
    old = t.expired()
    snaps = t.records(skip=old)
    doomed_versions = _to_expire(t, snaps, keep_last, keep_since)
    kept = [s for s in snaps if s.version not in doomed_versions]
    report = GCReport(t.url, dry_run=dry_run, expired=sorted(doomed_versions))
    report.kept_versions = len(kept)
    reached = _Reached(t, kept)
    forced = _forced_deletes(t, doomed_versions, purge_below)
    doomed = _unreached(be, reached, forced, grace, report)
    if not dry_run:
        if doomed_versions:
            _record_expiry(be, old, report.expired, keep_last, keep_since)
        if compact_telemetry:
            _merge_telemetry(be, report)
        if purge_below:
            doomed.sort(key=lambda pn: pn[0].startswith("log/"))  # records last
        forced_paths = {p for p, _ in doomed if forced(p)}
        doomed = _delete_old(be, doomed, grace, forced_paths, report, reached.reached_now)
        write_head_hint(be, reached.head)  # never lowers it: a commit may have landed since
    report.removed = [p for p, _ in doomed]
    report.bytes_freed = sum(s for _, s in doomed)
    return report


class _Reached:
    """What the kept commits reach: canonical shards are kept if their array is used by a
    kept commit and it commits them. It grows as gc finds commits made while it runs, since
    such a commit can reach an object the listing judged unreachable (a writer adopted it)."""

    def __init__(self, t, snaps):
        self.t, self.head = t, t.version
        self.keep: set[str] = {"zarr.json", "log/head", EXPIRED_KEY}
        self.shard_limit: dict[str, int] = {}
        _reach(t, snaps, self.keep, self.shard_limit)

    def __contains__(self, path: str) -> bool:
        return _reachable(path, self.keep, self.shard_limit, self.t.geo)

    def advance(self, newest: int) -> None:
        """Add what the commits after the newest one seen, up to ``newest``, reach."""
        if newest > self.head:
            _reach(self.t, self.t.records(self.head + 1, newest), self.keep, self.shard_limit)
            self.head = newest

    def reached_now(self, paths: list[str]) -> set[str]:
        """Of ``paths``, those a commit made since gc last found the head reaches."""
        self.advance(find_head(self.t.backend, self.head))
        return {p for p in paths if p in self}


def _forced_deletes(t, doomed_versions: set[int], purge_below: int):
    """Whether an unreachable path goes whatever its age: the record of a version this run
    expires, or (``purge_below``) what only purged versions reach."""
    purged: set[str] = set()
    purged_limit: dict[str, int] = {}
    if purge_below:
        _reach(t, _surviving_records(t, purge_below), purged, purged_limit)

    def forced(path: str) -> bool:
        if path.startswith("log/") and _log_version(path) in doomed_versions:
            return True
        return bool(purge_below) and _purged(path, purged, purged_limit, t.geo, purge_below)

    return forced


def _unreached(be, reached: _Reached, forced, grace: float, report: GCReport):
    """The (path, size) of every object no commit reaches that is past the grace (or
    forced). Telemetry is never doomed here: merging it is what removes it. Commits made
    while the tree was listed reach objects the listing judged unreachable, so the head is
    found again after it; the listing is also evidence of lost records."""
    now = time.time()
    doomed: list[tuple[str, int]] = []
    listed: list[str] = []
    for path, size, mtime in be.walk(""):
        listed.append(path)
        if path in reached:
            report.reachable += 1
        elif path.startswith("telemetry/"):
            continue
        elif not forced(path) and _young(mtime, now, grace):
            report.kept_young.append(path)
        else:
            doomed.append((path, size))
    newest = find_head(be, reached.head)
    _check_no_lost_records(be, newest, listed)
    reached.advance(newest)
    still = [(p, n) for p, n in doomed if p not in reached]
    report.reachable += len(doomed) - len(still)
    return still


def _merge_telemetry(be, report: GCReport) -> None:
    merged = merge_telemetry(be)
    report.telemetry_merged, report.telemetry_deferred = merged.merged, merged.deferred
    report.notes += merged.notes


def _record_expiry(be, old, expired: list[int], keep_last, keep_since) -> None:
    """Record the versions retention expires. This comes before any record goes: a crash in
    between leaves records that read as expired, never a gap that reads as damage."""
    why = ", ".join(
        f"{k}={v:g}" for k, v in (("keep_last", keep_last), ("keep_since", keep_since)) if v
    )
    write_expired(be, old.union(expired, f"retention {why}"))


def check_gc_args(url, grace, keep_last, keep_since, no_live_writers) -> None:
    """InvalidArgument for a grace or retention that is not a plain number in range. NaN
    compares false with everything, so ``nan < MIN_GRACE`` would let it past the floor and
    then make every unreachable object look old: each is checked to be finite first."""
    for name, v in (("grace", grace), ("keep_since", keep_since)):
        if v is None and name == "keep_since":
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise InvalidArgument(f"{url}: {name} must be a finite number of seconds, not {v!r}")
        if v < 0:
            raise InvalidArgument(f"{url}: {name} must be positive, not {v:g}")
    if keep_last is not None and (
        isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1
    ):
        raise InvalidArgument(f"{url}: keep_last must be a whole number >= 1, not {keep_last!r}")
    if grace < MIN_GRACE and not no_live_writers:
        raise InvalidArgument(
            f"{url}: a grace of {grace:g} s could delete the data of a commit that a live "
            f"writer is making; use at least {MIN_GRACE:g} s, or say that no writer is live"
        )


def _reach(t, snaps, keep: set[str], shard_limit: dict[str, int]) -> None:
    """Add what the commits ``snaps`` reach to ``keep`` and ``shard_limit``."""
    for s in snaps:
        keep |= s.references()
        if s.rec.get("objects"):
            m, layers = t.object_map_keys(s.rec["objects"])
            keep.update(ent["path"] for ent in m.values())
            keep.update(layers)
        for name in s.extent.arrays(t.geo.block):
            shard_limit[name] = max(shard_limit.get(name, 0), t.geo.shards(name, s.extent))


def _young(mtime: float | None, now: float, grace: float) -> bool:
    """Within the grace; a time that is not a number (a storage's garbage) counts as young."""
    return mtime is not None and (not math.isfinite(mtime) or now - mtime < grace)


DELETE_BATCH = 64  # objects looked at again, then deleted, per round


ADOPTABLE = ("arrays/", "meta/", "index/")  # what a writer can take over with its bytes as is


def _delete_old(be, doomed, grace, expired_paths, report, reached_now) -> list[tuple[str, int]]:
    """Delete ``doomed`` objects, each looked at again just before: one that is gone is
    skipped, one re-stamped since the listing (a writer adopted it) is kept young. Expired
    records go whatever their time. Batches keep the look and the delete close together.

    The look and the delete are not atomic: a writer can re-stamp an object, commit and check
    that it is there, all between them. So gc reads the bytes of every object a writer could
    adopt before deleting it, and after each batch's delete finds the head again: what a commit
    made meanwhile reaches is written back (a writer that checked before the delete finds it
    there again; one that checks after writes it back itself). -> what stayed deleted."""
    out: list[tuple[str, int]] = []
    for i in range(0, len(doomed), DELETE_BATCH):
        batch = doomed[i : i + DELETE_BATCH]
        times = concurrently(be, _mtime_or_gone, [be] * len(batch), [p for p, _ in batch])
        now = time.time()
        go = []
        for (p, size), m in zip(batch, times, strict=True):
            if m is _GONE:
                continue
            if p not in expired_paths and _young(m, now, grace):
                report.kept_young.append(p)
                continue
            go.append((p, size))
        adoptable = [p for p, _ in go if p.startswith(ADOPTABLE)]
        held = dict(zip(adoptable, concurrently(be, _read_or_gone, [be] * len(adoptable),
                                                 adoptable), strict=True))  # fmt: skip
        be.delete([p for p, _ in go])
        back = reached_now([p for p, data in held.items() if data is not _GONE])
        for p in sorted(back):
            be.write(p, held[p])
        report.restored += sorted(back)
        out += [(p, size) for p, size in go if p not in back]
    return out


def _read_or_gone(be, path: str):
    try:
        return be.read(path)
    except FileNotFoundError:
        return _GONE


_GONE = object()


def _mtime_or_gone(be, path: str):
    try:
        return be.mtime(path)
    except FileNotFoundError:
        return _GONE


_VERSIONED = re.compile(r"^(?:tail/|stage/|redact/)(\d{20})-")


def _surviving_records(t, below: int) -> list:
    """The records of versions below ``below`` still there (a purge deletes them last)."""
    be = t.backend
    got = be.read_many([F.log_key(v) for v in range(1, below)])  # batched, concurrent on S3
    return [
        Snapshot(parse_record(be, v, got[F.log_key(v)]))
        for v in range(1, below)
        if got[F.log_key(v)] is not None
    ]


def _purged(path: str, reach: set[str], limit: dict[str, int], geo, below: int) -> bool:
    """Whether an unreachable ``path`` holds bytes of a version a purge expired: a record,
    what such a record reaches, or a writer's debris for such a version."""
    if path.startswith("log/") and (_log_version(path) or below) < below:
        return True
    m = _VERSIONED.match(path)
    if m and int(m.group(1)) < below:
        return True
    return _reachable(path, reach, limit, geo)


def _check_no_lost_records(be, newest: int, listed: list[str]) -> None:
    """CorruptTree if the listing holds a trace of a commit on top of a version past the
    newest record. A writer writes version m's delta or staged shards only after it read
    record m-1 (or committed it), so such an object for m >= newest + 2 proves record m-1
    existed and is gone (the newest records were lost). Version newest + 1 proves nothing: a
    crashed or live writer leaves exactly that. gc would otherwise delete the evidence as
    debris, and the next append would take the lost version's number."""
    for p in listed:
        m = _VERSIONED.match(p)
        if m and int(m.group(1)) >= newest + 2:
            raise CorruptTree(
                f"{be.url}: {p} was written on top of version {int(m.group(1)) - 1}, but the "
                f"newest commit record is version {newest}: commit records were lost; restore "
                "the log from a copy (gc deleted nothing)"
            )


def _log_version(path: str) -> int | None:
    name = path.rsplit("/", 1)[-1]
    return int(name[:-5]) if LOG_NAME.match(name) else None


def _to_expire(t, snaps, keep_last, keep_since) -> set[int]:
    """Versions the retention policy removes: old enough on every given count, and not the
    head, a tagged or pinned version, or a record some kept version's tail chain needs."""
    if keep_last is None and keep_since is None:
        return set()
    head = t.version
    cutoff = time.time_ns() - int((keep_since or 0) * 1e9)
    protected = {head, *t.tags().values(), *fork_pins(t.backend)}
    candidates = {
        s.version
        for s in snaps
        if (keep_last is None or s.version <= head - keep_last)
        and (keep_since is None or s.rec["time"] < cutoff)
        and s.version not in protected
    }
    by_version = {s.version: s for s in snaps}
    for s in snaps:  # a kept version written before chains needs its chain's records
        if s.version not in candidates and "chain" not in s.rec:
            candidates -= set(range(s.tail_from, s.version + 1))
    return {v for v in candidates if v in by_version}


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


def destroy(url: str, *, storage_options: dict | None = None) -> None:
    """Delete a whole tree: every object below ``url``, the folder too on local disk.

    Only a tree is deleted (its root must read as one), so a mistyped path never removes a
    user's files; a tree's forks lose the shards they share with it."""
    be = open_backend(url, storage_options)
    read_facts(be)  # TreeNotFound / CorruptTree: nothing is deleted
    be.remove_all()


def verify(
    url: str,
    *,
    storage_options: dict | None = None,
    version=None,
    allow_bases: list[str] | None = None,
) -> dict:
    """Check everything a version references: every commit record up to it (present unless
    expired, intact), every row of every array (checksums included), each shard's size and
    each array's zarr.json against the geometry, the segments, the binding and object-map
    blobs (their content against the hash in their names), every named object, and the tags.
    CorruptTree on damage."""
    t = open_tree(
        url,
        "r",
        version=version,
        storage_options=storage_options,
        cache_bytes=0,
        allow_bases=allow_bases,
    )
    expired = t.expired()
    snaps = t.records(skip=expired)  # each read, parsed and checked; a gap raises
    ext = t.snapshot.extent
    shards = _verify_shards(t)
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
    blobs = {k for s in snaps for k in (s.rec.get("binding"), s.rec.get("objects")) if k}
    for key in sorted(blobs):
        if key.startswith("meta/objects"):
            blobs |= set(t.object_map_keys(key)[1])
        else:
            t.blob(key)
    for key in sorted(blobs):
        _verify_content_name(t, key)
    for name, ent in t.objects_map().items():
        if ent.get("path") != f"index/{ent.get('sha256')}.bin":
            raise damaged(
                t.url, str(ent.get("path")), f"(object {name!r}) is not named by its hash"
            )
        t.read_object(name)
    tags = t.tags()
    return {
        "url": t.url,
        "version": t.version,
        "rows": n,
        "shards": shards,
        "records": len(snaps),
        "expired": expired.count(),
        "objects": len(t.objects()),
        "tags": len(tags),
    }


def _verify_shards(t) -> int:
    """Every complete shard the version uses is there with exactly the bytes its encoding
    has (a shard with bytes past its index reads fine here but not in zarr, which finds the
    index at the end), and each array's zarr.json where its shards are is the one the
    geometry implies. -> shards checked. Sizes come from one listing per tree (no reads)."""
    ext = t.snapshot.extent
    listed: dict[str, dict[str, int]] = {}

    def sizes(be, prefix: str) -> dict[str, int]:
        key = f"{be.url}\0{prefix}"
        if key not in listed:
            listed[key] = {p: s for p, s, _ in be.walk(prefix)}
        return listed[key]

    n = 0
    for name in ext.arrays(t.block):
        spec = t.geo.spec(name)
        homes = {}
        for k in range(t.geo.shards(name, ext)):
            be, key = t.shard_location(name, k)
            size = sizes(be, key.split("/", 1)[0]).get(key)
            if size is None:
                raise damaged(be.url, key, "is missing but a commit references it")
            if size != spec.shard_nbytes:
                raise damaged(
                    be.url,
                    key,
                    f"is {size} bytes where a complete shard of {name} has {spec.shard_nbytes}",
                )
            hb, _ = t.shard_location(name, k, override=False)
            homes[hb.url] = hb
            n += 1
        want = json.loads(F.array_metadata(t.geo, name))
        for be in homes.values():
            key = f"arrays/{name}/zarr.json"
            try:
                got = json.loads(be.read(key, limit=2**16))
            except FileNotFoundError:
                raise damaged(be.url, key, "is missing but the array has shards") from None
            except ValueError:
                got = None
            if got != want:
                raise damaged(be.url, key, "does not match the array's geometry")
    return n


def _verify_content_name(t, key: str) -> None:
    """A ``meta/`` blob's name carries a hash of its bytes: bytes edited and re-signed (their
    own checksum recomputed) no longer match it."""
    prefix = key[len("meta/") :].rsplit("-", 1)[0]
    if blob_key(prefix, t.backend.read(key)) != key:
        raise damaged(t.url, key, "does not match the hash in its name (edited and re-signed?)")
