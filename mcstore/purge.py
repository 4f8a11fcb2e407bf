"""Purge: make what a redaction replaced unreadable everywhere in the tree, not only at head.

A redaction (``mcstore.redact``) leaves older versions as they were, because every version is
a snapshot. Purging removes those snapshots and the bytes only they hold:

1. every version older than the newest redaction is expired (``log/expired.json`` first, so a
   crash leaves versions that read as expired, never a gap that reads as damage), and the
   tags that name such versions are deleted (only when the caller allows it: a tag is a
   promise to keep a version);
2. the canonical copy of every shard a redaction rewrote is deleted: the versions that are
   kept read the rewritten copy the ``redact`` map names, so nothing kept reads it;
3. ``gc(purge_below=…)`` deletes, whatever their age, the tail deltas, staged shards, index
   chunks, object maps and records that only the expired versions reach, records last.

Each step is idempotent, so a purge killed anywhere is finished by running it again. A fork
made before the redaction reads this tree's old shards: the purge refuses and names it (purge
or delete the fork first). Forks made after it read copies of the redacted shards. What the
tree cannot reach (copies a user made, backups, a base tree this one was forked from) it
cannot purge; the report says where the base trees are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .backend import concurrently, open_backend
from .entry import open as open_tree
from .errors import PurgeRefused
from .ops import GCReport, check_gc_args, gc
from .records import delete_tag, fork_pin_entries, write_expired


@dataclass
class PurgeReport:
    url: str
    redacted_at: int = 0  # the newest redaction: every version before it is expired
    expired: list[int] = field(default_factory=list)  # versions this purge expired
    tags_dropped: dict[str, int] = field(default_factory=dict)
    shards_deleted: list[str] = field(default_factory=list)  # canonical copies replaced
    gc: GCReport | None = None
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict:
        return {
            "url": self.url,
            "redacted_at": self.redacted_at,
            "expired_versions": len(self.expired),
            "tags_dropped": sorted(self.tags_dropped),
            "shards_deleted": len(self.shards_deleted),
            "removed": len(self.gc.removed) if self.gc else 0,
            "bytes_freed": self.gc.bytes_freed if self.gc else 0,
            "kept_young": len(self.gc.kept_young) if self.gc else 0,
            "dry_run": self.dry_run,
            "notes": list(self.notes),
        }


def purge(
    url,
    *,
    storage_options: dict | None = None,
    drop_tags: bool = False,
    dry_run: bool = False,
    grace: float = 3600.0,
    no_live_writers: bool = False,
) -> PurgeReport:
    """Expire every version that still holds what a redaction replaced and delete every
    object only those versions reach (see the module docstring). ``drop_tags``: delete the
    tags naming such versions (refused otherwise, naming them); ``grace`` and
    ``no_live_writers`` as in ``gc`` for unreachable objects no purged version reaches.
    ``url``: a tree URL or a ``Backend``."""
    check_gc_args(url, grace, None, None, no_live_writers)
    with open_tree(url, "a", storage_options=storage_options) as t:  # closed on refusals too
        return _purge(t, url, storage_options, drop_tags, dry_run, grace, no_live_writers)


def _purge(t, url, storage_options, drop_tags, dry_run, grace, no_live_writers) -> PurgeReport:
    """``purge`` on the open tree ``t`` (``url`` as the caller gave it, for gc)."""
    be = t.backend
    snap = t.snapshot
    report = PurgeReport(url=t.url, redacted_at=snap.redacted, dry_run=dry_run)
    if not snap.redacted:
        report.notes.append("nothing was forgotten in this tree: nothing to purge")
        return report
    below = snap.redacted
    old = t.expired()
    report.expired = [v for v in range(1, below) if v not in old]
    _refuse_old_forks(t, below, storage_options)
    report.tags_dropped = _tags_to_drop(t, below, drop_tags)
    canonical = _replaced_shards(t, report)
    there = concurrently(be, be.exists, canonical) if canonical else []
    report.shards_deleted = [p for p, ok in zip(canonical, there, strict=True) if ok]
    if dry_run:
        return report
    if report.expired:
        write_expired(be, old.union(report.expired, f"purge of what was forgotten ({below})"))
    for name in report.tags_dropped:
        delete_tag(be, name)
    if report.shards_deleted:
        be.delete(report.shards_deleted)
    report.gc = gc(
        url,
        storage_options=storage_options,
        grace=grace,
        no_live_writers=no_live_writers,
        purge_below=below,
    )
    report.notes += report.gc.notes
    return report


def _refuse_old_forks(t, below: int, storage_options: dict | None) -> None:
    """PurgeRefused if a fork made before the redaction reads its old shards. The pin of a
    fork that was deleted since protects nothing and is passed over."""
    forks = sorted(
        (u, v)
        for u, v in fork_pin_entries(t.backend)
        if v < below and _still_there(u, storage_options)
    )
    if forks:
        names = ", ".join(f"{u} (from version {v})" for u, v in forks)
        raise PurgeRefused(
            f"{t.url}: forks made before the redaction read its old shards: {names}; "
            "forget and purge there, or delete those forks (their folder or prefix, or "
            "mcstore.destroy), then purge again"
        )


def _still_there(url: str, storage_options: dict | None) -> bool:
    """Whether a tree is at ``url``; one that cannot be looked at counts as there."""
    try:
        return open_backend(url, storage_options).exists("zarr.json")
    except Exception:
        return True


def _tags_to_drop(t, below: int, drop_tags: bool) -> dict[str, int]:
    """The tags naming versions the purge expires; PurgeRefused unless ``drop_tags``."""
    tags = {n: v for n, v in sorted(t.tags().items()) if v < below}
    if tags and not drop_tags:
        names = ", ".join(f"{n} (version {v})" for n, v in tags.items())
        raise PurgeRefused(
            f"{t.url}: purging expires tagged versions {names}, which hold what was "
            "forgotten; allow dropping those tags (mc: --drop-tags) to purge"
        )
    return tags


def _replaced_shards(t, report: PurgeReport) -> list[str]:
    """The canonical paths, in this tree, of the shards a redaction replaced. Those a fork
    reads from its base are not ours to delete: a note names the base instead."""
    canonical, bases = [], set()
    for key in sorted(t.snapshot.redact):
        name, _, k = key.rpartition("/")
        home, path = t.shard_location(name, int(k), override=False)
        if home is t.backend:
            canonical.append(path)
        else:
            bases.add(home.url)
    for home in sorted(bases):
        report.notes.append(
            f"what was forgotten also lies in {home}, the tree this one was forked from: "
            "forget and purge it there"
        )
    return canonical
