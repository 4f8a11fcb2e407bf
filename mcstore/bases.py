"""Fork bases: the trees whose complete shards a fork reads in place, and the checks that keep
a crafted root from pointing anywhere else.

A fork's root lists its bases by URL (``mcstore.fork``). Whoever can write a tree can rewrite
that list and the root's checksum, so a base is read only if

1. its URL lies within the tree's own store: the same protocol and bucket (object stores) or
   the same parent folder (local disk), or under a URL the opener allowed
   (``open(..., allow_bases=[...])``, ``mc … -o allow_bases=URL``). This is decided from the
   URLs alone, before any request; and
2. it is the tree the fork recorded: its root has this tree's block, dim, dtype and epoch, its
   tree id is the one recorded, and its commit at the recorded version holds at least the
   recorded shards. Entries written before forks recorded base ids are checked by the pin
   the base holds for the fork (``refs/forks/<id>.json``), or need the allowlist.

Both checks run before a base's first read, so a fork opens, logs and is collected without
touching its bases.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable

from . import format as F
from .backend import Backend, normalize_url, open_backend
from .errors import CorruptTree, InvalidArgument, TreeNotFound, VersionNotFound

Place = tuple[str, str, tuple[str, ...]]  # (protocol, bucket or host, path parts)


def place(url: str, *, resolve: bool = False) -> Place | None:
    """Where a URL points, for comparing; None for what cannot be compared (chained URLs).
    ``resolve``: a local path with its symbolic links followed (stats the path's folders)."""
    url = normalize_url(url)
    if "::" in url:
        return None
    if "://" not in url:
        proto, host, path = "file", "", url
    else:
        proto, rest = url.split("://", 1)
        if proto in ("file", "local"):
            proto, host, path = "file", "", rest or "/"
        else:
            host, _, path = rest.partition("/")
    if proto == "file" and resolve:
        path = os.path.realpath(path)
    parts = tuple(p for p in path.split("/") if p)
    if any(p in (".", "..") for p in parts):
        return None
    return proto.lower(), host.lower() if proto != "file" else "", parts


Root = tuple[Place | None, Place | None]  # a place as written, and with its links followed


def root_of(url: str, *, parent: bool = False) -> Root:
    """``url`` (or, with ``parent``, its folder: local disk only) as a :data:`Root`."""

    def up(p: Place | None) -> Place | None:
        if p is None or not parent:
            return p
        return (p[0], p[1], p[2][:-1]) if p[0] == "file" else (p[0], p[1], ())

    return up(place(url)), up(place(url, resolve=True))


def within(url: str, root: Root) -> bool:
    """Whether ``url`` lies at or below ``root``, as written and with links followed (the
    second look, which stats local folders, only if the first passed)."""
    for resolve, r in ((False, root[0]), (True, root[1])):
        p = place(url, resolve=resolve)
        if p is None or r is None or p[:2] != r[:2] or p[2][: len(r[2])] != r[2]:
            return False
    return True


def home(tree_url: str) -> Root:
    """The part of a store a tree's bases may lie in without an allowlist: its parent folder
    on local disk, its bucket (or host) elsewhere."""
    return root_of(tree_url, parent=True)


def allow_list(allow: Iterable[str] | str | None) -> list[str]:
    """The opener's allowlist: URLs or folders, as a list or one comma-separated string."""
    if allow is None:
        return []
    if isinstance(allow, str):
        allow = allow.split(",")
    out = []
    for a in allow:
        if not isinstance(a, str | os.PathLike) or not str(a).strip():
            raise InvalidArgument(f"allow_bases must list URLs or folders, not {a!r}")
        out.append(normalize_url(str(a).strip()))
    return out


class ForkBases:
    """The bases of one tree handle, each checked once, before its first read."""

    def __init__(self, be: Backend, facts: dict, allow: Iterable[str] = ()):
        self._be = be
        self._facts = facts
        self._entries: list[dict] = list(facts.get("bases", []))
        self._allow = [root_of(a) for a in allow]
        self._lock = threading.RLock()
        self._checked: dict[int, tuple[Backend, dict]] = {}  # index -> (backend, its facts)
        self.readers = [
            (BaseBackend(self, i, e["url"], be.storage_options), dict(e["shards"]))
            for i, e in enumerate(self._entries)
        ]

    def backend(self, i: int) -> Backend:
        return self._check(i)[0]

    def _refuse(self, url: str, why: str, fix: str = "") -> CorruptTree:
        return CorruptTree(
            f"{self._be.url}: fork base {url} {why}; "
            + (fix or "the tree's root is damaged or crafted: restore zarr.json from a copy")
        )

    def _check(self, i: int) -> tuple[Backend, dict]:
        with self._lock:
            if i in self._checked:
                return self._checked[i]
            e = self._entries[i]
            url = normalize_url(e["url"])
            allowed = any(within(url, a) for a in self._allow)
            if url == self._be.url:
                raise self._refuse(url, "is this tree itself")
            if not allowed and not within(url, home(self._be.url)):
                raise self._refuse(
                    url,
                    "lies outside this tree's store (its folder or bucket); nothing was read "
                    "from it",
                    f"if that is the tree this one was forked from, open with "
                    f"allow_bases=['{url}'] (mc: -o allow_bases={url})",
                )
            try:
                be = open_backend(url, self._be.storage_options)
                facts = _base_facts(be)
            except TreeNotFound:
                raise self._refuse(
                    url, "is gone (a fork reads its shards there)", _RESTORE
                ) from None
            except (CorruptTree, InvalidArgument) as err:
                raise self._refuse(url, f"is not a readable tree ({err})") from None
            mine = self._facts
            for k in ("block", "dim", "dtype", "epoch"):
                if facts.get(k) != mine.get(k):
                    raise self._refuse(
                        url, f"has {k} = {facts.get(k)!r}, this tree {mine.get(k)!r}"
                    )
            if "tree_id" in e:
                if facts.get("tree_id") != e["tree_id"]:
                    raise self._refuse(
                        url, "is another tree than the one this tree was forked from"
                    )
            elif not allowed:
                self._check_pin(i, url, be, e)
            self._check_version(url, be, facts, e)
            self._checked[i] = (be, facts)
            return be, facts

    def _check_pin(self, i: int, url: str, be: Backend, e: dict) -> None:
        """An entry from before forks recorded base ids: the base must hold the pin its fork
        left (naming the tree forked from it: the next base, or this tree)."""
        child = self._check(i + 1)[1]["tree_id"] if i + 1 < len(self._entries) else None
        child = child or self._facts["tree_id"]
        try:
            pin = F.decode_blob(be.read(f"refs/forks/{child}.json", limit=2**16))
            ok = pin["version"] == e["version"]
        except FileNotFoundError:
            ok = False
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise self._refuse(
                url,
                "holds no fork pin for this tree (a fork written before base ids were recorded)",
                f"if that is the tree this one was forked from, open with "
                f"allow_bases=['{url}'] (mc: -o allow_bases={url})",
            )

    def _check_version(self, url: str, be: Backend, facts: dict, e: dict) -> None:
        from .records import Snapshot, find_head, read_expired, read_record

        geo = F.Geometry(
            int(facts["block"]), int(facts["dim"]), str(facts["dtype"]), int(facts["epoch"])
        )
        try:
            try:
                rec = read_record(be, e["version"])
            except VersionNotFound:
                if e["version"] not in read_expired(be):
                    raise
                rec = read_record(be, find_head(be))  # shards outlive an expired commit
        except VersionNotFound:
            raise self._refuse(url, f"has no version {e['version']}") from None
        except CorruptTree as err:
            raise self._refuse(url, f"is damaged ({err})") from None
        if rec.get("tree") != facts.get("tree_id"):
            raise self._refuse(url, f"has a commit {rec['version']} of another tree")
        ext = Snapshot(rec).extent
        for name, n in e["shards"].items():
            if geo.shards(name, ext) < n:
                raise self._refuse(
                    url,
                    f"holds {geo.shards(name, ext)} shards of {name} at version "
                    f"{rec['version']}, not the {n} recorded",
                )


_RESTORE = "restore it from a copy (or fork this tree again from a copy of it)"


def _base_facts(be: Backend) -> dict:
    from .entry import read_facts  # entry builds trees, which hold ForkBases

    return read_facts(be)


class BaseBackend:
    """What a handle's shard reader holds for a base: the base's backend, opened and checked
    on the first read through it (``url`` is known without either)."""

    def __init__(self, bases: ForkBases, i: int, url: str, storage_options: dict):
        self._bases = bases
        self._i = i
        self.url = normalize_url(url)
        self.storage_options = storage_options
        self.atomic_create = False
        self.concurrent_io = False

    def _inner(self) -> Backend:
        return self._bases.backend(self._i)

    @property
    def stats(self):
        return self._inner().stats

    def read(self, rel: str, *, limit: int | None = None) -> bytes:
        return self._inner().read(rel, limit=limit)

    def read_range(self, rel: str, start: int, end: int) -> bytes:
        return self._inner().read_range(rel, start, end)

    def read_ranges(self, reqs: list[tuple[str, int, int]]) -> list[bytes]:
        return self._inner().read_ranges(reqs)

    def read_many(self, rels: list[str]) -> dict[str, bytes | None]:
        return self._inner().read_many(rels)

    def exists(self, rel: str) -> bool:
        return self._inner().exists(rel)

    def walk(self, rel: str = "") -> list[tuple[str, int, float | None]]:
        return self._inner().walk(rel)


def check_entries(bases) -> str | None:
    """Why a root's list of fork bases is not one ``fork`` writes (None if it is)."""
    if not isinstance(bases, list) or len(bases) > 64:
        return "fork bases are not a short list"
    for b in bases:
        if not isinstance(b, dict) or not isinstance(b.get("url"), str) or not b["url"]:
            return f"fork base {b!r}"
        if len(b["url"]) > 4096 or (place(b["url"]) is None and "::" not in b["url"]):
            return f"fork base url {b['url'][:80]!r}"
        v = b.get("version")
        if type(v) is not int or not 1 <= v <= 2**48:
            return f"fork base version {v!r}"
        if "tree_id" in b and not isinstance(b["tree_id"], str):
            return f"fork base tree id {b['tree_id']!r}"
        shards = b.get("shards")
        if not isinstance(shards, dict):
            return f"fork base shards {shards!r}"
        for name, n in shards.items():
            if not isinstance(name, str) or not _ARRAY_NAME.match(name):
                return f"fork base array {name!r}"
            if type(n) is not int or not 0 <= n <= 2**40:
                return f"fork base shard count {n!r}"
    return None


_ARRAY_NAME = re.compile(
    r"^(tokens|seg_start|seg_time|seg_end|seg_heap|(gists|gistver|created|flags)_\d{1,2})"
    r"(\.[0-9a-f]{16})?$"
)
