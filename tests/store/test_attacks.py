"""Crafted and damaged trees: the store never writes outside the tree, never hangs or
exhausts memory on what a tree says, and reports damage instead of skipping it (issue 13)."""

from __future__ import annotations

import io
import json
import os
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

import mcstore
from mcstore import format as F
from mcstore.testing import BackendWrapper
from tests.store.helpers import DIM, gister

B, E = 4, 64


@pytest.fixture
def tree(tmp_path):
    url = str(tmp_path / "t.mc")
    t = mcstore.create(url, dim=DIM, block=B, epoch=E)
    t.append(np.arange(E + 30) % 1000, gister=gister, source="a")
    t.append(np.arange(20), gister=gister, source="b")
    return url


def _rewrite_record(url: str, version: int, change) -> None:
    """Edit a commit record and re-sign it, as an attacker who knows the format would."""
    p = Path(url) / F.log_key(version)
    rec = F.decode_record(p.read_bytes())
    change(rec)
    p.write_bytes(F.encode_record(rec))


def _head(url: str) -> int:
    return mcstore.open(url).version


def _append(url):
    t = mcstore.open(url, "a")
    t.append(np.arange(E), gister=gister, source="c")


# ---------------------------------------------------------------- 1. writes outside the tree
@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.update(override={"tokens/0": "../../escaped"}),
        lambda r: r.update(override={"../../escaped/0": "stage/x/tokens/0"}),
        lambda r: r.update(gset="../../escaped"),
        lambda r: r.update(delta={**r["delta"], "path": "../../escaped.bin"}),
        lambda r: r.update(binding="../../escaped.json"),
    ],
    ids=["override-target", "override-key", "gset", "delta-path", "binding"],
)
def test_crafted_record_paths_are_refused(tree, tmp_path, change):
    _rewrite_record(tree, _head(tree), change)
    with pytest.raises(mcstore.CorruptTree):
        mcstore.verify(tree)
    with pytest.raises(mcstore.CorruptTree):
        _append(tree)
    assert not list(tmp_path.rglob("escaped*"))


