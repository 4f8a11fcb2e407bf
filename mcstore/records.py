"""The commit log: records, the head, tags.

A version exists once its record ``log/<n>.json`` does; records are written put-if-absent, so
two writers racing for version n cannot both win, and a record is never rewritten, so a
handle may cache every record it has read. Versions are dense (1, 2, 3, ...), which lets the
head be found from a hint with O(log n) existence probes instead of a listing.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import dataclass

from . import format as F
from .backend import Backend
from .errors import (
    CommitConflict,
    CorruptTree,
    InvalidArgument,
    TreeExists,
    VersionNotFound,
    damaged,
)

TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class LogEntry:
    version: int
    time: int
    message: str | None
    length: int
    parent: int


@dataclass
class Snapshot:
    """One commit record, read as the state of the tree at that version."""

    rec: dict

    @property
    def version(self) -> int:
        return self.rec["version"]

    @property
    def length(self) -> int:
        return self.rec["length"]

    @property
    def nseg(self) -> int:
        return self.rec["nseg"]

    @property
    def nheap(self) -> int:
        return self.rec["nheap"]

    @property
    def gset(self) -> str:
        return self.rec["gset"]

    @property
    def override(self) -> dict[str, str]:
        return self.rec.get("override") or {}

    @property
    def extent(self) -> F.Extent:
        r = self.rec
        return F.Extent(r["length"], r["nseg"], r["nheap"], r["gset"])

    @property
    def tail_from(self) -> int:
        return self.rec["tail_from"]

    def references(self) -> set[str]:
        """Objects this record names directly (itself, its delta, staged shards, the binding
        and object-map blobs); the object map's entries are one level further."""
        r = self.rec
        keys = {F.log_key(self.version)}
        if r.get("delta"):
            keys.add(r["delta"]["path"])
        keys.update(self.override.values())
        keys.update(r[k] for k in ("binding", "objects") if r.get(k))
        return keys


class CommitLog:
    """The records of one tree that this handle has read or written, by version."""

    def __init__(self, be: Backend):
        self._be = be
        self._recs: dict[int, dict] = {}

    def remember(self, rec: dict) -> None:
        self._recs[rec["version"]] = rec

    def record(self, version: int) -> dict:
        rec = self._recs.get(version)
        if rec is None:
            rec = read_record(self._be, version)
            self._recs[version] = rec
        return rec

    def records(self, versions: list[int]) -> list[dict]:
        need = [v for v in versions if v not in self._recs]
        if need:
            got = self._be.read_many([F.log_key(v) for v in need])
            for v in need:
                raw = got[F.log_key(v)]
                if raw is None:
                    raise damaged(
                        self._be.url, F.log_key(v), "is missing (commits are never deleted)"
                    )
                self._recs[v] = parse_record(self._be, v, raw)
        return [self._recs[v] for v in versions]

    def check_free(self, version: int) -> None:
        """CommitConflict if ``version`` is taken (a cheap early check; the put decides)."""
        if self._be.exists(F.log_key(version)):
            raise CommitConflict(
                f"{self._be.url}: version {version} was committed by another writer while this "
                f"handle is at {version - 1}; nothing was written: call refresh() and retry"
            )

    def put(self, rec: dict) -> dict:
        """Commit ``rec`` (put-if-absent) and return it as a reader will parse it."""
        version = rec["version"]
        if not self._be.put_if_absent(F.log_key(version), F.encode_record(rec)):
            raise CommitConflict(
                f"{self._be.url}: another writer committed version {version} first; this append "
                "was not committed (nothing lost): call refresh() and retry"
            )
        rec = json.loads(F.encode_record(rec))
        rec.pop("crc")
        self._recs[version] = rec
        return rec


def parse_record(be: Backend, version: int, raw: bytes) -> dict:
    try:
        rec = F.decode_record(raw)
    except ValueError as e:
        raise CorruptTree(
            f"{be.url}: commit record {F.log_key(version)} is not intact ({e}); the tree cannot "
            "be read at or after that version: restore the object from a copy"
        ) from None
    if rec.get("version") != version:
        raise CorruptTree(f"{be.url}: commit record {F.log_key(version)} names another version")
    return rec


def read_record(be: Backend, version: int) -> dict:
    try:
        raw = be.read(F.log_key(version))
    except FileNotFoundError:
        raise VersionNotFound(f"{be.url}: no version {version}") from None
    return parse_record(be, version, raw)


def write_head_hint(be: Backend, version: int) -> None:
    with contextlib.suppress(Exception):  # only a hint
        be.write("log/head", str(version).encode(), durable=False)


def find_head(be: Backend, known: int = 0) -> int:
    """Newest commit number, with O(log) existence probes from a hint (commits are dense)."""
    lo = known
    if lo <= 0:
        try:
            hint = int(be.read("log/head").decode().strip())
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            hint = 0
        if hint > 0 and be.exists(F.log_key(hint)):
            lo = hint
        elif be.exists(F.log_key(1)):
            lo = 1
        else:
            return 0
    step = 1
    while be.exists(F.log_key(lo + step)):
        lo += step
        step *= 2
    hi = lo + step  # absent
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if be.exists(F.log_key(mid)):
            lo = mid
        else:
            hi = mid
    return lo


# ---------------------------------------------------------------------- tags
def check_tag_name(url: str, name: str) -> None:
    if not TAG_RE.match(name or ""):
        raise InvalidArgument(f"{url}: bad tag name {name!r}; use letters, digits, '.', '_' or '-'")


def read_tag(be: Backend, name: str) -> int:
    key = f"refs/tags/{name}.json"
    try:
        raw = be.read(key)
    except FileNotFoundError:
        raise VersionNotFound(f"{be.url}: no tag {name!r}") from None
    try:
        return int(F.decode_blob(raw)["version"])
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptTree(f"{be.url}: tag object {key} is not intact ({e}); re-tag it") from None


def write_tag(be: Backend, name: str, version: int, *, force: bool) -> None:
    """Point tag ``name`` at ``version``; an existing tag moves only with ``force``."""
    key = f"refs/tags/{name}.json"
    raw = F.encode_blob({"version": version, "time": time.time_ns()})
    if force:
        be.write(key, raw)
    elif not be.put_if_absent(key, raw):
        old = read_tag(be, name)
        if old != version:
            raise TreeExists(
                f"{be.url}: tag {name!r} already names version {old}; pick another name, "
                "or move the tag (force)"
            )


def list_tags(be: Backend) -> dict[str, int]:
    out = {}
    for n in be.listdir("refs/tags"):
        if n.endswith(".json"):
            out[n[:-5]] = read_tag(be, n[:-5])
    return out
