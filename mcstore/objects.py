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

    def write(self, prefix: str, obj) -> str:
        raw = F.encode_blob(obj)
        key = f"meta/{prefix}-{hashlib.sha256(raw).hexdigest()[:24]}.json"
        if not self._be.exists(key):
            self._be.write(key, raw)
        self._cache[key] = obj
        return key


def read_named(be: Backend, name: str, ent: dict) -> bytes:
    """The bytes of named object ``name`` (entry ``ent`` of an object map), verified."""
    try:
        raw = be.read(ent["path"])
    except FileNotFoundError:
        raise damaged(be.url, ent["path"], f"(object {name!r}) is missing") from None
    if len(raw) != ent["size"] or hashlib.sha256(raw).hexdigest() != ent["sha256"]:
        raise damaged(be.url, ent["path"], f"(object {name!r}) does not match its checksum")
    return raw


def store_named(
    be: Backend, blobs: Blobs, current: dict, objects: dict[str, bytes | None]
) -> str | None:
    """Write the new objects and the changed map; -> the map's key (None: no objects left).

    ``objects`` adds or replaces by name; a value None deletes that name."""
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
        if not be.exists(path):
            be.write(path, data)
        m[name] = {"path": path, "size": len(data), "sha256": h}
    return blobs.write("objects", m) if m else None
