"""Access telemetry: how often and how recently each node was read, across sessions.

Counts are advisory and never part of a commit: a handle buffers accesses in memory and
writes them as one small ``telemetry/<writer>-<seq>.npz`` per flush, named by a random writer
id so concurrent sessions never collide. ``gc`` merges the files into one; a merged file
lists the names it absorbed, so a reader that sees both the parts and the merge (gc crashed
between writing and deleting) counts each access once. A torn or foreign file is skipped.
"""

from __future__ import annotations

import contextlib
import io
import re
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from . import format as F
from .backend import Backend
from .errors import ReadOnlyError

TELEMETRY_BYTES = 2**30  # a merged telemetry file: counts of every node ever accessed
# what one gc merges at most (files, and bytes stored or inflated over all of them); the rest
# wait for the next gc
MERGE_FILES = 256
MERGE_BYTES = 2**28
# what a reader of access counts reads at most; files beyond are left out (counts are advisory)
READ_FILES = 1024
READ_BYTES = 2**29
FLUSH_EVERY = 1_000_000  # buffered accesses that trigger a flush (when writes are on)


class Telemetry:
    """One handle's buffer of node accesses and its flushes."""

    def __init__(self, be: Backend, enabled: bool):
        self._be = be
        self.enabled = enabled
        self._buf: list[tuple[int, np.ndarray, int]] = []  # (level, indices, time ns)
        self._n = 0
        self._seq = 0
        self._writer_id = uuid.uuid4().hex[:12]

    def record(self, level: int, indices) -> None:
        arr = np.asarray(indices, dtype=np.int64).reshape(-1)
        if not arr.size:
            return
        self._buf.append((int(level), arr, time.time_ns()))
        self._n += arr.size
        if self._n >= FLUSH_EVERY and self.enabled:
            with contextlib.suppress(Exception):
                self.flush()

    def flush(self) -> str | None:
        if not self.enabled:
            raise ReadOnlyError(
                f"{self._be.url}: telemetry writes are off for this handle (read-only open); "
                "pass telemetry=True to open() to enable them"
            )
        buf, self._buf, self._n = self._buf, [], 0
        if not buf:
            return None
        bio = io.BytesIO()
        np.savez(bio, **summarize(buf))
        self._seq += 1
        key = f"telemetry/{self._writer_id}-{self._seq:06d}.npz"
        self._be.write(key, bio.getvalue())
        return key

    def close(self) -> None:
        if self.enabled and self._buf:
            with contextlib.suppress(Exception):  # telemetry must never endanger anything
                self.flush()

    def stats(self, level: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(counts, last access ns) for nodes [0, n) of ``level``: flushed by anyone, plus
        this handle's buffer."""
        counts = np.zeros(n, np.int64)
        last = np.zeros(n, np.int64)
        parts = [summarize(self._buf)] if self._buf else []
        parts += [p for _, p in read_telemetry(self._be)]
        for p in parts:
            i, c, t = p.get(f"l{level}_idx"), p.get(f"l{level}_cnt"), p.get(f"l{level}_last")
            if i is None:
                continue
            keep = (i >= 0) & (i < n)
            np.add.at(counts, i[keep], c[keep])
            np.maximum.at(last, i[keep], t[keep])
        return counts, last


def summarize(buf: list[tuple[int, np.ndarray, int]]) -> dict[str, np.ndarray]:
    """Per level: the distinct node indices, their counts and their last access time."""
    out: dict[str, np.ndarray] = {}
    by_level: dict[int, list[tuple[np.ndarray, int]]] = {}
    for lv, arr, t in buf:
        by_level.setdefault(lv, []).append((arr, t))
    for lv, items in by_level.items():
        idx = np.concatenate([a for a, _ in items])
        ts = np.concatenate([np.full(a.size, t, np.int64) for a, t in items])
        u, inv = np.unique(idx, return_inverse=True)
        cnt = np.bincount(inv, minlength=u.size).astype(np.int64)
        last = np.full(u.size, 0, np.int64)
        np.maximum.at(last, inv, ts)
        out[f"l{lv}_idx"], out[f"l{lv}_cnt"], out[f"l{lv}_last"] = u, cnt, last
    return out


@dataclass
class Scan:
    """What one pass over ``telemetry/`` took in: the live files read, the keys of files a
    merge already absorbed, and the live files left out to stay within the bounds."""

    live: list[tuple[str, dict[str, np.ndarray]]] = field(default_factory=list)
    absorbed: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)


def _scan(be: Backend, max_files: int, max_bytes: int) -> Scan:
    """Read at most ``max_files`` telemetry files and ``max_bytes`` bytes, counted both as
    stored and as inflated (each file's zip directory says how much it inflates to before
    anything is inflated). Merged files come first (they list what they absorbed), then the
    smallest: many small files are merged before one big one. The rest are deferred."""
    listing = [(p, n) for p, n, _ in be.walk("telemetry") if _TELEMETRY.match(p)]
    listing.sort(key=lambda x: (not x[0].startswith("telemetry/compact-"), x[1], x[0]))
    out = Scan()
    chosen, stored = [], 0
    for p, n in listing:
        if len(chosen) < max_files and stored + n <= max_bytes:
            chosen.append(p)
            stored += n
        else:
            out.deferred.append(p)
    got = be.read_many(chosen)
    parts = []
    merged: set[str] = set()
    inflated = 0
    for k in chosen:
        raw = got.get(k)
        if raw is None:
            continue
        try:
            size = sum(n for _, n in F.npz_members(raw))
            if inflated + size > max_bytes:
                out.deferred.append(k)
                continue
            d = _checked(F.load_npz(raw, max_bytes=TELEMETRY_BYTES))
        except Exception:
            continue  # telemetry is advisory: a torn or foreign file is ignored
        inflated += size
        if "merged" in d:
            merged |= set(str(x) for x in d["merged"])
        parts.append((k, d))
    out.live = [(k, d) for k, d in parts if k.rsplit("/", 1)[-1] not in merged]
    out.absorbed = [k for k, _ in parts if k.rsplit("/", 1)[-1] in merged]
    return out


