"""Crafted trees, round 2 (issue 22, items 6-9): fork bases that point anywhere, counts no
object could hold, telemetry that adds up to gigabytes, and what ``verify`` used to miss."""

from __future__ import annotations

import http.server
import io
import json
import os
import threading
import time
import tracemalloc
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import mcstore
from mcstore import format as F
from mcstore import telemetry as T
from mcstore.entry import facts_crc
from tests.store.helpers import DIM, gister

B, E = 4, 64


def _resign_root(url: str, change) -> None:
    """Edit the root's facts and recompute their checksum, as an attacker would."""
    p = Path(url) / "zarr.json"
    meta = json.loads(p.read_text())
    facts = meta["attributes"]["megacontext"]
    change(facts)
    facts.pop("crc", None)
    facts["crc"] = facts_crc(facts)
    p.write_text(json.dumps(meta, indent=2))


def _rewrite_record(url: str, version: int, change) -> None:
    p = Path(url) / F.log_key(version)
    rec = F.decode_record(p.read_bytes())
    change(rec)
    p.write_bytes(F.encode_record(rec))


def _mk(url: str, tokens, source: str = "a") -> mcstore.Tree:
    t = mcstore.create(url, dim=DIM, block=B, epoch=E)
    t.append(np.asarray(tokens), gister=gister, source=source)
    return t


# ---------------------------------------------------------------- 6. fork bases
SECRET = (np.arange(E * 3) * 7 + 5) % 1000


@pytest.fixture
def forked(tmp_path):
    """(source, fork) side by side in one folder, and a private tree in another folder with
    the same geometry."""
    shared, private = tmp_path / "shared", tmp_path / "private"
    shared.mkdir()
    private.mkdir()
    src = _mk(str(shared / "src.mc"), np.arange(E * 3) % 500)
    fk = mcstore.fork(src.url, str(shared / "fork.mc"))
    victim = _mk(str(private / "secret.mc"), SECRET)
    return src.url, fk.url, victim.url


def _point_base_at(url: str, target: str, *, keep_id: bool = True):
    def change(f):
        f["bases"][0]["url"] = target
        if not keep_id:
            f["bases"][0].pop("tree_id", None)

    _resign_root(url, change)


def test_a_legit_sibling_fork_reads(forked):
    _, fk, _ = forked
    t = mcstore.open(fk)
    assert np.array_equal(t.tokens(), np.arange(E * 3) % 500)
    mcstore.verify(fk)


def test_a_base_in_another_folder_is_refused_before_any_read(forked):
    _, fk, victim = forked
    _point_base_at(fk, victim)
    t = mcstore.open(fk)  # the root names it; nothing is read from it yet
    with pytest.raises(mcstore.CorruptTree, match="allow_bases"):
        t.tokens()
    with pytest.raises(mcstore.CorruptTree, match="fork base"):
        mcstore.verify(fk)


class _Counter(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self):
        _Counter.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *a):
        pass


def test_a_base_on_another_host_gets_no_request(forked):
    _, fk, _ = forked
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Counter.hits = []
    try:
        _point_base_at(fk, f"http://127.0.0.1:{srv.server_address[1]}/x.mc")
        with pytest.raises(mcstore.CorruptTree, match="fork base"):
            mcstore.open(fk).tokens()
        with pytest.raises(mcstore.CorruptTree):
            mcstore.verify(fk)
    finally:
        srv.shutdown()
    assert _Counter.hits == []


def test_a_sibling_that_is_not_the_recorded_base_is_refused(forked, tmp_path):
    _, fk, _ = forked
    other = _mk(str(tmp_path / "shared" / "other.mc"), SECRET)  # a sibling, same geometry
    for keep_id in (True, False):  # the recorded id, or an entry without one (older forks)
        _point_base_at(fk, other.url, keep_id=keep_id)
        with pytest.raises(mcstore.CorruptTree, match="fork base"):
            got = mcstore.open(fk).tokens()
            assert not np.array_equal(got[: E * 3], SECRET)


def test_a_base_with_other_geometry_or_more_shards_is_refused(forked, tmp_path):
    src, fk, _ = forked
    good = json.loads((Path(fk) / "zarr.json").read_text())
    _resign_root(fk, lambda f: f["bases"][0]["shards"].update(tokens=40))
    with pytest.raises(mcstore.CorruptTree, match="fork base"):
        mcstore.open(fk).tokens()
    (Path(fk) / "zarr.json").write_text(json.dumps(good))
    _resign_root(src, lambda f: f.update(epoch=2 * E))
    with pytest.raises(mcstore.CorruptTree, match="fork base"):
        mcstore.open(fk).tokens()


