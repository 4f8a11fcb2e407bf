"""gc racing a writer that resumes a crashed one (issue 22, item 1).

A writer crashes after its complete shards and before its record; much later the same input is
appended again (an ingest resume): put-if-absent finds the old shards with identical bytes and
adopts them. Their age no longer proves them abandoned, so gc must not delete them: the
adopting writer re-stamps them (their age counts from the adoption), gc re-finds the head and
re-checks each candidate's age after its listing, and the writer checks after its commit that
what it adopted is still there. Each step is driven deterministically through
``mcstore.testing.GateBackend``, and the whole race runs with real processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import mcstore
from mcstore.testing import GateBackend
from tests.store._gc_racer import NOW, B, E, age, base_tokens, crash, resumed_tokens
from tests.store.helpers import DIM, gister

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _tree(tmp_path, name="t.mc") -> str:
    url = str(tmp_path / name)
    t = mcstore.create(url, dim=DIM, block=B, epoch=E)
    t.append(base_tokens(), gister=gister, source="base")
    return url


def _intact(url: str) -> None:
    """The resumed append is there, whole: every row readable and every checksum right."""
    mcstore.verify(url)
    t = mcstore.open(url)
    want = np.concatenate([base_tokens(), resumed_tokens()])
    assert np.array_equal(t.tokens(), want)
    assert [s.source for s in t.segments()] == ["base", "resumed"]


def _resume(url_or_be) -> int:
    t = mcstore.open(url_or_be, "a")
    return t.append(resumed_tokens(), gister=gister, source="resumed", now=NOW)


def _gc_in_thread(be, out: list) -> threading.Thread:
    th = threading.Thread(target=lambda: out.append(mcstore.gc(be, grace=3600.0)))
    th.start()
    return th


def _gc_held_before_delete(url: str):
    """A gc of ``url`` in a thread, held at the gate just before its first delete (it has
    looked at every candidate): -> (gate, its report list, the thread)."""
    gate = GateBackend(mcstore.backend_for(url), lambda op, _t: op == "delete")
    out: list = []
    th = _gc_in_thread(gate, out)
    gate.wait()
    return gate, out, th


def _adopted(url: str) -> list[str]:
    """The crashed writer's shards (the resumed writer adopts these)."""
    return sorted(str(p.relative_to(url)) for p in Path(url).glob("arrays/*/c/*") if p.is_file())


def test_gc_paused_after_its_listing_spares_what_a_resumed_writer_committed(tmp_path):
    """gc lists (the adopted shards are old and unreachable), a writer adopts them and
    commits, then gc deletes: it must re-find the head and see them reachable."""
    url = _tree(tmp_path)
    crash(url)
    assert _adopted(url)
    gate = GateBackend(mcstore.backend_for(url), lambda op, _t: op == "walk", after=True)
    out: list = []
    th = _gc_in_thread(gate, out)
    gate.wait()  # gc has listed the tree
    _resume(url)
    gate.release()
    th.join()
    _intact(url)
    assert not [p for p in out[0].removed if p.startswith("arrays/")]


