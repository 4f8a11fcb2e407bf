"""Small JSON under ``meta/`` (bindings, object maps) and the named objects commits carry.

Both are content-addressed: the key is a hash of the bytes, so an object is written once and
never changes, a handle may cache every one it has read, and two commits that carry the same
bytes share one object. Named objects (``index/<sha256>.bin``, e.g. vector index files) are
opaque to the store; a commit names them through an object map ``name -> path, size,
sha256``, itself a ``meta/objects-*`` blob. The binding blob records which tokenizer and
GistNet built the tree, and the table of GistNets that node gist versions index.
"""

from __future__ import annotations

import hashlib

from . import format as F
from .backend import Backend
from .errors import InvalidArgument, damaged


class Blobs:
    """The ``meta/`` blobs of one tree, cached as parsed."""

    def __init__(self, be: Backend):
        self._be = be
        self._cache: dict[str, object] = {}

    @property
    def url(self) -> str:
        return self._be.url

    def read(self, key: str):
        if key in self._cache:
            return self._cache[key]
        try:
            raw = self._be.read(key)
        except FileNotFoundError:
            raise damaged(self._be.url, key, "is missing but a commit references it") from None
        try:
            v = F.decode_blob(raw)
        except ValueError as e:
            raise damaged(self._be.url, key, f"is not intact ({e})") from None
        self._cache[key] = v
        return v

    def read_many(self, keys: list[str]) -> None:
        """Warm the cache with several blobs in one batch (concurrent on object stores)."""
        need = [k for k in keys if k not in self._cache]
        for k, raw in self._be.read_many(need).items():
            if raw is None:
                raise damaged(self._be.url, k, "is missing but a commit references it")
            try:
                self._cache[k] = F.decode_blob(raw)
            except ValueError as e:
                raise damaged(self._be.url, k, f"is not intact ({e})") from None

    def write(self, prefix: str, obj) -> str:
        raw = F.encode_blob(obj)
        key = blob_key(prefix, raw)
        # one already there (same bytes: the name is their hash) may be a crashed writer's,
        # old enough for gc: re-stamped, its age counts from this use
        if not self._be.restamp(key, raw):
            self._be.write(key, raw)
        self._cache[key] = obj
        return key


def blob_key(prefix: str, raw: bytes) -> str:
    """The name of a ``meta/`` blob: its prefix and a hash of its bytes."""
    return f"meta/{prefix}-{hashlib.sha256(raw).hexdigest()[:24]}.json"


def read_named(be: Backend, name: str, ent: dict) -> bytes:
    """The bytes of named object ``name`` (entry ``ent`` of an object map), verified."""
    try:
        raw = be.read(ent["path"])
    except FileNotFoundError:
        raise damaged(be.url, ent["path"], f"(object {name!r}) is missing") from None
    if len(raw) != ent["size"] or hashlib.sha256(raw).hexdigest() != ent["sha256"]:
        raise damaged(be.url, ent["path"], f"(object {name!r}) does not match its checksum")
    return raw


MAP_LAYERS = 8  # object-map blobs a reader joins at most (the newest names the rest)


def resolve_map(blobs: Blobs, key: str | None) -> tuple[dict, list[str]]:
    """(the object map at ``key``, every map blob it was joined from).

    A map blob is either a whole map (name -> entry) or a layer: the names it sets and
    deletes over the layers it lists (oldest first, the first one whole). Committing an
    object then writes only what changed, not the whole map again: a tree whose index adds
    one chunk per epoch would otherwise write maps that grow with every chunk (quadratic)."""
    if not key:
        return {}, []
    top = _checked_map(blobs, key)
    if not _is_layer(top):
        return dict(top), [key]
    keys = [*top["layers"], key]
    blobs.read_many(top["layers"])
    m: dict = {}
    for k in keys:
        b = _checked_map(blobs, k)
        if _is_layer(b):
            m.update(b["set"])
            for name in b["deleted"]:
                m.pop(name, None)
        else:
            m = dict(b)
    return m, keys


def _is_layer(b) -> bool:
    return isinstance(b, dict) and b.get("layer") == 1 and isinstance(b.get("layers"), list)


def _checked_map(blobs: Blobs, key: str):
    """The map blob at ``key``, refused as damage unless it has the shape ``store_named``
    writes: a signed blob can still hold anything its writer put there."""
    b = blobs.read(key)
    why = _map_problem(b)
    if why:
        raise damaged(blobs.url, key, f"is not an object map ({why})")
    return b


def _map_problem(b) -> str | None:
    if not isinstance(b, dict):
        return f"a {type(b).__name__}, not an object"
    if _is_layer(b):
        if not all(isinstance(k, str) and k.startswith("meta/objects") for k in b["layers"]):
            return "a layer names something other than a map blob"
        if not isinstance(b.get("set"), dict) or not isinstance(b.get("deleted"), list):
            return "a layer without its set and deleted names"
        if not all(isinstance(n, str) for n in b["deleted"]):
            return "a deleted name is not a string"
        b = b["set"]
    for name, ent in b.items():
        if not (
            isinstance(ent, dict)
            and isinstance(ent.get("path"), str)
            and isinstance(ent.get("sha256"), str)
            and isinstance(ent.get("size"), int)
            and not isinstance(ent.get("size"), bool)
            and ent["size"] >= 0
        ):
            return f"entry {str(name)[:80]!r} lacks a path, size or sha256"
    return None


def store_named(
    be: Backend, blobs: Blobs, current_key: str | None, objects: dict[str, bytes | None]
) -> str | None:
    """Write the new objects and a map layer over the current map (a whole map every
    ``MAP_LAYERS`` layers); -> the new map's key (None: no objects left).

    ``objects`` adds or replaces by name; a value None deletes that name."""
    current, keys = resolve_map(blobs, current_key)
    m = dict(current)
    for name, data in objects.items():
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"{be.url}: object names must be non-empty strings")
        if data is None:
            m.pop(name, None)
            continue
        data = bytes(data)
        h = hashlib.sha256(data).hexdigest()
        path = f"index/{h}.bin"
        if not be.restamp(path, data):  # as for blobs: an old copy's age restarts now
            be.write(path, data)
        m[name] = {"path": path, "size": len(data), "sha256": h}
    if not m:
        return None
    if not current or len(keys) >= MAP_LAYERS:
        return blobs.write("objects", m)
    layer = {
        "layer": 1,
        "layers": keys,
        "set": {n: e for n, e in m.items() if current.get(n) != e},
        "deleted": sorted(set(current) - set(m)),
    }
    return blobs.write("objects", layer)
