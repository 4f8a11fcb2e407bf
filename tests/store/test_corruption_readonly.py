"""Damaged objects give CorruptTree naming the object; read-only opens never write."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import mcstore
from mcstore import format as F
from tests.store.helpers import DIM, gister

B, E = 4, 64


@pytest.fixture
def tree(tmp_path):
    url = str(tmp_path / "c.mc")
    t = mcstore.create(url, dim=DIM, block=B, epoch=E)
    t.append(np.arange(E * 2 + 30) % 1000, gister=gister, source="a")
    t.append(np.arange(20), gister=gister, source="b")
    return url


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x10]))


def _truncate(path, n):
    with open(path, "r+b") as f:
        f.truncate(n)


def _read_all(url):
    t = mcstore.open(url)
    t.tokens()
    for lv in range(1, t.num_levels):
        t.gists(lv)
        t.node_meta(lv)
    t.segments()
    return t


def test_intact_tree_reads(tree):
    _read_all(tree)


@pytest.mark.parametrize(
    "key,damage",
    [
        ("arrays/tokens/c/0", lambda p: _flip(p, 5)),  # chunk byte
        ("arrays/tokens/c/0", lambda p: _flip(p, os.path.getsize(p) - 10)),  # shard index
        ("arrays/tokens/c/1", lambda p: _truncate(p, 100)),
        ("arrays/tokens/c/1", lambda p: Path(p).write_bytes(b"garbage" * 50)),
        ("arrays/gists_1/c/1/0", lambda p: _flip(p, 200)),
        ("arrays/gists_1/c/0/0", os.unlink),
        ("arrays/created_1/c/0", lambda p: _flip(p, 3)),
    ],
)
def test_damaged_shard(tree, key, damage):
    damage(os.path.join(tree, key))
    with pytest.raises(mcstore.CorruptTree, match=key.replace("/", ".")):
        _read_all(tree)


def _tail_path(url):
    t = mcstore.open(url)
    return t.snapshot.rec["delta"]["path"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: _flip(p, 3),
        lambda p: _truncate(p, 10),
        os.unlink,
        lambda p: Path(p).write_bytes(Path(p).read_bytes() + b"x"),
    ],
)
def test_damaged_tail(tree, damage):
    key = _tail_path(tree)
    damage(os.path.join(tree, key))
    with pytest.raises(mcstore.CorruptTree, match=key):
        _read_all(tree)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: _flip(p, 40),
        lambda p: _truncate(p, 30),
        lambda p: Path(p).write_bytes(b"\x00" * 64),
        lambda p: Path(p).write_bytes(b"{}"),
    ],
)
def test_damaged_commit_record_no_fallback(tree, damage):
    key = F.log_key(3)
    damage(os.path.join(tree, key))
    with pytest.raises(mcstore.CorruptTree, match=key):
        mcstore.open(tree)  # never silently the older version 2
    assert mcstore.open(tree, version=2).length == E * 2 + 30


def test_damaged_record_in_history(tree):
    os.unlink(os.path.join(tree, F.log_key(2)))
    with pytest.raises(mcstore.CorruptTree, match=F.log_key(2)):
        mcstore.open(tree).log()


def test_damaged_root(tree):
    Path(tree, "zarr.json").write_bytes(b"{not json")
    with pytest.raises(mcstore.CorruptTree, match=r"zarr\.json"):
        mcstore.open(tree)


def test_verify_catches_damage(tree):
    mcstore.verify(tree)
    _flip(os.path.join(tree, "arrays/gists_1/c/0/0"), 100)
    with pytest.raises(mcstore.CorruptTree, match="gists_1"):
        mcstore.verify(tree)


def _snapshot(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def test_read_only_open_never_writes(tree):
    before = _snapshot(tree)
    t = mcstore.open(tree)
    _read_all(tree)
    t.log()
    t.tags()
    t.info()
    t.record_access(1, [1, 2])
    t.access_stats(1)
    t.prefetch(1, range(5)).result()
    old = mcstore.open(tree, version=2)
    old.tokens()
    mcstore.verify(tree)
    mcstore.gc(tree, dry_run=True, grace=0, no_live_writers=True)
    t.refresh()
    t.close()
    with pytest.raises(mcstore.ReadOnlyError):
        t.tag("x")
    with pytest.raises(mcstore.ReadOnlyError):
        t.commit_objects({"a": b"1"})
    assert _snapshot(tree) == before


def test_read_only_memory_never_writes():
    import fsspec

    url = "memory://ro-check/t"
    t = mcstore.create(url, dim=DIM, block=B, epoch=E)
    t.append(np.arange(200), gister=gister, source="a")
    fs = fsspec.filesystem("memory")
    before = {k: bytes(v.getbuffer()) for k, v in fs.store.items() if k.startswith("/ro-check")}
    r = mcstore.open(url)
    r.tokens()
    r.gists(1)
    r.segments()
    r.close()
    after = {k: bytes(v.getbuffer()) for k, v in fs.store.items() if k.startswith("/ro-check")}
    assert before == after