def test_symlinked_folder_inside_the_tree_is_refused(tree, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    tail = Path(tree) / "tail"
    for f in tail.iterdir():
        (outside / f.name).write_bytes(f.read_bytes())
        f.unlink()
    tail.rmdir()
    tail.symlink_to(outside)
    before = sorted(p.name for p in outside.iterdir())
    with pytest.raises(mcstore.CorruptTree, match="tail"):
        _append(tree)
    assert sorted(p.name for p in outside.iterdir()) == before


# ---------------------------------------------------------------- 2. memory and hangs
def test_head_hint_pointing_at_a_device_or_fifo(tree):
    head = Path(tree) / "log" / "head"
    head.unlink()
    head.symlink_to("/dev/zero")
    with pytest.raises(mcstore.CorruptTree, match="log/head"):
        mcstore.open(tree)
    head.unlink()
    os.mkfifo(head)
    done = []
    th = threading.Thread(target=lambda: done.append(_try_open(tree)), daemon=True)
    th.start()
    th.join(10)
    assert done and isinstance(done[0], mcstore.CorruptTree), done


def _try_open(url):
    try:
        mcstore.open(url)
    except Exception as e:
        return e
    return None


def test_counts_beyond_what_the_tree_allows(tree):
    _rewrite_record(tree, _head(tree), lambda r: r.update(nseg=r["nseg"] + 128_000_000_000))
    with pytest.raises(mcstore.CorruptTree, match="nseg"):
        mcstore.open(tree).segments()


@pytest.mark.parametrize("field,value", [("dim", 2**31), ("epoch", 2**40), ("block", 3)])
def test_root_facts_out_of_bounds(tree, field, value):
    p = Path(tree) / "zarr.json"
    meta = json.loads(p.read_text())
    meta["attributes"]["megacontext"][field] = value
    p.write_text(json.dumps(meta))
    with pytest.raises(mcstore.CorruptTree, match=r"zarr\.json"):
        mcstore.open(tree)


def test_root_bit_flip_is_caught(tree):
    p = Path(tree) / "zarr.json"
    meta = json.loads(p.read_text())
    meta["attributes"]["megacontext"]["epoch"] = E * 2  # a valid value, but not this tree's
    p.write_text(json.dumps(meta))
    with pytest.raises(mcstore.CorruptTree, match=r"zarr\.json"):
        mcstore.open(tree)


def test_npz_bomb_is_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.npy", b"\0" * (64 * 2**20))
    raw = buf.getvalue()
    assert len(raw) < 2**20
    with pytest.raises(ValueError, match="inflate"):
        mcstore.load_npz(raw, max_bytes=2**20)


# ---------------------------------------------------------------- 3. silent rollback
@pytest.mark.parametrize("gone", [2, 3])
def test_a_deleted_record_in_the_middle_is_damage(tmp_path, gone):
    url = str(tmp_path / "g.mc")
    t = mcstore.create(url, dim=DIM, block=B, epoch=E)
    for i in range(12):
        t.append(np.arange(5) + i, gister=gister, source=f"s{i}")
    (Path(url) / "log" / "head").unlink()  # no hint: the head must be found by probing
    os.unlink(Path(url) / F.log_key(gone))
    try:
        head = mcstore.open(url).version
    except mcstore.CorruptTree as e:  # the probe stopped at the gap: a later record says so
        assert "missing" in str(e)
    else:  # the probe stepped over the gap: the true head, never an older one
        assert head == 13
        try:  # a write needs the records of the tail chain: damage there is reported
            v = mcstore.open(url, "a").append(np.arange(3), gister=gister, source="x")
        except mcstore.CorruptTree as e:
            assert mcstore.format.log_key(gone) in str(e)
        else:
            assert v == 14  # no version number is reused
    with pytest.raises(mcstore.CorruptTree, match="missing"):
        mcstore.open(url, version=gone)
    with pytest.raises(mcstore.CorruptTree, match="missing"):
        mcstore.verify(url)


def test_a_deleted_newest_record_is_damage(tree):
    os.unlink(Path(tree) / F.log_key(_head(tree)))
    with pytest.raises(mcstore.CorruptTree, match="log/head"):
        mcstore.open(tree)


def test_verify_reads_every_record(tree):
    v = _head(tree)
    os.unlink(Path(tree) / F.log_key(v - 1))
    with pytest.raises(mcstore.CorruptTree, match=F.log_key(v - 1)):
        mcstore.verify(tree)


# ---------------------------------------------------------------- 4. lost PUT response
class LostResponse(BackendWrapper):
    """The commit PUT lands but its response is lost; the retry gets 412 (s3fs' retry)."""

    def __init__(self, inner):
        super().__init__(inner)
        self.lost = 0

    def put_if_absent(self, rel, data):
        ok = self.inner.put_if_absent(rel, data)
        if ok and rel.startswith("log/0") and not self.lost:
            self.lost += 1
            return self.inner.put_if_absent(rel, data)  # the retry sees our own record
        return ok


def test_a_lost_commit_response_is_recognised_as_ours(backend):
    mk, so = backend
    url = mk("l.mc")
    mcstore.create(url, dim=DIM, block=B, epoch=E, storage_options=so)
    be = LostResponse(mcstore.backend_for(url, so))
    t = mcstore.open(be, "a")
    v = t.append(np.arange(10), gister=gister, source="a")
    assert be.lost == 1 and v == 2
    assert mcstore.open(url, storage_options=so).tokens().tolist() == list(range(10))


def test_a_real_conflict_is_still_a_conflict(backend):
    mk, so = backend
    url = mk("c.mc")
    mcstore.create(url, dim=DIM, block=B, epoch=E, storage_options=so)
    a, b = mcstore.open(url, "a", storage_options=so), mcstore.open(url, "a", storage_options=so)
    a.append(np.arange(3), gister=gister, source="a")
    with pytest.raises(mcstore.CommitConflict):
        b.append(np.arange(3), gister=gister, source="b")


# ---------------------------------------------------------------- 5. gc with a live writer
def test_gc_refuses_a_grace_that_could_rob_a_live_writer(tree):
    with pytest.raises(mcstore.InvalidArgument, match="live"):
        mcstore.gc(tree, grace=0)
    mcstore.gc(tree, grace=0, no_live_writers=True)  # explicit: nobody is writing


# ---------------------------------------------------------------- 6. verify sees what others see
def test_verify_checks_binding_objects_and_named_objects(backend):
    mk, so = backend
    url = mk("v.mc")
    t = mcstore.create(url, dim=DIM, block=B, epoch=E, binding={"x": 1}, storage_options=so)
    t.append(np.arange(40), gister=gister, source="a", objects={"idx": b"payload" * 10})
    mcstore.verify(url, storage_options=so)
    rec = t.snapshot.rec
    for key in (rec["binding"], rec["objects"], t.objects_map()["idx"]["path"]):
        good = t.backend.read(key)
        t.backend.write(key, good[:-3] + b"zzz")
        with pytest.raises(mcstore.CorruptTree, match=key.split("/")[0]):
            mcstore.verify(url, storage_options=so)
        t.backend.write(key, good)
    mcstore.verify(url, storage_options=so)
