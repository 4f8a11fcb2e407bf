"""Wrappers around a backend for tests and benchmarks (zarr's ``LoggingStore`` and
``LatencyStore`` pattern): open a tree on one with ``mcstore.open(wrapper)`` and see or slow
down every request it makes, without patching the store.

    be = LoggingBackend(mcstore.backend_for(url))
    t = mcstore.open(be, "a")
    t.append(...)
    [c for c in be.calls if c.op == "put_if_absent"]
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator
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

    def after(self, op: str, target) -> None:
        """Called after each operation that returned (not after one that raised)."""

    def forward(self, op: str, target, fn, *args, **kw):
        """``fn(*args, **kw)`` on the inner backend between ``before`` and ``after``."""
        self.before(op, target)
        out = fn(*args, **kw)
        self.after(op, target)
        return out

    def read(self, rel: str, *, limit: int | None = None) -> bytes:
        return self.forward("read", rel, self.inner.read, rel, limit=limit)

    def read_range(self, rel: str, start: int, end: int) -> bytes:
        return self.forward("read_range", rel, self.inner.read_range, rel, start, end)

    def read_ranges(self, reqs: list[tuple[str, int, int]]) -> list[bytes]:
        return self.forward("read_ranges", [r[0] for r in reqs], self.inner.read_ranges, reqs)

    def read_many(self, rels: list[str]) -> dict[str, bytes | None]:
        return self.forward("read_many", list(rels), self.inner.read_many, rels)

    def exists(self, rel: str) -> bool:
        return self.forward("exists", rel, self.inner.exists, rel)

    def listdir(self, rel: str) -> list[str]:
        return self.forward("listdir", rel, self.inner.listdir, rel)

    def list_after(self, rel: str, after: str) -> list[str]:
        return self.forward("list_after", rel, self.inner.list_after, rel, after)

    def walk(self, rel: str = "") -> list[tuple[str, int, float | None]]:
        return self.forward("walk", rel, self.inner.walk, rel)

    def write(self, rel: str, data: bytes, *, durable: bool = True) -> None:
        self.forward("write", rel, self.inner.write, rel, data, durable=durable)

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        return self.forward("put_if_absent", rel, self.inner.put_if_absent, rel, data)

    def restamp(self, rel: str, data: bytes | None = None) -> bool:
        return self.forward("restamp", rel, self.inner.restamp, rel, data)

    def mtime(self, rel: str) -> float | None:
        return self.forward("mtime", rel, self.inner.mtime, rel)

    def delete(self, rels: Iterable[str]) -> int:
        rels = list(rels)
        return self.forward("delete", rels, self.inner.delete, rels)

    def ensure_root(self) -> None:
        self.forward("ensure_root", "", self.inner.ensure_root)

    def remove_all(self) -> None:
        self.forward("remove_all", "", self.inner.remove_all)


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


class GateBackend(BackendWrapper):
    """Holds the first operation that ``when(op, target)`` picks until :meth:`release`:
    before it runs, or after it ran (``after=True``). A test drives a race step by step with
    it (gc paused between its listing and its deletes while a writer commits):

        gate = GateBackend(mcstore.backend_for(url), lambda op, t: op == "walk", after=True)
        threading.Thread(target=mcstore.gc, args=(gate,)).start()
        gate.wait()       # gc has listed the tree and waits
        ...               # another handle commits
        gate.release()    # gc goes on to delete
    """

    def __init__(self, inner: Backend, when, *, after: bool = False):
        super().__init__(inner)
        self.when = when
        self.at_end = after
        self.held = threading.Event()  # an operation waits at the gate
        self.opened = threading.Event()
        self.used = False
        self.lock = threading.Lock()

    def _hold(self, op: str, target) -> None:
        with self.lock:
            if self.used or not self.when(op, target):
                return
            self.used = True
        self.held.set()
        if not self.opened.wait(60):
            raise TimeoutError("GateBackend: nobody released the gate within 60 s")

    def before(self, op: str, target) -> None:
        if not self.at_end:
            self._hold(op, target)

    def after(self, op: str, target) -> None:
        if self.at_end:
            self._hold(op, target)

    def wait(self, timeout: float = 60) -> None:
        """Until an operation waits at the gate (TimeoutError if none comes)."""
        if not self.held.wait(timeout):
            raise TimeoutError("GateBackend: no operation reached the gate")

    def release(self) -> None:
        self.opened.set()


class KillAfter(BackendWrapper):
    """SIGKILLs its own process at the ``n``-th change it makes (a write, a create, a delete,
    a re-stamp), or at its ``n``-th request of any kind (``every_op``), just before it or just
    after it (``after=True``): a crash test walks ``n`` over what an operation does instead of
    hoping a timer lands at each point."""

    CHANGES = frozenset({"write", "put_if_absent", "delete", "restamp", "remove_all"})

    def __init__(self, inner: Backend, n: int, *, after: bool = False, every_op: bool = False):
        super().__init__(inner)
        self.n, self.at_end, self.every_op, self.seen = n, after, every_op, 0

    def _count(self, op: str) -> None:
        if self.every_op or op in self.CHANGES:
            self.seen += 1
            if self.seen == self.n:
                os.kill(os.getpid(), signal.SIGKILL)

    def before(self, op: str, target) -> None:
        if not self.at_end:
            self._count(op)

    def after(self, op: str, target) -> None:
        if self.at_end:
            self._count(op)


def stored_bytes(be: Backend) -> Iterator[tuple[str, bytes]]:
    """Every object under the tree as (key, bytes), and each member of a zip (``.npz``)
    inflated as (key + "!" + member, bytes): what a scan for leftover content must read. Shard
    chunks, tail deltas, records and blobs are stored uncompressed."""
    for path, _, _ in be.walk(""):
        raw = be.read(path)
        yield path, raw
        if raw[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(raw)) as z:
                for name in z.namelist():
                    yield f"{path}!{name}", z.read(name)


def find_bytes(be: Backend, needles: dict[str, bytes]) -> list[tuple[str, str]]:
    """(object, needle name) for every needle found in :func:`stored_bytes`."""
    return [
        (path, name)
        for path, raw in stored_bytes(be)
        for name, needle in needles.items()
        if needle in raw
    ]


class BackendTests:
    """What the commit protocol relies on from a backend, as tests any backend's suite can
    subclass (zarr's ``StoreTests`` pattern): put-if-absent and its races, atomic replace,
    ranged and batched reads, missing objects, listing, walking, deleting, request counts, the
    wrappers. A subclass sets ``expected_class``, ``atomic_create``, ``concurrent_io`` and
    implements :meth:`backend` (a fresh, empty root each call); pytest collects the methods.

        class TestMemory(BackendTests):
            expected_class = MemoryBackend
            def backend(self):
                return mcstore.open_backend(f"memory://t-{uuid.uuid4().hex}/root")
    """

    expected_class: type = Backend
    atomic_create = True
    concurrent_io = False

    def backend(self) -> Backend:
        raise NotImplementedError

    def fresh(self) -> Backend:
        be = self.backend()
        be.ensure_root()
        return be

    def test_class_and_flags(self):
        be = self.fresh()
        assert type(be) is self.expected_class
        assert (be.atomic_create, be.concurrent_io) == (self.atomic_create, self.concurrent_io)

    def test_write_read_replace(self):
        be = self.fresh()
        be.write("a/b.bin", b"one")
        assert be.read("a/b.bin") == b"one"
        be.write("a/b.bin", b"two!")
        assert be.read("a/b.bin") == b"two!"
        assert be.exists("a/b.bin") and not be.exists("a/c.bin")

    def test_missing_objects(self):
        import pytest

        be = self.fresh()
        with pytest.raises(FileNotFoundError):
            be.read("nope")
        with pytest.raises(FileNotFoundError):
            be.read_range("nope", 0, 4)
        be.write("x", b"1")
        assert be.read_many(["x", "nope"]) == {"x": b"1", "nope": None}
        assert be.listdir("no/such/dir") == []
        assert be.walk("no/such/dir") == []

    def test_put_if_absent_never_overwrites(self):
        be = self.fresh()
        assert be.put_if_absent("log/1.json", b"first")
        assert not be.put_if_absent("log/1.json", b"second")
        assert be.read("log/1.json") == b"first"

    def test_put_if_absent_race_has_one_winner(self):
        """Eight threads race for one name: exactly one wins, and its bytes are there (only
        for a backend that says it arbitrates races)."""
        be = self.fresh()
        if not be.atomic_create:  # it says so, as the subclass expects: nothing to race
            assert not self.atomic_create
            return
        wins: list[bytes] = []
        gate = threading.Barrier(8)

        def racer(i: int) -> None:
            data = f"writer-{i}".encode()
            gate.wait()
            if be.put_if_absent("log/race.json", data):
                wins.append(data)

        threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1
        assert be.read("log/race.json") == wins[0]

    def test_ranged_reads(self):
        be = self.fresh()
        data = bytes(range(256)) * 4
        be.write("s/0", data)
        assert be.read_range("s/0", 10, 20) == data[10:20]
        assert be.read_range("s/0", 1000, 1024) == data[1000:]
        reqs = [("s/0", 0, 5), ("s/0", 100, 300), ("s/0", 1020, 1024)]
        assert be.read_ranges(reqs) == [data[a:b] for _, a, b in reqs]
        assert be.read_ranges([]) == []

    def test_listing_and_walk(self):
        be = self.fresh()
        keys = ("refs/tags/a.json", "refs/tags/b.json", "refs/forks/x.json", "log/1")
        for k in keys:
            be.write(k, k.encode())
        assert be.listdir("refs/tags") == ["a.json", "b.json"]
        assert be.listdir("refs") == ["forks", "tags"]
        walked = be.walk("")
        assert [p for p, _, _ in walked] == sorted(keys)
        assert all(size == len(p) for p, size, _ in walked)
        assert [p for p, _, _ in be.walk("refs/tags")] == ["refs/tags/a.json", "refs/tags/b.json"]

    def test_delete(self):
        be = self.fresh()
        be.write("d/1", b"1")
        be.write("d/2", b"2")
        assert be.delete(["d/1"]) == 1
        assert not be.exists("d/1") and be.exists("d/2")
        assert be.delete([]) == 0

    def test_stats_count_requests(self):
        be = self.fresh()
        s0 = be.stats.snapshot()
        be.write("c", b"12345")
        be.read("c")
        s1 = be.stats.snapshot()
        assert s1["puts"] - s0["puts"] == 1 and s1["put_bytes"] - s0["put_bytes"] == 5
        assert s1["gets"] - s0["gets"] == 1 and s1["get_bytes"] - s0["get_bytes"] == 5

    def test_wrappers_forward_and_observe(self):
        be = self.fresh()
        log = LoggingBackend(be)
        assert (log.atomic_create, log.concurrent_io) == (be.atomic_create, be.concurrent_io)
        assert log.put_if_absent("w/1", b"x") and not log.put_if_absent("w/1", b"y")
        assert log.read("w/1") == b"x"
        assert [(c.op, c.target) for c in log.calls] == [
            ("put_if_absent", "w/1"),
            ("put_if_absent", "w/1"),
            ("read", "w/1"),
        ]
        slow = LatencyBackend(be, 0.02)
        t0 = time.perf_counter()
        assert slow.read("w/1") == b"x"
        assert time.perf_counter() - t0 >= 0.02
