"""Crash safety (SIGKILL at random points) and racing writers."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import mcstore
from tests.store._appender import B, E, crash_tokens, race_tokens
from tests.store.helpers import DIM, check_tree, gister

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _expected(head: int, mine: dict[int, np.ndarray]):
    toks, segs = [np.zeros(0, np.int32)], []
    pos = 0
    for v in range(2, head + 1):
        t = mine[v] if v in mine else crash_tokens(v)
        src = "parent" if v in mine else f"child{v}"
        segs.append((pos, pos + len(t), src))
        pos += len(t)
        toks.append(t)
    return np.concatenate(toks), segs


def test_sigkill_at_random_points(tmp_path):
    url = str(tmp_path / "crash.mc")
    mcstore.create(url, dim=DIM, block=B, epoch=E)
    rnd = random.Random(7)
    mine: dict[int, np.ndarray] = {}
    kills = 0
    for i in range(20):
        p = subprocess.Popen(
            [sys.executable, "-m", "tests.store._appender", url, "crash"],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # startup (imports) takes 0.3-1 s depending on load: kill at a random point after it
        assert p.stdout.readline().strip() == b"ready", p.stderr.read().decode()[-2000:]
        time.sleep(rnd.uniform(0.0, 0.5))  # appends land every few ms
        p.send_signal(signal.SIGKILL)
        out, err = p.communicate()
        assert p.returncode == -signal.SIGKILL, err.decode()[-2000:]
        kills += 1
        t = mcstore.open(url, "a")
        committed = [int(x) for x in out.split()]
        if committed:
            assert t.version >= committed[-1]
        toks, segs = _expected(t.version, mine)
        check_tree(t, toks, segs, B)  # bit-exact, every level, no zeros
        if i % 3 == 0:  # a different writer continues after the crash (orphan shards!)
            extra = np.full(rnd.choice([5, 64, 130]), 40_001 + i, np.int32)
            v = t.append(extra, gister=gister, source="parent")
            mine[v] = extra
            toks, segs = _expected(v, mine)
            check_tree(mcstore.open(url), toks, segs, B)
    assert kills == 20
    t = mcstore.open(url)
    assert t.version > 10  # the children made progress between kills
    mcstore.verify(url)
    rep = mcstore.gc(url, grace=0, no_live_writers=True)
    check_tree(mcstore.open(url), *_expected(t.version, mine), B)
    # only debris goes: temp files of killed writers, never a record or a ref
    assert all(
        p.rsplit("/", 1)[-1].startswith(".tmp-")
        for p in rep.removed
        if p.startswith(("log/", "refs/"))
    )


def _check_race(url, writers, n, so=None):
    t = mcstore.open(url, storage_options=so)
    segs = t.segments()
    assert len(segs) == writers * n
    for w in range(writers):
        mine = [s for s in segs if s.source.startswith(f"w{w}-")]
        assert [s.source for s in mine] == [f"w{w}-{i}" for i in range(n)]  # order kept
        for i, s in enumerate(mine):
            assert np.array_equal(t.tokens(s.start, s.stop), race_tokens(w, i))
    check_tree(t, t.tokens(), [(s.start, s.stop, s.source) for s in segs], B)
    assert t.version == 1 + writers * n  # exactly one winner per version


def test_two_processes_race(tmp_path):
    url = str(tmp_path / "race.mc")
    mcstore.create(url, dim=DIM, block=B, epoch=E)
    n = 12
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.store._appender", url, "race", str(w), str(n)],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for w in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_o, e) in zip(procs, outs, strict=True):
        assert p.returncode == 0, e.decode()[-2000:]
    _check_race(url, 2, n)


@pytest.mark.parametrize("kind", ["memory", "s3", "seaweed"])
def test_threads_race(kind, backend_for):
    url, so = backend_for(kind)
    mcstore.create(url, dim=DIM, block=B, epoch=E, storage_options=so)
    n, conflicts = 8, []

    def run(w):
        t = mcstore.open(url, "a", storage_options=so)
        c = 0
        for i in range(n):
            while True:
                try:
                    t.append(race_tokens(w, i), gister=gister, source=f"w{w}-{i}")
                    break
                except mcstore.CommitConflict:
                    c += 1
                    t.refresh()
        conflicts.append(c)

    ths = [threading.Thread(target=run, args=(w,)) for w in range(3)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    _check_race(url, 3, n, so)


def test_orphan_shard_at_canonical_name_is_shadowed(tmp_path):
    """A crashed writer left a different, uncommitted shard where ours must go."""
    url = str(tmp_path / "o.mc")
    t = mcstore.create(url, dim=DIM, block=B, epoch=E)
    t.append(np.arange(50), gister=gister, source="a")
    spec = t.geo.spec("tokens")
    from mcstore import format as F

    junk = F.encode_shard(spec, np.full(E, 7, np.int32))
    t.backend.write(spec.chunk_key(0), junk)  # as if a killed writer had put it
    toks = np.arange(50, 50 + 40, dtype=np.int32)
    v = t.append(toks, gister=gister, source="b")
    assert "tokens/0" in t.records(v, v)[0].rec.get("override", {})
    want = np.concatenate([np.arange(50), toks]).astype(np.int32)
    r = mcstore.open(url)
    check_tree(r, want, [(0, 50, "a"), (50, 90, "b")], B)
    # the writer repaired the canonical shard after its commit; the next commit drops the override
    assert t.backend.read(spec.chunk_key(0)) != junk
    v2 = t.append([1, 2], gister=gister, source="c")
    assert "override" not in t.records(v2, v2)[0].rec
    assert np.array_equal(mcstore.open(url).tokens(0, 90), want)
    assert np.array_equal(mcstore.open(url, version=v).tokens(0, 90), want)