@pytest.mark.parametrize("how", ["adopted", "written-ahead"])
def test_a_writer_paused_before_its_record_keeps_what_it_adopted(tmp_path, how):
    """A writer adopts old shards (or commits shards written ahead long ago) and has not yet
    written its record when a whole gc runs: the shards must look young to that gc."""
    url = _tree(tmp_path)
    if how == "adopted":
        crash(url)
        written = None
    else:  # bulk ingest: shards written ahead, committed much later
        t = mcstore.open(url, "a")
        rows = resumed_tokens()
        first = len(base_tokens())
        assert first % E == 0
        written = t.write_ahead("tokens", first // E, rows[: len(rows) // E * E])
        assert written
        age(url)
    gate = GateBackend(
        mcstore.backend_for(url),
        lambda op, t: op == "put_if_absent" and str(t).startswith("log/0"),
    )
    res: list = []
    w = threading.Thread(
        target=lambda: res.append(
            mcstore.open(gate, "a").append(
                resumed_tokens(), gister=gister, source="resumed", now=NOW, written=written
            )
        )
    )
    w.start()
    gate.wait()  # shards adopted or checked, record not yet written
    rep = mcstore.gc(url, grace=3600.0)
    gate.release()
    w.join()
    assert res, "the writer failed"
    _intact(url)
    assert not [p for p in rep.removed if p.startswith("arrays/")]


def test_a_writer_rewrites_adopted_shards_a_gc_deleted_under_its_commit(tmp_path):
    """The narrowest order: gc judged the adopted shards old before the writer re-stamped
    them and deletes them after its record landed; the writer's check after its commit
    finds them missing and writes them again (it holds their bytes)."""
    url = _tree(tmp_path)
    crash(url)
    adopted = _adopted(url)
    gc_gate, out, th = _gc_held_before_delete(url)  # gc has decided what to delete
    w_gate = GateBackend(
        mcstore.backend_for(url),
        lambda op, t: op == "put_if_absent" and str(t).startswith("log/0"),
        after=True,
    )
    res: list = []
    w = threading.Thread(target=lambda: res.append(_resume(w_gate)))
    w.start()
    w_gate.wait()  # the record landed; the writer has not checked its shards yet
    gc_gate.release()
    th.join()
    # gc deleted them; its look at the head after deleting already saw the record and wrote
    # them back (the writer's own check is the defence if gc dies in between)
    staged = set(adopted) & (set(out[0].removed) | set(out[0].restored))
    assert staged, "the race did not happen as staged"
    w_gate.release()
    w.join()
    assert res, "the writer failed"
    _intact(url)


def test_a_writer_rewrites_the_adopted_metadata_of_an_array_whose_shards_it_wrote_anew(tmp_path):
    """The order the real-process race found: gc judged a crashed writer's zarr.json and
    shards old; the resumed writer re-stamps the zarr.json (adopts it) and only then does gc
    delete it and the shards. The writer writes the shards anew (nothing adopted among them),
    but its check after the commit must still bring back the zarr.json it had adopted."""
    url = _tree(tmp_path)
    before = set(Path(url).glob("arrays/*/zarr.json"))
    crash(url)
    new_meta = set(Path(url).glob("arrays/*/zarr.json")) - before  # arrays only the crash began
    gc_gate, _, th = _gc_held_before_delete(url)  # gc has decided what to delete
    w_gate = GateBackend(
        mcstore.backend_for(url),
        lambda op, t: op == "put_if_absent" and "/c/" in str(t),  # metadata re-stamped
    )
    res: list = []
    w = threading.Thread(target=lambda: res.append(_resume(w_gate)))
    w.start()
    w_gate.wait()
    gc_gate.release()
    th.join()  # gc deleted the metadata and shards; no commit reached them yet
    gone = [m for m in new_meta if not m.exists()]
    assert gone, "the race did not happen as staged"
    w_gate.release()
    w.join()
    assert res, "the writer failed"
    _intact(url)


# ---------------------------------------------------------------- real processes
RUNS = 50


def _spawn(mode: str) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-m", "tests.store._gc_racer", mode],
        cwd=ROOT,
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert p.stdout.readline().strip() == "ready", p.stderr.read()[-2000:]
    return p


def _ask(p: subprocess.Popen, line: str) -> None:
    p.stdin.write(line + "\n")
    p.stdin.flush()


def _answer(p: subprocess.Popen) -> str:
    got = p.stdout.readline().strip()
    assert got, p.stderr.read()[-2000:]
    return got


def test_gc_writes_back_what_a_writer_committed_between_its_look_and_its_delete(tmp_path):
    """The order the writer's own check cannot see: gc has looked at the adopted shards (old)
    and waits just before deleting them; meanwhile the writer re-stamps them, commits and
    checks that they are there. gc then deletes them, finds the head again, sees the commit
    reach them and writes them back from the bytes it read before deleting."""
    url = _tree(tmp_path)
    crash(url)
    adopted = _adopted(url)
    gate, out, th = _gc_held_before_delete(url)  # gc judged the shards old
    _resume(url)  # adopts, re-stamps, commits, checks: everything still there
    gate.release()
    th.join()
    rep = out[0]
    # the batch held at the gate was deleted and written back; later batches saw the shards
    # re-stamped and kept them young
    assert rep.restored and all(p.startswith("arrays/") for p in rep.restored)
    assert not set(adopted) & set(rep.removed)
    _intact(url)


@pytest.mark.slow  # about 30 s: RUNS races of two real processes, every tree verified
def test_real_processes_resumed_writer_and_gc_race(tmp_path):
    """RUNS times: a crashed writer's shards (2 h old), then a writer process resuming the
    same append and a gc process, the gc started at a random moment around the writer's
    commit (aimed from how long the previous runs took: before it adopts the old shards,
    while it commits, or after). Every tree must verify and hold the append afterwards."""
    template = _tree(tmp_path, "template.mc")
    crash(template)
    writer, collector = _spawn("writer"), _spawn("gc")
    rng = np.random.default_rng(22)
    damaged, removed_shards = [], 0
    gc_first = gc_saw_restamped = 0  # runs where gc removed the old shards / kept them young
    w_secs, g_secs = [0.25], [0.08]  # how long each took, to aim the next run's gc start
    try:
        for i in range(RUNS):
            url = str(tmp_path / f"r{i}.mc")
            shutil.copytree(template, url)
            age(url)
            # aim gc's listing just before the writer's commit, give or take the noise
            w_s, g_s = float(np.median(w_secs[-9:])), float(np.median(g_secs[-9:]))
            g_delay = max(0.0, w_s * rng.uniform(0.6, 1.05) - 0.7 * g_s)
            _ask(writer, f"{url} 0")
            _ask(collector, f"{url} {g_delay:.4f}")
            w_out, g_out = _answer(writer), _answer(collector)
            assert w_out.startswith("ok"), w_out
            assert g_out.startswith("ok"), g_out
            removed_shards += int(g_out.split()[1])
            gc_first += int(g_out.split()[1]) > 0
            gc_saw_restamped += int(g_out.split()[3]) > 0
            w_secs.append(float(w_out.split()[2]))
            g_secs.append(float(g_out.split()[2]))
            try:
                _intact(url)
            except (mcstore.StoreError, AssertionError) as e:
                damaged.append((i, round(g_delay, 4), str(e)[:160]))
    finally:
        for p in (writer, collector):
            p.stdin.close()
            p.wait(timeout=30)
    print(
        f"gc race: {RUNS} runs, {len(damaged)} damaged; gc removed the old shards first in "
        f"{gc_first} (the writer wrote them anew), kept re-stamped ones young in "
        f"{gc_saw_restamped}"
    )
    assert not damaged, damaged
