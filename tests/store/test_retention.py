"""Space and requests over a long life: snapshot expiry, tail checkpoints, object-map layers
(issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

import mcstore
from mcstore import format as F
from tests.store.helpers import DIM, gister

B, E = 4, 64


def test_expiry_keeps_tags_pins_and_reports_expired_versions(backend):
    mk, so = backend
    url = mk("r.mc")
    t = mcstore.create(url, dim=DIM, block=B, epoch=E, storage_options=so)
    for i in range(20):
        t.append(np.arange(7) + i, gister=gister, source=f"s{i}")
    t.tag("keep-me", 5)
    fork = mcstore.fork(url, mk("f.mc"), version=9, storage_options=so)
    want = {
        v: mcstore.open(url, version=v, storage_options=so).tokens()
        for v in range(1, t.version + 1)
    }
    rep = mcstore.gc(url, grace=0, no_live_writers=True, keep_last=3, storage_options=so)
    kept = set(range(1, t.version + 1)) - set(rep.expired)
    assert {5, 9, t.version, t.version - 1, t.version - 2} <= kept
    assert 2 in rep.expired
    for v in range(1, t.version + 1):
        if v in kept:
            r = mcstore.open(url, version=v, storage_options=so)
            assert np.array_equal(r.tokens(), want[v])
        else:
            with pytest.raises(mcstore.VersionNotFound, match=r"expired by gc.*keep_last=3"):
                mcstore.open(url, version=v, storage_options=so)
    log = mcstore.open(url, storage_options=so).log()
    assert [e.version for e in log] == sorted(kept, reverse=True)
    assert np.array_equal(mcstore.open(fork.url, storage_options=so).tokens(), want[9])
    mcstore.verify(url, storage_options=so)
    mcstore.verify(fork.url, storage_options=so)
    # appending after an expiry continues the log; a second expiry adds to the first
    t = mcstore.open(url, "a", storage_options=so)
    t.append(np.arange(3), gister=gister, source="after")
    rep2 = mcstore.gc(url, grace=0, no_live_writers=True, keep_last=1, storage_options=so)
    assert set(rep2.expired).isdisjoint(rep.expired)
    expired = mcstore.open(url, storage_options=so).expired()
    assert expired.count() == len(rep.expired) + len(rep2.expired)


def test_keep_since_expires_only_old_snapshots(tmp_path):
    url = str(tmp_path / "s.mc")
    t = mcstore.create(url, dim=DIM, block=B, epoch=E)
    for i in range(5):
        t.append(np.arange(5) + i, gister=gister, source="a")
    assert mcstore.gc(url, grace=0, no_live_writers=True, keep_since=3600).expired == []
    rep = mcstore.gc(url, grace=0, no_live_writers=True, keep_since=0)
    assert rep.expired == list(range(1, t.version))


def test_object_maps_grow_linearly(backend):
    mk, so = backend
    url = mk("o.mc")
    t = mcstore.create(url, dim=DIM, block=B, epoch=E, storage_options=so)
    for i in range(60):
        t.commit_objects({f"retrieval/x/chunk-{i:04d}": bytes([i]) * 50})
    sizes = [size for p, size, _ in t.backend.walk("meta") if "/objects-" in p]
    total, biggest = sum(sizes), max(sizes)
    assert total < 12 * biggest, (total, biggest)  # a whole map every few layers only
    for v in (2, 17, 40, t.version):
        r = mcstore.open(url, version=v, storage_options=so)
        assert len(r.objects()) == v - 1
        assert r.read_object(f"retrieval/x/chunk-{v - 2:04d}") == bytes([v - 2]) * 50
    t.commit_objects({"retrieval/x/chunk-0003": None})
    assert "retrieval/x/chunk-0003" not in mcstore.open(url, storage_options=so).objects()
    mcstore.gc(url, grace=0, no_live_writers=True, keep_last=1, storage_options=so)
    assert len(mcstore.open(url, storage_options=so).objects()) == 59
    mcstore.verify(url, storage_options=so)


def test_records_from_before_chains_still_read_and_grow(backend):
    """A tree whose records carry no chain (written before tail checkpoints) reads as before,
    and the next commit starts a chain."""
    mk, so = backend
    url = mk("old.mc")
    t = mcstore.create(url, dim=DIM, block=B, epoch=E, storage_options=so)
    for i in range(6):
        t.append(np.arange(9) + i, gister=gister, source="a")
    want = t.tokens()
    for v in range(1, t.version + 1):
        rec = F.decode_record(t.backend.read(F.log_key(v)))
        rec.pop("chain", None)
        t.backend.write(F.log_key(v), F.encode_record(rec))
    t = mcstore.open(url, "a", storage_options=so)
    assert np.array_equal(t.tokens(), want)
    t.append(np.arange(4), gister=gister, source="b")
    assert "chain" in t.snapshot.rec
    again = mcstore.open(url, storage_options=so).tokens()
    assert np.array_equal(again, np.concatenate([want, np.arange(4)]))


@pytest.mark.s3
def test_open_and_tail_take_few_requests_on_s3(moto_server):
    from tests.store.conftest import BUCKET

    so = moto_server["storage_options"]
    url = f"s3://{BUCKET}/few-requests"
    t = mcstore.create(url, dim=DIM, block=B, epoch=4096, storage_options=so)
    assert t.tail_chain == 6
    worst = 0
    for i in range(40):
        t.append(np.arange(9) + i, gister=gister, source="small")
        r = mcstore.open(url, storage_options=so)
        r.tokens(r.length - 5, r.length)
        st = r.io_stats
        worst = max(worst, st["gets"] + st["heads"] + st["lists"])
    assert worst <= 10, worst


def test_shards_written_ahead_are_committed_without_being_written_again(tmp_path):
    """Bulk ingest: workers write complete shards ahead; the append that commits them only
    checks their checksums; an orphan with other bytes at a name goes the staged way."""
    from mcstore.testing import LoggingBackend
    from tests.store.helpers import expected_gists

    url = str(tmp_path / "w.mc")
    mcstore.create(url, dim=DIM, block=B, epoch=E)
    toks = (np.arange(3 * E + 10) * 7 % 1000).astype(np.int32)
    worker = mcstore.open(url, "a")  # as a worker process would
    written = worker.write_ahead("tokens", 0, toks[: 2 * E])
    g1 = expected_gists(toks, B)[1]
    written |= worker.write_ahead("gists_1", 0, g1[: 2 * (E // B)])
    assert set(written) == {"tokens/0", "tokens/1", "gists_1/0", "gists_1/1"}
    assert worker.write_ahead("tokens", 0, toks[:E]) == {"tokens/0": written["tokens/0"]}
    log = LoggingBackend(mcstore.backend_for(url))
    t = mcstore.open(log, "a")
    t.append(toks, gister=gister, source="bulk", written=written)
    puts = {c.target for c in log.calls if c.op == "put_if_absent"}
    assert not puts & {"arrays/tokens/c/0", "arrays/tokens/c/1", "arrays/gists_1/c/0/0"}
    assert "arrays/tokens/c/2" in puts  # not written ahead: the commit writes it
    r = mcstore.open(url)
    assert np.array_equal(r.tokens(), toks) and np.array_equal(r.gists(1), g1)
    mcstore.verify(url)
    # an orphan of other bytes where a written-ahead shard should be: it is not reported as
    # written, and the commit stages its own copy
    url2 = str(tmp_path / "w2.mc")
    mcstore.create(url2, dim=DIM, block=B, epoch=E)
    w2 = mcstore.open(url2, "a")
    w2.write_ahead("tokens", 0, np.zeros(E, np.int32))  # a crashed run's different tokens
    assert w2.write_ahead("tokens", 0, toks[:E]) == {}
    w2.append(toks[:E], gister=gister, source="a")
    assert np.array_equal(mcstore.open(url2).tokens(), toks[:E])


def test_expiry_reclaims_staged_copies_only_expired_commits_used(backend):
    mk, so = backend
    url = mk("st.mc")
    t = mcstore.create(url, dim=DIM, block=B, epoch=E, storage_options=so)
    t.append(np.arange(50), gister=gister, source="a")
    spec = t.geo.spec("tokens")
    t.backend.write(spec.chunk_key(0), F.encode_shard(spec, np.full(E, 7, np.int32)))  # orphan
    v = t.append(np.arange(50, 90), gister=gister, source="b")
    staged = t.snapshot.rec["override"]["tokens/0"]
    assert t.backend.exists(staged)
    for i in range(3):
        t.append(np.arange(5) + i, gister=gister, source="c")
    want = mcstore.open(url, storage_options=so).tokens()
    mcstore.gc(url, grace=0, no_live_writers=True, storage_options=so)
    assert t.backend.exists(staged)  # every snapshot is kept: so is what version v uses
    mcstore.gc(url, grace=0, no_live_writers=True, keep_last=1, storage_options=so)
    assert not t.backend.exists(staged)
    r = mcstore.open(url, storage_options=so)
    assert v in r.expired() and np.array_equal(r.tokens(), want)
    mcstore.verify(url, storage_options=so)


def test_a_written_ahead_shard_removed_before_its_commit_is_written_by_the_commit(tmp_path):
    """A gc between a worker's write-ahead and the commit (a grace shorter than the batch)
    removes the uncommitted shard; the commit notices (HEAD) and writes it, so no commit ever
    names a shard that is not there."""
    url = str(tmp_path / "gone.mc")
    mcstore.create(url, dim=DIM, block=B, epoch=E)
    toks = (np.arange(2 * E + 5) * 3 % 1000).astype(np.int32)
    written = mcstore.open(url, "a").write_ahead("tokens", 0, toks[: 2 * E])
    mcstore.gc(url, grace=0, no_live_writers=True)  # debris to gc: no commit names them yet
    assert not mcstore.open_backend(url).exists("arrays/tokens/c/0")
    t = mcstore.open(url, "a")
    t.append(toks, gister=gister, source="a", written=written)
    assert np.array_equal(mcstore.open(url).tokens(), toks)
    mcstore.verify(url)
