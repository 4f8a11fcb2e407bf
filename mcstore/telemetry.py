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
import time
import uuid

import numpy as np

from . import format as F
from .backend import Backend
from .errors import ReadOnlyError

TELEMETRY_BYTES = 2**30  # a merged telemetry file: counts of every node ever accessed
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


def _scan(be: Backend) -> tuple[list[tuple[str, dict[str, np.ndarray]]], list[str]]:
    """(live files, keys of files a merge already absorbed but gc did not get to delete)."""
    names = [n for n in be.listdir("telemetry") if n.endswith(".npz")]
    got = be.read_many([f"telemetry/{n}" for n in names])
    parts = []
    merged: set[str] = set()
    for k, raw in got.items():
        if raw is None:
            continue
        try:
            d = F.load_npz(raw, max_bytes=TELEMETRY_BYTES)
        except Exception:
            continue  # telemetry is advisory: a torn or foreign file is ignored
        if "merged" in d:
            merged |= set(str(x) for x in d["merged"])
        parts.append((k, d))
    live = [(k, d) for k, d in parts if k.rsplit("/", 1)[-1] not in merged]
    return live, [k for k, _ in parts if k.rsplit("/", 1)[-1] in merged]


def read_telemetry(be: Backend) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(key, arrays) of every readable telemetry file not already absorbed by a merge."""
    return _scan(be)[0]


def merge_files(be: Backend) -> int:
    """Merge every telemetry file into one (written before the parts are deleted).

    The merge lists every name it absorbed, including those its absorbed merges had listed:
    parts left behind by a crashed gc then stay hidden after their merge is itself merged, and
    are deleted here."""
    parts, leftovers = _scan(be)
    if len(parts) < 2:
        if leftovers:
            be.delete(leftovers)
        return 0
    acc: dict[int, tuple[dict[int, int], dict[int, int]]] = {}
    for _, d in parts:
        for k in d:
            if not k.endswith("_idx"):
                continue
            lv = int(k[1:-4])
            cnt, last = acc.setdefault(lv, ({}, {}))
            for i, c, t in zip(d[k], d[f"l{lv}_cnt"], d[f"l{lv}_last"], strict=True):
                cnt[int(i)] = cnt.get(int(i), 0) + int(c)
                last[int(i)] = max(last.get(int(i), 0), int(t))
    arrays: dict[str, np.ndarray] = {}
    for lv, (cnt, last) in acc.items():
        idx = np.array(sorted(cnt), np.int64)
        arrays[f"l{lv}_idx"] = idx
        arrays[f"l{lv}_cnt"] = np.array([cnt[i] for i in idx], np.int64)
        arrays[f"l{lv}_last"] = np.array([last[i] for i in idx], np.int64)
    names = [k.rsplit("/", 1)[-1] for k, _ in parts]
    names += [str(x) for _, d in parts for x in d.get("merged", ())]
    arrays["merged"] = np.array(names, dtype="U64")
    bio = io.BytesIO()
    np.savez(bio, **arrays)
    be.write(f"telemetry/compact-{uuid.uuid4().hex[:12]}.npz", bio.getvalue())
    be.delete([k for k, _ in parts] + leftovers)
    return len(parts)