def test_a_fork_elsewhere_opens_with_an_allowlist(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    src = _mk(str(tmp_path / "a" / "src.mc"), np.arange(E * 2 + 7))
    fk = mcstore.fork(src.url, str(tmp_path / "b" / "f.mc"))  # the handle fork returns works
    assert any("allow_bases" in n for n in fk.notes)
    fk.append(np.arange(E), gister=gister, source="b")
    want = np.concatenate([np.arange(E * 2 + 7), np.arange(E)])
    assert np.array_equal(fk.tokens(), want)
    with pytest.raises(mcstore.CorruptTree, match="allow_bases"):
        mcstore.open(fk.url).tokens()
    t = mcstore.open(fk.url, allow_bases=[str(tmp_path / "a")])
    assert np.array_equal(t.tokens(), want)
    mcstore.verify(fk.url, allow_bases=[src.url])
    # a fork of that fork, back next to the source, names both trees as bases
    g = mcstore.fork(fk.url, str(tmp_path / "a" / "g.mc"), allow_bases=[src.url])
    assert np.array_equal(mcstore.open(g.url, allow_bases=[fk.url]).tokens(), want)
    # the CLI passes the allowlist as a storage option
    from tests.cli.helpers import run_mc

    r = run_mc(["verify", fk.url, "-o", f"allow_bases={tmp_path / 'a'}"])
    assert r.code == 0, r.err
    r = run_mc(["verify", fk.url])
    assert r.code == 6 and "allow_bases" in r.err and len(r.err.strip().splitlines()) == 1


def test_older_fork_entries_are_checked_by_the_pin(forked, tmp_path):
    src, fk, _ = forked

    def legacy(f):
        for b in f["bases"]:
            b.pop("tree_id", None)

    _resign_root(fk, legacy)  # as fork wrote them before base ids were recorded
    assert np.array_equal(mcstore.open(fk).tokens(), np.arange(E * 3) % 500)
    g = mcstore.fork(fk, str(tmp_path / "shared" / "g.mc"))
    _resign_root(g.url, legacy)
    assert np.array_equal(mcstore.open(g.url).tokens(), np.arange(E * 3) % 500)
    for pin in (Path(src) / "refs" / "forks").iterdir():
        pin.unlink()
    with pytest.raises(mcstore.CorruptTree, match="fork base"):
        mcstore.open(fk).tokens()
    assert np.array_equal(mcstore.open(fk, allow_bases=[src]).tokens(), np.arange(E * 3) % 500)


# ---------------------------------------------------------------- 7. counts and facts
@pytest.fixture
def many_segments(tmp_path):
    url = str(tmp_path / "m.mc")
    t = mcstore.create(url, dim=DIM, block=B, epoch=E)
    t.append_many([(np.arange(3) + i, f"s{i}", ()) for i in range(300)], gister=gister)
    return url


def _within(seconds: float, fn):
    out = []

    def run():
        try:
            fn()
            out.append(None)
        except BaseException as e:
            out.append(e)

    th = threading.Thread(target=run, daemon=True)
    t0 = time.perf_counter()
    th.start()
    th.join(seconds)
    assert out, f"still running after {seconds} s"
    return out[0], time.perf_counter() - t0


@pytest.mark.parametrize("n", [2**28, 2**33])
@pytest.mark.parametrize("read", ["segments", "tokens", "verify", "show"])
def test_huge_counts_fail_fast(many_segments, n, read):
    url = many_segments
    _rewrite_record(url, 2, lambda r: r.update(length=n, nseg=n))

    def go():
        if read == "verify":
            mcstore.verify(url)
        elif read == "show":
            from tests.cli.helpers import run_mc

            r = run_mc(["show", url])
            assert r.code == 6 and "arrays/" in r.err, r
        else:
            getattr(mcstore.open(url), read)()

    tracemalloc.start()
    try:
        err, took = _within(10, go)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if read != "show":
        assert isinstance(err, mcstore.CorruptTree), err
    else:
        assert err is None, err
    assert took < 3 and peak < 64 * 2**20, (took, peak)


@pytest.mark.parametrize("resign", [False, True], ids=["sparse-file", "re-signed-size"])
def test_a_huge_tail_object_is_never_read_whole(tmp_path, resign):
    t = _mk(str(tmp_path / "h.mc"), np.arange(100))
    delta = t.snapshot.rec["delta"]
    with open(Path(t.url) / delta["path"], "r+b") as f:
        f.truncate(2**40)  # 1 TiB, sparse
    if resign:
        _rewrite_record(
            t.url, 2, lambda r: (r["delta"].update(size=2**40), r["chain"][-1].update(size=2**40))
        )
    err, took = _within(10, lambda: mcstore.open(t.url).tokens())
    assert isinstance(err, mcstore.CorruptTree) and delta["path"] in str(err), err
    assert took < 3


@pytest.mark.parametrize(
    "facts",
    [{"dim": 65536, "epoch": 2**30}, {"epoch": 2**30, "block": 2}],
    ids=["dim-epoch", "tokens"],
)
def test_root_facts_no_shard_could_hold(tmp_path, facts):
    url = str(_mk(str(tmp_path / "r.mc"), np.arange(10)).url)
    _resign_root(url, lambda f: f.update(facts))
    with pytest.raises(mcstore.CorruptTree, match=r"zarr\.json"):
        mcstore.open(url)
    from tests.cli.helpers import run_mc

    r = run_mc(["show", url])
    assert r.code == 6 and "zarr.json" in r.err, r


# ---------------------------------------------------------------- 8. telemetry
def _npz(n: int, compressed: bool = True) -> bytes:
    bio = io.BytesIO()
    save = np.savez_compressed if compressed else np.savez
    z = np.zeros(n, np.int64)
    save(bio, l1_idx=z, l1_cnt=z + 1, l1_last=z)
    return bio.getvalue()


def test_gc_bounds_the_telemetry_it_merges(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "MERGE_BYTES", 4 * 2**20, raising=False)
    monkeypatch.setattr(T, "MERGE_FILES", 8, raising=False)
    t = _mk(str(tmp_path / "tm.mc"), np.arange(E))
    big = _npz(2**20 // 3 * 2)  # ~16 MiB inflated, a few KiB on disk: within the per-file limit
    assert len(big) < 2**20 and T.TELEMETRY_BYTES > 3 * 8 * (2**20 // 3 * 2)
    for i in range(2):
        t.backend.write(f"telemetry/big{i}-000001.npz", big)
    for i in range(20):
        t.backend.write(f"telemetry/w{i:02d}-000001.npz", _npz(4, compressed=False))
    tracemalloc.start()
    try:
        rep = mcstore.gc(t.url, grace=3600)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rep.telemetry_merged == 8
    assert rep.telemetry_deferred == 14 and any("telemetry" in n for n in rep.notes)
    assert peak < 3 * 4 * 2**20, peak
    names = sorted(os.listdir(Path(t.url) / "telemetry"))
    assert "big0-000001.npz" in names and "big1-000001.npz" in names
    while mcstore.gc(t.url, grace=3600).telemetry_merged:
        pass
    left = sorted(os.listdir(Path(t.url) / "telemetry"))
    assert [n for n in left if n.startswith("w")] == []
    counts, _ = mcstore.open(t.url).access_stats(1)  # the 20 small files' counts survive
    assert counts[0] >= 20 * 4


# ---------------------------------------------------------------- 9. verify
@pytest.fixture
def tree(tmp_path):
    url = str(tmp_path / "v.mc")
    t = mcstore.create(url, dim=DIM, block=B, epoch=E, binding={"tok": "x"})
    t.append(np.arange(E * 2 + 30) % 1000, gister=gister, source="a", objects={"i": b"o" * 50})
    t.append(np.arange(20), gister=gister, source="b")
    return url


def _flip(path: Path, offset: int, bit: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 1 << bit
    path.write_bytes(bytes(raw))


def test_verify_checks_array_metadata(tree):
    rng = np.random.default_rng(0)
    for name in ("tokens", "gists_1"):
        p = Path(tree) / "arrays" / name / "zarr.json"
        good = p.read_bytes()
        for _ in range(20):
            _flip(p, int(rng.integers(len(good))), int(rng.integers(7)))
            with pytest.raises(mcstore.CorruptTree, match=f"arrays/{name}/zarr.json"):
                mcstore.verify(tree)
            p.write_bytes(good)
        p.write_bytes(good[: len(good) // 2])
        with pytest.raises(mcstore.CorruptTree, match=f"arrays/{name}/zarr.json"):
            mcstore.verify(tree)
        p.unlink()
        with pytest.raises(mcstore.CorruptTree, match=f"arrays/{name}/zarr.json"):
            mcstore.verify(tree)
        p.write_bytes(good)
    mcstore.verify(tree)


@pytest.mark.parametrize("extra", [1, 2**40])
def test_verify_checks_shard_sizes(tree, extra):
    p = Path(tree) / "arrays" / "tokens" / "c" / "1"
    size = p.stat().st_size
    with open(p, "r+b") as f:
        f.truncate(size + extra)  # trailing bytes (1 TiB: a sparse file)
    t0 = time.perf_counter()
    with pytest.raises(mcstore.CorruptTree, match="arrays/tokens/c/1"):
        mcstore.verify(tree)
    assert time.perf_counter() - t0 < 5


def test_verify_checks_content_hashes(tree):
    t = mcstore.open(tree)
    rec = t.snapshot.rec
    for key, edit in (
        (rec["binding"], lambda v: v.update(binding={"tok": "y"})),
        (rec["objects"], lambda v: v.update(j=dict(v["i"]))),
    ):
        p = Path(tree) / key
        good = p.read_bytes()
        v = F.decode_blob(good)
        edit(v)
        p.write_bytes(F.encode_blob(v))  # re-signed: its own checksum is right
        with pytest.raises(mcstore.CorruptTree, match=key):
            mcstore.verify(tree)
        p.write_bytes(good)
    mcstore.verify(tree)


def test_root_crc_key_bit_flips_are_caught(tree):
    p = Path(tree) / "zarr.json"
    good = p.read_bytes()
    at = good.index(b'"crc"') + 1
    caught = 0
    for i in range(3):
        for bit in range(7):
            _flip(p, at + i, bit)
            try:
                mcstore.verify(tree)
            except mcstore.CorruptTree:
                caught += 1
            p.write_bytes(good)
    assert caught == 21
    mcstore.verify(tree)
