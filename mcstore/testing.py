"""Wrappers around a backend for tests and benchmarks (zarr's ``LoggingStore`` and
``LatencyStore`` pattern): open a tree on one with ``mcstore.open(wrapper)`` and see or slow
down every request it makes, without patching the store.

    be = LoggingBackend(mcstore.backend_for(url))
    t = mcstore.open(be, "a")
    t.append(...)
    [c for c in be.calls if c.op == "put_if_absent"]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from .backend import Backend


class BackendWrapper(Backend):
    """A backend that forwards every operation to another one (the capability flags too)."""

    def __init__(self, inner: Backend):
        # not Backend.__init__: the wrapper has no filesystem of its own
        self.inner = inner
        self.url = inner.url
        self.storage_options = inner.storage_options
        self.stats = inner.stats
        self.atomic_create = inner.atomic_create
        self.concurrent_io = inner.concurrent_io

    def before(self, op: str, target) -> None:
        """Called before each operation with its name and its first argument."""

    def read(self, rel: str, *, limit: int | None = None) -> bytes:
        self.before("read", rel)
        return self.inner.read(rel, limit=limit)

    def read_range(self, rel: str, start: int, end: int) -> bytes:
        self.before("read_range", rel)
        return self.inner.read_range(rel, start, end)

    def read_ranges(self, reqs: list[tuple[str, int, int]]) -> list[bytes]:
        self.before("read_ranges", [r[0] for r in reqs])
        return self.inner.read_ranges(reqs)

    def read_many(self, rels: list[str]) -> dict[str, bytes | None]:
        self.before("read_many", list(rels))
        return self.inner.read_many(rels)

    def exists(self, rel: str) -> bool:
        self.before("exists", rel)
        return self.inner.exists(rel)

    def listdir(self, rel: str) -> list[str]:
        self.before("listdir", rel)
        return self.inner.listdir(rel)

    def list_after(self, rel: str, after: str) -> list[str]:
        self.before("list_after", rel)
        return self.inner.list_after(rel, after)

    def walk(self, rel: str = "") -> list[tuple[str, int, float | None]]:
        self.before("walk", rel)
        return self.inner.walk(rel)

    def write(self, rel: str, data: bytes, *, durable: bool = True) -> None:
        self.before("write", rel)
        self.inner.write(rel, data, durable=durable)

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        self.before("put_if_absent", rel)
        return self.inner.put_if_absent(rel, data)

    def delete(self, rels: Iterable[str]) -> int:
        rels = list(rels)
        self.before("delete", rels)
        return self.inner.delete(rels)

    def ensure_root(self) -> None:
        self.before("ensure_root", "")
        self.inner.ensure_root()

    def remove_all(self) -> None:
        self.before("remove_all", "")
        self.inner.remove_all()


@dataclass(frozen=True)
class Call:
    op: str
    target: object  # a key, or a list of keys for batched operations


class LoggingBackend(BackendWrapper):
    """Records every operation, in order, in ``calls``."""

    def __init__(self, inner: Backend):
        super().__init__(inner)
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def before(self, op: str, target) -> None:
        with self._lock:
            self.calls.append(Call(op, target))

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()


class LatencyBackend(BackendWrapper):
    """Sleeps ``seconds`` before each request, to model a remote object store (a batched
    operation pays once, as it would with concurrent requests)."""

    def __init__(self, inner: Backend, seconds: float):
        super().__init__(inner)
        self.seconds = float(seconds)

    def before(self, op: str, target) -> None:
        time.sleep(self.seconds)