_TELEMETRY = re.compile(r"^telemetry/[A-Za-z0-9_-]{1,64}\.npz$")
_LEVEL_KEY = re.compile(r"^l(\d{1,2})_(idx|cnt|last)$")


def _checked(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of a telemetry file, ValueError if they are not ones ``summarize`` or a
    merge writes: per level three 1-D integer columns of one length, indices >= 0."""
    levels = {int(m.group(1)) for k in d if (m := _LEVEL_KEY.match(k))}
    for lv in levels:
        cols = [d.get(f"l{lv}_{c}") for c in ("idx", "cnt", "last")]
        if any(c is None or c.ndim != 1 or c.dtype.kind not in "iu" for c in cols):
            raise ValueError(f"level {lv} columns")
        if len({len(c) for c in cols}) != 1 or (len(cols[0]) and cols[0].min() < 0):
            raise ValueError(f"level {lv} columns")
    if set(d) - {k for k in d if _LEVEL_KEY.match(k)} - {"merged"}:
        raise ValueError("foreign arrays")
    if "merged" in d and (d["merged"].ndim != 1 or d["merged"].dtype.kind != "U"):
        raise ValueError("merged list")
    return d


def read_telemetry(be: Backend) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(key, arrays) of every readable telemetry file not already absorbed by a merge, within
    ``READ_FILES`` / ``READ_BYTES`` (beyond them, files are left out: counts are advisory)."""
    return _scan(be, READ_FILES, READ_BYTES).live


@dataclass
class Merge:
    merged: int = 0  # files merged into one
    deferred: int = 0  # live files left for a later merge (over the bounds of one)
    notes: list[str] = field(default_factory=list)


def merge_files(be: Backend) -> int:
    """Merge telemetry files into one (see :func:`merge_telemetry`); -> files merged."""
    return merge_telemetry(be).merged


def merge_telemetry(be: Backend) -> Merge:
    """Merge telemetry files into one (written before the parts are deleted), at most
    ``MERGE_FILES`` files and ``MERGE_BYTES`` bytes a run: files within the per-file limit can
    still add up to gigabytes, so the rest are deferred to the next gc, with a note.

    The merge lists every name it absorbed, including those its absorbed merges had listed:
    parts left behind by a crashed gc then stay hidden after their merge is itself merged, and
    are deleted here."""
    scan = _scan(be, MERGE_FILES, MERGE_BYTES)
    parts, leftovers = scan.live, scan.absorbed
    out = Merge(deferred=len(scan.deferred))
    if scan.deferred:
        out.notes.append(
            f"telemetry: {len(scan.deferred)} files not merged this run (one gc merges at most "
            f"{MERGE_FILES} files and {MERGE_BYTES} bytes); the next gc continues"
        )
    if len(parts) < 2:
        if leftovers:
            be.delete(leftovers)
        return out
    arrays: dict[str, np.ndarray] = {}
    levels = sorted({int(m.group(1)) for _, d in parts for k in d if (m := _LEVEL_KEY.match(k))})
    for lv in levels:
        cols = [
            [d[f"l{lv}_{c}"] for _, d in parts if f"l{lv}_idx" in d] for c in ("idx", "cnt", "last")
        ]
        idx, cnt, last = (np.concatenate(c).astype(np.int64) for c in cols)
        u, inv = np.unique(idx, return_inverse=True)
        c = np.zeros(u.size, np.int64)
        np.add.at(c, inv, cnt)
        t = np.zeros(u.size, np.int64)
        np.maximum.at(t, inv, last)
        arrays[f"l{lv}_idx"], arrays[f"l{lv}_cnt"], arrays[f"l{lv}_last"] = u, c, t
    # the names absorbed, as far as they still exist: these parts, and earlier parts a crashed
    # gc left (the list would otherwise grow with every file ever merged)
    names = [k.rsplit("/", 1)[-1] for k, _ in parts]
    names += [k.rsplit("/", 1)[-1] for k in scan.absorbed + scan.deferred]
    listed = set(names[len(parts) :])
    names[len(parts) :] = [
        n for _, d in parts for x in d.get("merged", ()) if (n := str(x)) in listed
    ]
    arrays["merged"] = np.array(sorted(set(names)), dtype="U64")
    bio = io.BytesIO()
    np.savez(bio, **arrays)
    be.write(f"telemetry/compact-{uuid.uuid4().hex[:12]}.npz", bio.getvalue())
    be.delete([k for k, _ in parts] + leftovers)
    out.merged = len(parts)
    return out
