"""The same behaviour on every backend: memory, local path, file://, S3 (moto)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mcstore
from tests.store.helpers import DIM, Model, check_tree, expected_gists, gister

B, E = 4, 64  # small block and epoch so several levels and shards appear quickly


def _mk(backend, name="t", **kw):
    url, so = backend
    return mcstore.create(url(name), dim=DIM, block=B, epoch=E, storage_options=so, **kw), so


def test_create_append_read_reopen(backend):
    t, so = _mk(backend)
    assert (t.version, t.length, t.num_levels) == (1, 0, 0)
    rng = np.random.default_rng(1)
    model = Model()
    for n in [1, 2, 5, 64, 3, 130, 300, 7]:
        toks = rng.integers(0, 50_000, n).astype(np.int32)
        v = t.append(toks, gister=gister, source=f"src{n}", tags=("a", "b"))
        model.append(v, toks, f"src{n}")
        check_tree(t, *model.versions[v], B)
    r = mcstore.open(t.url, storage_options=so)
    assert r.version == t.version and r.mode == "r"
    check_tree(r, *model.versions[r.version], B)
    for v, (toks, segs) in model.versions.items():
        old = mcstore.open(t.url, version=v, storage_options=so)
        check_tree(old, toks, segs, B)
    assert r.segment_at(0).source == "src1"
    assert r.segment_at(r.length - 1).source == "src7"
    assert r.segments()[0].tags == ("a", "b")
    log = r.log()
    assert [e.version for e in log] == list(range(r.version, 0, -1))
    assert log[0].length == r.length and log[-1].message == "create"


def test_large_append_spanning_epochs(backend):
    t, so = _mk(backend)
    toks = np.arange(E * 5 + 37, dtype=np.int32) % 997
    t.append(toks, gister=gister, source="big")
    t.append(toks[:10], gister=gister, source="small")
    all_t = np.concatenate([toks, toks[:10]])
    r = mcstore.open(t.url, storage_options=so)
    check_tree(r, all_t, [(0, len(toks), "big"), (len(toks), len(all_t), "small")], B)
    # single node reads at each level equal the bulk reads
    for lv in range(1, r.num_levels):
        n = r.num_nodes(lv)
        for i in {0, n // 2, n - 1}:
            assert np.array_equal(r.gists(lv, i, i + 1), r.gists(lv)[i : i + 1])


def test_errors(backend):
    url, so = backend
    with pytest.raises(mcstore.TreeNotFound, match="no MegaContext tree"):
        mcstore.open(url("missing"), storage_options=so)
    t, _ = _mk(backend)
    with pytest.raises(mcstore.TreeExists):
        mcstore.create(url("t"), dim=DIM, storage_options=so)
    t.append([1, 2, 3], gister=gister, source="x")
    with pytest.raises(mcstore.VersionNotFound):
        mcstore.open(t.url, version=99, storage_options=so)
    with pytest.raises(mcstore.VersionNotFound):
        mcstore.open(t.url, version="nope", storage_options=so)
    r = mcstore.open(t.url, storage_options=so)
    with pytest.raises(mcstore.ReadOnlyError):
        r.append([1], gister=gister, source="x")
    with pytest.raises(mcstore.InvalidArgument):
        mcstore.open(t.url, "a", version=1, storage_options=so)


def test_conflict_then_retry(backend):
    t, so = _mk(backend)
    t.append(np.arange(10), gister=gister, source="a")
    w1 = mcstore.open(t.url, "a", storage_options=so)
    w2 = mcstore.open(t.url, "a", storage_options=so)
    v = w1.append(np.arange(70), gister=gister, source="w1")
    with pytest.raises(mcstore.CommitConflict, match="refresh"):
        w2.append(np.arange(5), gister=gister, source="w2")
    w2.refresh()
    assert w2.version == v
    w2.append(np.arange(5), gister=gister, source="w2")
    r = mcstore.open(t.url, storage_options=so)
    assert [s.source for s in r.segments()] == ["a", "w1", "w2"]
    assert r.length == 85


def test_tags_and_time_travel(backend):
    t, so = _mk(backend)
    t.append(np.arange(40), gister=gister, source="a")
    t.tag("first")
    t.append(np.arange(100), gister=gister, source="b")
    t.tag("second")
    t.tag("old", version=1)
    assert t.tags() == {"first": 2, "second": 3, "old": 1}
    with pytest.raises(mcstore.TreeExists):
        t.tag("first", version=3)
    t.tag("first", version=2)  # same target: fine
    f = mcstore.open(t.url, version="first", storage_options=so)
    assert f.length == 40 and f.version == 2
    with pytest.raises(mcstore.ReadOnlyError):
        f.append([1], gister=gister, source="x")
    with pytest.raises(mcstore.VersionNotFound):
        t.tag("x", version=17)
    with pytest.raises(mcstore.InvalidArgument):
        t.tag("bad name!")


def test_fork_copy_on_write_and_gc(backend):
    url, so = backend
    t, _ = _mk(backend, "parent")
    a = np.arange(E * 3 + 9, dtype=np.int32) % 500
    t.append(a, gister=gister, source="p")
    fk = mcstore.fork(t.url, url("child"), storage_options=so)
    assert fk.length == len(a) and fk.version == 2
    b = np.arange(E * 2 + 5, dtype=np.int32) % 300 + 7
    fk.append(b, gister=gister, source="c")
    t.append(b[::-1].copy(), gister=gister, source="p2")
    # the fork's own arrays hold only shards from the fork point on
    own = [p for p, _, _ in fk.backend.walk("arrays/tokens/c")]
    assert min(int(p.split("/")[-1]) for p in own) == len(a) // E
    rf = mcstore.open(url("child"), storage_options=so)
    check_tree(rf, np.concatenate([a, b]), [(0, len(a), "p"), (len(a), len(a) + len(b), "c")], B)
    rp = mcstore.open(t.url, storage_options=so)
    check_tree(
        rp, np.concatenate([a, b[::-1]]), [(0, len(a), "p"), (len(a), len(a) + len(b), "p2")], B
    )
    assert any(p.startswith("refs/forks/") for p, _, _ in t.backend.walk("refs"))
    for u in (t.url, url("child")):
        rep = mcstore.gc(u, storage_options=so, grace=0, no_live_writers=True)
        assert rep.removed == []
    check_tree(
        mcstore.open(url("child"), storage_options=so),
        np.concatenate([a, b]),
        [(0, len(a), "p"), (len(a), len(a) + len(b), "c")],
        B,
    )
    with pytest.raises(mcstore.TreeExists):
        mcstore.fork(t.url, url("child"), storage_options=so)


def test_gc_removes_orphans_only(backend):
    t, so = _mk(backend)
    t.append(np.arange(50), gister=gister, source="a")
    # a crashed writer's delta for the next version (one for a later version would prove
    # that records were lost: gc refuses then, see tests/store/test_head_hint.py)
    t.backend.write("tail/00000000000000000003-dead.bin", b"x" * 100)
    t.backend.write("arrays/tokens/c/77", b"y" * 10)
    rep = mcstore.gc(t.url, storage_options=so, grace=3600)
    assert rep.removed == [] and len(rep.kept_young) == 2
    rep = mcstore.gc(t.url, storage_options=so, grace=0, no_live_writers=True)
    assert sorted(rep.removed) == ["arrays/tokens/c/77", "tail/00000000000000000003-dead.bin"]
    assert rep.bytes_freed == 110
    check_tree(
        mcstore.open(t.url, storage_options=so), np.arange(50, dtype=np.int32), [(0, 50, "a")], B
    )


def test_objects(backend):
    t, so = _mk(backend)
    t.append(np.arange(10), gister=gister, source="a", objects={"faiss/l1": b"one"})
    v = t.commit_objects({"faiss/l2": b"two"}, message="index")
    assert t.objects() == ["faiss/l1", "faiss/l2"]
    t.append(np.arange(10), gister=gister, source="b", objects={"faiss/l1": None})
    r = mcstore.open(t.url, storage_options=so)
    assert r.objects() == ["faiss/l2"] and r.read_object("faiss/l2") == b"two"
    old = mcstore.open(t.url, version=v, storage_options=so)
    assert old.read_object("faiss/l1") == b"one"
    rep = mcstore.gc(t.url, storage_options=so, grace=0, no_live_writers=True)
    assert not any(p.startswith("index/") for p in rep.removed)


def test_binding_and_regist(backend):
    _url, so = backend
    b1 = {
        "tokenizer": {"name": "tok", "hash": "h1"},
        "gistnet": {"id": "g1", "hash": "x", "dim": DIM, "dtype": "float16"},
    }
    t, _ = _mk(backend, binding=b1, gister_id="g1")
    toks = np.arange(E * 2 + 21, dtype=np.int32) % 1000
    t.append(toks, gister=gister, source="a")
    # the binding is opaque to the store: kept as given, compared canonically
    assert t.binding == b1 and t.same_binding(json.loads(json.dumps(b1))) is True
    b2 = {**b1, "gistnet": {**b1["gistnet"], "id": "g2"}}
    assert t.same_binding(b2) is False and t.same_binding(None) is False

    def g2(level, kids):
        return (gister(level, kids).astype(np.float32) * -1).astype(np.float16)

    calls = []
    v = t.regist(
        g2, b2, gister_id="g2", progress=lambda lv, done, tot: calls.append((lv, done, tot))
    )
    assert calls and t.same_binding(b2) is True
    r = mcstore.open(t.url, storage_options=so)
    exp = expected_gists(toks, B, g2)
    for lv, g in exp.items():
        assert np.array_equal(r.gists(lv), g)
        assert set(r.node_meta(lv)["gist_version"].tolist()) == {1}
    assert r.gistnet_table() == ["g1", "g2"]
    old = mcstore.open(t.url, version=v - 1, storage_options=so)
    assert np.array_equal(old.gists(1), expected_gists(toks, B)[1])
    # appending after regist continues with the new gister
    t.append(toks[:40], gister=g2, source="b")
    all_t = np.concatenate([toks, toks[:40]])
    r = mcstore.open(t.url, storage_options=so)
    for lv, g in expected_gists(all_t, B, g2).items():
        assert np.array_equal(r.gists(lv), g)


def test_regist_never_drops_a_commit_made_meanwhile(backend):
    """A commit through the same handle while regist computes makes regist conflict instead of
    committing over it with its older snapshot; a rerun then succeeds and keeps both."""
    b1 = {
        "tokenizer": {"name": "tok", "hash": "h1"},
        "gistnet": {"id": "g1", "hash": "x", "dim": DIM, "dtype": "float16"},
    }
    t, _ = _mk(backend, binding=b1)
    toks = np.arange(E + 70, dtype=np.int32) % 1000
    t.append(toks, gister=gister, source="a")
    b2 = {**b1, "gistnet": {**b1["gistnet"], "id": "g2"}}
    meddled = []

    def g2(level, kids):
        if not meddled:
            meddled.append(t.set_flags(1, [0], 1))
        return (gister(level, kids).astype(np.float32) * -1).astype(np.float16)

    with pytest.raises(mcstore.CommitConflict, match="during regist"):
        t.regist(g2, b2)
    assert t.node_meta(1, 0, 1)["flags"].tolist() == [1] and t.same_binding(b1) is True
    t.regist(g2, b2)
    assert t.node_meta(1, 0, 1)["flags"].tolist() == [1] and t.same_binding(b2) is True
    assert np.array_equal(t.gists(1), expected_gists(toks, B, g2)[1])


def test_regist_resumes_after_crash(backend):
    t, so = _mk(backend)
    toks = np.arange(E * 3, dtype=np.int32)
    t.append(toks, gister=gister, source="a")
    bind = {"tokenizer": {"name": "t", "hash": "1"}, "gistnet": {"id": "new", "dim": DIM}}
    seen = []

    def boom(level, kids):
        seen.append(level)
        if len(seen) == 2:
            raise KeyboardInterrupt("killed")
        return gister(level, kids)

    with pytest.raises(KeyboardInterrupt):
        t.regist(boom, bind)
    assert mcstore.open(t.url, storage_options=so).version == 2  # nothing committed
    n_calls = []
    t.regist(lambda lv, k: (n_calls.append(lv), gister(lv, k))[1], bind)
    # a full regist makes 9 calls here (3 shards at each of levels 1-3); the shard finished
    # before the crash is not recomputed
    assert len(n_calls) == 8 and n_calls.count(1) == 2
    r = mcstore.open(t.url, storage_options=so)
    assert r.same_binding(bind) and np.array_equal(r.gists(1), expected_gists(toks, B)[1])


def test_node_meta_flags_and_telemetry(backend):
    _url, so = backend
    t, _ = _mk(backend)
    t.append(np.arange(100), gister=gister, source="a")
    m = t.node_meta(1)
    assert len(m["created_at"]) == 25 and (m["created_at"] > 0).all()
    t.set_flags(1, [3, 5], 1)
    assert mcstore.open(t.url, storage_options=so).node_meta(1)["flags"][[3, 5]].tolist() == [1, 1]
    t.record_access(1, [1, 2, 2])
    t.record_access(1, [2])
    key = t.flush_telemetry()
    assert key.startswith("telemetry/")
    r = mcstore.open(t.url, storage_options=so)
    counts, last = r.access_stats(1)
    assert counts[:4].tolist() == [0, 1, 3, 0] and last[2] > 0
    r.record_access(1, [0])
    with pytest.raises(mcstore.ReadOnlyError):
        r.flush_telemetry()
    w2 = mcstore.open(t.url, "a", storage_options=so)
    w2.record_access(1, [1])
    w2.flush_telemetry()
    mcstore.gc(t.url, storage_options=so, grace=0, no_live_writers=True)
    counts, _ = mcstore.open(t.url, storage_options=so).access_stats(1)
    assert counts[:4].tolist() == [0, 2, 3, 0]
    assert len([p for p, _, _ in t.backend.walk("telemetry")]) == 1


def test_telemetry_counts_once_after_a_gc_crash(backend, monkeypatch):
    """gc crashed after writing its merge but before deleting the parts: later merges neither
    count those parts again nor leave them behind."""
    _url, so = backend
    t, _ = _mk(backend)
    t.append(np.arange(100), gister=gister, source="a")
    for i in (1, 2):
        t.record_access(1, [i])
        t.flush_telemetry()
    be = t.backend
    real_delete = be.delete
    monkeypatch.setattr(be, "delete", lambda keys: None)  # the crash: nothing deleted
    mcstore.telemetry.merge_files(be)
    monkeypatch.setattr(be, "delete", real_delete)
    assert mcstore.open(t.url, storage_options=so).access_stats(1)[0][:4].tolist() == [0, 1, 1, 0]
    t.record_access(1, [3])
    t.flush_telemetry()
    for _ in range(2):  # the merge absorbing the crashed merge, then a merge of one file
        mcstore.telemetry.merge_files(be)
        counts, _ = mcstore.open(t.url, storage_options=so).access_stats(1)
        assert counts[:4].tolist() == [0, 1, 1, 1]
    assert len([p for p, _, _ in be.walk("telemetry")]) == 1


def test_bfloat16_bit_exact(backend):
    url, so = backend
    t = mcstore.create(url("bf"), dim=DIM, dtype="bfloat16", block=B, epoch=E, storage_options=so)
    rng = np.random.default_rng(3)
    made = {}

    def g(level, kids):
        bits = rng.integers(0, 2**16, (kids.shape[0], DIM)).astype(np.uint16)
        made.setdefault(level, []).append(bits)
        return bits

    t.append(np.arange(E * 2 + 3), gister=g, source="a")
    r = mcstore.open(t.url, storage_options=so)
    assert r.dtype == "bfloat16"
    for lv, parts in made.items():
        got = r.gists(lv)
        assert got.dtype == np.uint16 and np.array_equal(got, np.concatenate(parts))
    x = np.array([1.0, -2.5, 3.14159, 1e-3], np.float32)
    assert np.allclose(mcstore.bf16_to_float32(mcstore.float32_to_bf16(x)), x, rtol=1e-2)


def test_cache_and_prefetch(backend):
    t, so = _mk(backend)
    t.append(np.arange(E * 4), gister=gister, source="a")
    r = mcstore.open(t.url, storage_options=so, cache_bytes=1 << 20)
    r.prefetch(1, range(0, 40)).result()
    s0 = r.cache_stats()
    g = r.gists(1, 0, 40)
    s1 = r.cache_stats()
    assert s1["hits"] - s0["hits"] == 40 and s1["misses"] == s0["misses"]
    assert np.array_equal(g, expected_gists(np.arange(E * 4, dtype=np.int32), B)[1][:40])
    r.prefetch(0, [0, 1, 2], wait=True)
    assert np.array_equal(r.tokens(0, 12), np.arange(12))


def test_append_many_reads_as_separate_appends(backend):
    """One commit of several segments: the same tokens, gists and segments as one append
    each; only the log is shorter."""
    rng = np.random.default_rng(11)
    parts = [
        (rng.integers(0, 900, n), f"doc{i}", (f"t{i}",)) for i, n in enumerate([5, 70, 1, 140])
    ]
    one, so = _mk(backend, "one")
    for toks, src, tags in parts:
        one.append(toks, gister=gister, source=src, tags=tags)
    many, _ = _mk(backend, "many")
    v = many.append_many(parts, gister=gister, message="bulk")
    assert v == 2 and one.version == 5
    a, b = mcstore.open(one.url, storage_options=so), mcstore.open(many.url, storage_options=so)
    assert np.array_equal(a.tokens(), b.tokens())
    for lv in range(1, a.num_levels):
        assert np.array_equal(a.gists(lv), b.gists(lv))
    strip = [(s.start, s.stop, s.source, tuple(s.tags)) for s in a.segments()]
    assert strip == [(s.start, s.stop, s.source, tuple(s.tags)) for s in b.segments()]
    with pytest.raises(mcstore.InvalidArgument):
        many.append_many([], gister=gister)
    # each segment may keep its own time (an import keeps when a text was first remembered)
    v = many.append_many(parts[:2], gister=gister, times=[5, 2**62])
    assert [s.time for s in mcstore.open(many.url, storage_options=so).segments()[-2:]] == [
        5,
        2**62,
    ]
    for bad in ([1], [1, -1], [1, 2**63]):
        with pytest.raises(mcstore.InvalidArgument):
            many.append_many(parts[:2], gister=gister, times=bad)
    assert many.version == v  # refused before anything was written
