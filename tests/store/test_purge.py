"""Redaction and purge (issue 24): rows rewritten in place read back at every later version,
older versions keep theirs until a purge, and after the purge no object under the tree holds
the old tokens, their gists or a named object's old bytes; a purge killed at any of its changes
leaves a tree that verifies, and a rerun finishes it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mcstore
from mcstore.testing import KillAfter, LoggingBackend, find_bytes
from tests.store.helpers import DIM, expected_gists, gister

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
B, E = 4, 64
SECRET = np.arange(901, 917, dtype=np.int32)  # 16 tokens no filler holds
FILL = np.full(len(SECRET), 7, np.int32)


def filler(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 800, n).astype(np.int32)


def build(url, so=None, *, secret_at: int = 150, step: int = 40) -> tuple[np.ndarray, int]:
    """A tree with SECRET at token ``secret_at`` (inside a complete shard by default), a named
    object holding its bytes, a version per ``step`` tokens; then the redaction. -> (tokens
    after, version of the redaction)."""
    t = mcstore.create(url, dim=DIM, block=B, epoch=E, storage_options=so)
    toks = np.concatenate([filler(secret_at, 1), SECRET, filler(300 - secret_at, 2)])
    for i in range(0, len(toks), step):
        t.append(toks[i : i + step], gister=gister, source=f"part{i}")
    t.commit_objects({"notes": SECRET.tobytes()}, message="notes")
    t.tag("before-forget")
    v = t.redact([(secret_at, FILL)], gister=gister, objects={"notes": b"clean"}, message="forget")
    after = toks.copy()
    after[secret_at : secret_at + len(SECRET)] = FILL
    t.append(filler(50, 3), gister=gister, source="later")
    return np.concatenate([after, filler(50, 3)]), v


def needles(secret_at: int = 150) -> dict[str, bytes]:
    """The secret's tokens, and the old gists of every node that covered them."""
    toks = np.concatenate([filler(secret_at, 1), SECRET, filler(300 - secret_at, 2)])
    after = toks.copy()
    after[secret_at : secret_at + len(SECRET)] = FILL
    out = {"tokens": SECRET.tobytes()}
    old, new = expected_gists(toks, B), expected_gists(after, B)
    for lv in old:
        for i in range(len(old[lv])):
            if not np.array_equal(old[lv][i], new[lv][i]):
                out[f"gist {lv}/{i}"] = old[lv][i].astype("<f2").tobytes()
    return out


def check_head(url, want, so=None):
    t = mcstore.open(url, "r", storage_options=so)
    assert np.array_equal(t.tokens(0, t.length), want)
    exp = expected_gists(want, B)
    for lv, g in exp.items():
        assert np.array_equal(t.gists(lv, 0, len(g)), g), lv
    assert t.read_object("notes") == b"clean"
    mcstore.verify(url, storage_options=so)


@pytest.mark.parametrize("secret_at", [150, 300])  # in a complete shard / in the tail
def test_redaction_reads_at_head_and_later_old_versions_unchanged(tmp_path, secret_at):
    url = str(tmp_path / "r.mc")
    want, v = build(url, secret_at=secret_at)
    check_head(url, want)
    before = mcstore.open(url, "r", version=v - 1)
    assert SECRET.tobytes() in before.tokens(0, before.length).tobytes()
    assert mcstore.open(url, "r").snapshot.redacted == v


@pytest.mark.parametrize("kind", ["memory", "local", "s3"])
def test_purge_leaves_no_byte_of_the_old_rows(backend_for, kind):
    url, so = backend_for(kind)
    want, v = build(url, so)
    be = mcstore.backend_for(url, so)
    assert {n for _, n in find_bytes(be, needles())} == set(needles())  # all there before
    with pytest.raises(mcstore.PurgeRefused, match="before-forget"):
        mcstore.purge(url, storage_options=so)  # a tag names a version that holds it
    rep = mcstore.purge(url, storage_options=so, drop_tags=True, grace=0, no_live_writers=True)
    assert rep.expired == list(range(1, v)) and rep.tags_dropped == {"before-forget": v - 1}
    assert find_bytes(be, needles()) == []
    check_head(url, want, so)
    with pytest.raises(mcstore.VersionNotFound, match="expired"):
        mcstore.open(url, "r", version=v - 1, storage_options=so)
    again = mcstore.purge(url, storage_options=so, grace=0, no_live_writers=True)
    assert again.expired == [] and again.gc.removed == []  # nothing left to do


