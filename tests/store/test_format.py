"""Level arithmetic, byte-level zarr conformance, and what I/O an append / a node read does."""

from __future__ import annotations

import numpy as np
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import mcstore
from mcstore import format as F
from mcstore.testing import LoggingBackend
from tests.store.helpers import DIM, gister


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**7), st.integers(0, 10**6), st.sampled_from([2, 4, 32]))
def test_level_arithmetic(old, add, block):
    new = old + add
    for lv in range(1, 6):
        a, b = F.completed(old, new, lv, block)
        assert a == F.num_nodes(old, lv, block) and b == F.num_nodes(new, lv, block)
        for i in {a, b - 1} if b > a else set():
            s0, s1 = F.span(lv, i, block)
            assert s1 - s0 == block**lv and s1 <= new and s0 < new
            assert s1 > old  # a completed node ends inside the new tokens
            # its children are exactly the nodes below it
            c0, c1 = (
                F.span(lv - 1, i * block, block)[0],
                F.span(lv - 1, (i + 1) * block - 1, block)[1],
            )
            assert (c0, c1) == (s0, s1)
        if b == a:  # bottom-up: nothing above completes either
            assert (
                F.completed(old, new, lv + 1, block)[1] == F.completed(old, new, lv + 1, block)[0]
            )
    n = F.num_levels(new, block)
    assert n == 0 if new == 0 else F.num_nodes(new, n - 1, block) > 0 == F.num_nodes(new, n, block)


def test_shard_bytes_equal_zarr_own_encoding():
    g = F.Geometry(4, 8, "float16", 64)
    for name in ("tokens", "gists_1", "created_1", "seg_heap"):
        spec = g.spec(name)
        rng = np.random.default_rng(0)
        rows = rng.integers(0, 100, (spec.shard_rows, *spec.row_shape())).astype(spec.dtype)
        held: dict = {}
        store = zarr.storage.MemoryStore(held)
        shape = (F.HUGE_ROWS, *spec.row_shape())
        a = zarr.create_array(
            store=store,
            shape=shape,
            dtype=spec.dtype,
            chunks=(spec.chunk_rows, *spec.row_shape()),
            shards=(spec.shard_rows, *spec.row_shape()),
            compressors=[zarr.codecs.Crc32cCodec()],
            fill_value=0,
        )
        a[: spec.shard_rows] = rows
        key = spec.chunk_key(0).removeprefix(f"arrays/{name}/")
        assert held[key].to_bytes() == F.encode_shard(spec, rows), name


def test_zarr_reads_every_array_of_a_tree(tmp_path):
    url = str(tmp_path / "z.mc")
    t = mcstore.create(url, dim=DIM, block=4, epoch=64)
    t.append(np.arange(64 * 5 + 3) % 777, gister=gister, source="a")
    for name in F.array_names(t.length, 4, ""):
        full = t.geo.bound(name, t.snapshot.extent)
        if full == 0:
            continue
        z = zarr.open_array(f"{url}/arrays/{name}", mode="r")
        assert np.array_equal(z[:full], t.array_rows(name, 0, full)), name


def test_shard_write_is_one_put_without_reads(backend):
    url, so = backend
    t = mcstore.create(url("w"), dim=DIM, block=4, epoch=64, storage_options=so)
    t.append(np.arange(40), gister=gister, source="a")
    spy = LoggingBackend(mcstore.backend_for(url("w"), so))
    t = mcstore.open(spy, "a")
    spy.clear()
    t.append(np.arange(60), gister=gister, source="b")  # completes shard 0 of tokens etc.
    shard_puts = [c.target for c in spy.calls if c.op == "put_if_absent" and "/c/" in c.target]
    assert "arrays/tokens/c/0" in shard_puts
    assert len(shard_puts) == len(set(shard_puts))  # each once
    reads = [c for c in spy.calls if c.op.startswith("read") and "arrays/" in str(c.target)]
    assert not reads


def test_node_read_is_one_ranged_get_once_index_cached(backend):
    url, so = backend
    t = mcstore.create(url("r"), dim=DIM, block=4, epoch=64, storage_options=so)
    t.append(np.arange(64 * 3), gister=gister, source="a")
    r = mcstore.open(url("r"), storage_options=so)
    r.tokens(0, 1)  # tail etc. not involved below; warm nothing of gists
    s0 = r.io_stats["gets"]
    r.gists(1, 3, 4)  # cold: shard index + chunk
    s1 = r.io_stats["gets"]
    r.gists(1, 5, 6)  # same shard, index cached: one ranged get
    s2 = r.io_stats["gets"]
    r.gists(1, 5, 6)  # cached node: no get
    s3 = r.io_stats["gets"]
    r.tokens(4, 8)  # one token block: one chunk
    assert (s1 - s0, s2 - s1, s3 - s2) == (2, 1, 0)
    assert r.cache_stats()["hits"] >= 1


def test_open_is_bounded(tmp_path):
    """Opening does not read every commit: a few requests whatever the history length."""
    url = str(tmp_path / "o.mc")
    t = mcstore.create(url, dim=DIM, block=4, epoch=64)
    for i in range(60):
        t.append(np.arange(10) + i, gister=gister, source="a")
    r = mcstore.open(url)
    assert r.io_stats["gets"] + r.io_stats["heads"] <= 5
    r.tokens(r.length - 5, r.length)  # tail: only records since the last epoch boundary
    recs = r.io_stats["gets"]
    assert recs < 20, recs


def test_record_checksum_detects_flips():
    rec = {"version": 3, "length": 10, "message": "x"}
    raw = F.encode_record(rec)
    assert F.decode_record(raw) == rec
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        try:
            got = F.decode_record(bytes(bad))
        except ValueError:
            continue
        assert got == rec  # only a flip that keeps the same JSON value could pass
