"""Backend conformance: every backend class directly, on what the commit protocol relies on
(zarr's ``StoreTests`` pattern): put-if-absent, atomic replace, ranged and batched reads,
missing objects, listing, walking, deleting, and the capability flags."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

import mcstore
from mcstore.backend import Backend, MemoryBackend
from mcstore.local import LocalBackend
from mcstore.s3 import S3Backend
from mcstore.testing import LatencyBackend, LoggingBackend

EXPECTED = {"memory": MemoryBackend, "local": LocalBackend, "file": LocalBackend, "s3": S3Backend}


@pytest.fixture(params=["memory", "local", "file", "s3", "seaweed", "generic"])
def be(request, backend_for, tmp_path) -> Backend:
    """Each backend class on its storage, and the generic fsspec class (what any other fsspec
    filesystem gets) on the memory filesystem."""
    kind = request.param
    if kind == "generic":
        b = Backend(f"memory://generic-{uuid.uuid4().hex[:8]}/root")
    elif kind == "file":
        b = mcstore.open_backend(f"file://{tmp_path / 'root'}")
    else:
        url, so = backend_for(kind)
        b = mcstore.open_backend(url, so)
    b.ensure_root()
    return b


def test_class_and_flags(be):
    if type(be) is Backend:
        assert not be.atomic_create and not be.concurrent_io
        return
    kind = next(k for k, c in EXPECTED.items() if isinstance(be, c))
    assert type(be) is EXPECTED[kind]
    assert be.atomic_create  # every backend the tests use can commit safely under races
    assert be.concurrent_io == (kind == "s3")


def test_write_read_replace(be):
    be.write("a/b.bin", b"one")
    assert be.read("a/b.bin") == b"one"
    be.write("a/b.bin", b"two!")
    assert be.read("a/b.bin") == b"two!"
    assert be.exists("a/b.bin") and not be.exists("a/c.bin")


def test_missing_objects(be):
    with pytest.raises(FileNotFoundError):
        be.read("nope")
    with pytest.raises(FileNotFoundError):
        be.read_range("nope", 0, 4)
    be.write("x", b"1")
    assert be.read_many(["x", "nope"]) == {"x": b"1", "nope": None}
    assert be.listdir("no/such/dir") == []
    assert be.walk("no/such/dir") == []


def test_put_if_absent_never_overwrites(be):
    assert be.put_if_absent("log/1.json", b"first")
    assert not be.put_if_absent("log/1.json", b"second")
    assert be.read("log/1.json") == b"first"


def test_put_if_absent_race_has_one_winner(be):
    """Eight threads race for one name: exactly one wins, and its bytes are there."""
    if not be.atomic_create:
        pytest.skip("this backend says it cannot arbitrate races (atomic_create is False)")
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


def test_ranged_reads(be):
    data = bytes(range(256)) * 4
    be.write("s/0", data)
    assert be.read_range("s/0", 10, 20) == data[10:20]
    assert be.read_range("s/0", 1000, 1024) == data[1000:]
    reqs = [("s/0", 0, 5), ("s/0", 100, 300), ("s/0", 1020, 1024)]
    assert be.read_ranges(reqs) == [data[a:b] for _, a, b in reqs]
    assert be.read_ranges([]) == []


def test_listing_and_walk(be):
    for k in ("refs/tags/a.json", "refs/tags/b.json", "refs/forks/x.json", "log/1"):
        be.write(k, k.encode())
    assert be.listdir("refs/tags") == ["a.json", "b.json"]
    assert be.listdir("refs") == ["forks", "tags"]
    walked = be.walk("")
    assert [p for p, _, _ in walked] == sorted(
        ["refs/tags/a.json", "refs/tags/b.json", "refs/forks/x.json", "log/1"]
    )
    assert all(size == len(p) for p, size, _ in walked)
    assert [p for p, _, _ in be.walk("refs/tags")] == ["refs/tags/a.json", "refs/tags/b.json"]


def test_delete(be):
    be.write("d/1", b"1")
    be.write("d/2", b"2")
    assert be.delete(["d/1"]) == 1
    assert not be.exists("d/1") and be.exists("d/2")
    assert be.delete([]) == 0


def test_stats_count_requests(be):
    s0 = be.stats.snapshot()
    be.write("c", b"12345")
    be.read("c")
    s1 = be.stats.snapshot()
    assert s1["puts"] - s0["puts"] == 1 and s1["put_bytes"] - s0["put_bytes"] == 5
    assert s1["gets"] - s0["gets"] == 1 and s1["get_bytes"] - s0["get_bytes"] == 5


def test_wrappers_forward_and_observe(be):
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


def test_a_tree_works_through_a_wrapper(backend):
    url, so = backend
    import numpy as np

    from tests.store.helpers import DIM, gister

    log = LoggingBackend(mcstore.backend_for(url("t"), so))
    t = mcstore.create(log, dim=DIM, block=4, epoch=64)
    t.append(np.arange(100), gister=gister, source="a")
    assert mcstore.open(url("t"), storage_options=so).tokens().tolist() == list(range(100))
    assert any(c.op == "put_if_absent" and str(c.target).startswith("log/") for c in log.calls)


def test_unknown_scheme_is_one_clear_error():
    with pytest.raises(mcstore.InvalidArgument, match="unknown storage scheme"):
        mcstore.open_backend("nosuchscheme://x/y")