def test_purge_refuses_a_fork_made_before_and_keeps_one_made_after(tmp_path):
    url = str(tmp_path / "p.mc")
    want, v = build(url)
    early = mcstore.fork(url, str(tmp_path / "early.mc"), version=v - 1)
    with pytest.raises(mcstore.PurgeRefused, match=r"early\.mc"):
        mcstore.purge(url, drop_tags=True)
    assert mcstore.open(url, "r", version=v - 1).length  # refused before any change
    mcstore.destroy(early.url)  # its pin stays, but protects nothing now
    late = mcstore.fork(url, str(tmp_path / "late.mc"))
    mcstore.purge(url, drop_tags=True, grace=0, no_live_writers=True)
    assert find_bytes(mcstore.backend_for(url), needles()) == []
    f = mcstore.open(late.url, "r")
    assert np.array_equal(f.tokens(0, f.length), want)  # the fork read the redacted copies
    mcstore.verify(late.url)


def _requests(url) -> tuple[int, int]:
    """(changes, requests of any kind) a whole purge of ``url`` makes."""
    log = LoggingBackend(mcstore.backend_for(url))
    mcstore.purge(log, drop_tags=True, grace=0, no_live_writers=True)
    return sum(c.op in KillAfter.CHANGES for c in log.calls), len(log.calls)


def test_purge_killed_at_every_change_leaves_a_tree_that_verifies(tmp_path):
    template = tmp_path / "template.mc"
    want, _ = build(str(template), step=2)  # ~180 versions: gc deletes in several batches
    probe = tmp_path / "probe.mc"
    shutil.copytree(template, probe)
    changes, requests = _requests(str(probe))
    # at every change, before and after it; and at 16 requests spread over the whole run
    points = [(k, w, "changes") for k in range(1, changes + 1) for w in ("before", "after")]
    points += [(k, "before", "any") for k in np.linspace(1, requests, 16).astype(int)]
    assert len(points) >= 20, points
    kills = 0
    for i, (k, when, what) in enumerate(points):
        url = tmp_path / f"k{i}.mc"
        shutil.copytree(template, url)
        p = subprocess.run(
            [sys.executable, "-m", "tests.store._purger", str(url), str(k), when, what],
            cwd=ROOT, env=ENV, capture_output=True, timeout=120,
        )  # fmt: skip
        assert p.returncode == -9, p.stderr.decode()[-2000:]
        kills += 1
        check_head(str(url), want)  # never a broken tree, whatever the point
        # a rerun with the default grace: what the killed run left must still count as
        # reached by a purged version (records go last), not as young debris
        mcstore.purge(str(url), drop_tags=True)
        assert find_bytes(mcstore.backend_for(str(url)), needles()) == []
        check_head(str(url), want)
        shutil.rmtree(url)
    assert kills >= 20


def test_purge_deletes_the_records_last(tmp_path):
    """A purge killed after deleting a record but before what it reaches would leave that
    object to the grace of ordinary debris: the rerun finds what to delete from the records."""
    url = str(tmp_path / "o.mc")
    build(url, step=2)
    log = LoggingBackend(mcstore.backend_for(url))
    mcstore.purge(log, drop_tags=True, grace=0, no_live_writers=True)
    deleted = [p for c in log.calls if c.op == "delete" for p in c.target]
    records = [i for i, p in enumerate(deleted) if p.startswith("log/")]
    others = [i for i, p in enumerate(deleted) if not p.startswith(("log/", "refs/"))]
    assert records and others and max(others) < min(records)
