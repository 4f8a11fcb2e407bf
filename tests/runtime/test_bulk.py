"""Bulk ingest on a Dask LocalCluster (2 worker processes, tiny model): the tree equals a serial
ingest of the same inputs (tokens, segments, index chunks bit for bit, gists within fp16
rounding and in practice exactly), on local disk and on S3 (moto), with one commit per batch
of chunks (``commit_every_epochs``; the log then differs) or one per chunk (the serial log bit
for bit); every complete shard is written by a worker and none by the committer; a worker
killed mid-run is recomputed; a client killed mid-run keeps its committed batches and a re-run
finishes; `mc ingest --dask` drives it."""

from __future__ import annotations

import io
import itertools
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import torch

import mcmodels
import mcstore
from mcruntime import Session, SessionConfig
from mcruntime.bulk import BulkConfig, ModelSpec, bulk_ingest, dask_client, serial_calls
from mcruntime.bulk.tasks import PLUGIN
from mcruntime.errors import InputError
from mcruntime.ingest import ingest_inputs, scan
from tests.cli.helpers import ROOT, TINY, mc_env, run_mc
from tests.store.conftest import BUCKET, moto_server  # noqa: F401

CHUNK = 3000  # tokens per chunk: files of several chunks, chunks across epochs (8192)
EPOCH = 8192  # the tiny model's trees: tokens per epoch (one shard of tokens)
# batches of two epochs: three commits over the corpus's five epochs
BATCHED = BulkConfig(chunk_tokens=CHUNK, commit_every_epochs=2)
PER_CHUNK = BulkConfig(chunk_tokens=CHUNK, commit_every_epochs=1)  # the serial ingest's commits
SPEC = ModelSpec(model="tiny", threads=1)
WORDS = "river stone cloud amber quiet ledger violet harbor copper lantern meadow tundra".split()


def prose(n_words: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + ("." if rng.random() < 0.1 else "") for _ in range(n_words))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """~43 KB of text (five epochs of the tiny model's byte tokens): small files, files of
    several chunks, the same text twice under two names, a binary file."""
    root = tmp_path_factory.mktemp("corpus")
    sizes = [300, 2000, 40, 900, 700, 2400, 150]
    for i, n in enumerate(sizes):
        (root / f"f{i}.txt").write_text(prose(n, i))
    (root / "g_copy.txt").write_text(prose(700, 4))  # f4's text under another name
    (root / "image.bin").write_bytes(b"\x00\x01" * 64)
    found = scan([str(root)])
    assert len(found.inputs) == 8 and len(found.skipped) == 1
    return found.inputs


@pytest.fixture(scope="module")
def cluster():
    with dask_client("local:2") as client:  # 2 single-threaded worker processes on 127.0.0.1
        yield client


@pytest.fixture(scope="module")
def serial(corpus, tmp_path_factory):
    """The reference: the serial ingest of the corpus on the tiny model."""
    torch.set_num_threads(1)
    base = mcmodels.load_base("tiny")
    gistnet = mcmodels.pick_gistnet(base, untrained_ok=True)  # what a worker picks
    url = str(tmp_path_factory.mktemp("serial") / "s.mc")
    with Session(url, model=base, gistnet=gistnet, window=512, config=SessionConfig()) as s:
        ingest_inputs(s, corpus, chunk_tokens=CHUNK)
    return state(url)


def batch_ends(segments: list, every: int) -> list[int]:
    """Where a fresh run's batches of ``every`` epochs end: at the first segment reaching the
    next multiple of ``every`` epochs after the batch's start, and at the end."""
    ends, old, span = [], 0, every * EPOCH
    for _, stop, _, _ in segments:
        if stop // span > old // span:
            ends.append(stop)
            old = stop
    if not ends or ends[-1] != segments[-1][1]:
        ends.append(segments[-1][1])
    return ends


def state(url, storage_options=None) -> dict:
    t = mcstore.open(url, storage_options=storage_options)
    gists = {lv: t.gists(lv) for lv in range(1, t.num_levels) if t.num_nodes(lv)}
    objects = {n: t.read_object(n) for n in t.objects()}
    return {
        "tokens": t.tokens(),
        "segments": [(s.start, s.stop, s.source, s.tags) for s in t.segments()],
        "gists": gists,
        "objects": objects,
        "log": [e.message for e in t.log()][::-1],
        "lengths": [e.length for e in t.log()][::-1],
        "binding": t.binding,
    }


def assert_same(got: dict, want: dict, *, log: bool = True) -> None:
    assert np.array_equal(got["tokens"], want["tokens"])
    assert got["segments"] == want["segments"]
    assert got["binding"] == want["binding"]
    assert sorted(got["objects"]) == sorted(want["objects"])
    for name, data in want["objects"].items():
        assert got["objects"][name] == data, name  # BM25 chunks bit for bit
    assert sorted(got["gists"]) == sorted(want["gists"])
    for lv, g in want["gists"].items():
        np.testing.assert_allclose(got["gists"][lv].astype(np.float32), g.astype(np.float32),
                                   atol=2e-3, rtol=2e-3)  # fmt: skip
        # deterministic batches: on this machine every gist is the serial one bit for bit
        assert np.array_equal(got["gists"][lv].view(np.uint16), g.view(np.uint16)), lv
    if log:
        assert got["log"] == want["log"]


def test_serial_calls_are_the_serial_gisters_batches():
    assert serial_calls(0, 300 * 32, 32) == [(0, 256), (256, 300)]
    assert serial_calls(31, 33, 32) == [(0, 1)]
    assert serial_calls(40, 60, 32) == []


def test_batches_end_at_the_first_chunk_reaching_a_multiple_of_the_epochs(tmp_path):
    """The plan alone (no cluster): a batch of two epochs ends at the first chunk reaching the
    next multiple of 16384 tokens (a chunk may cross several), and at the end; its chunks share
    one time (the commit's and its nodes'), later batches later ones."""
    from mcruntime.bulk.config import BulkReport
    from mcruntime.bulk.plan import Append, Planner

    tree = mcstore.create(str(tmp_path / "t.mc"), dim=8, epoch=EPOCH)

    def planned(every: int) -> list[Append]:
        cfg = BulkConfig(chunk_tokens=6000, commit_every_epochs=every, worker_shards=False)
        plan = Planner(None, tree, SPEC, cfg, None, BulkReport())
        for i, n in enumerate([40000, 5000, 5000, 100]):  # 7 chunks + 1 + 1 + 1
            ids = np.full(n, i, np.int32)
            plan.plan({"ids": ids, "sha": f"{i:064x}", "name": f"f{i}"}, 0, n)
        plan.close_batch()
        return [x for x in plan.pending if isinstance(x, Append)]

    aps = planned(2)
    ends = [ap.new for ap in aps if ap.closes]
    # chunks end at 6000, 12000, 18000 (closes), ..., 36000 (closes), 40000, 45000, 50000
    # (closes: 49152 = 6 epochs), 50100 (the end)
    assert ends == [18000, 36000, 50000, 50100]
    nows = [ap.now for ap in aps]
    assert nows == sorted(nows) and len(set(nows)) == 4
    for ap, nxt in itertools.pairwise(aps):
        assert (nxt.now == ap.now) == (not ap.closes)
    aps = planned(1)  # per chunk: each its own commit and time
    assert all(ap.closes for ap in aps) and len({ap.now for ap in aps}) == len(aps) == 10


def test_a_negative_batch_is_refused():
    with pytest.raises(InputError, match="commit_every_epochs"):
        bulk_ingest("x.mc", [], None, config=BulkConfig(commit_every_epochs=-1))


def test_bulk_equals_serial_on_local_disk(cluster, corpus, serial, tmp_path):
    """The default: the whole corpus (five epochs, fewer than ``commit_every_epochs``) in one
    commit of all its segments and key chunks."""
    url = str(tmp_path / "b.mc")
    seen: list[int] = []
    rep = bulk_ingest(url, corpus, cluster, model=SPEC, config=BulkConfig(chunk_tokens=CHUNK),
                      on_progress=seen.append)  # fmt: skip
    assert rep.created and rep.workers == 2
    assert rep.files == 7 and rep.skipped_done == 1 and rep.inputs_done == 8
    assert rep.epoch_tasks >= 5 and rep.upper_tasks >= 10
    assert rep.commits == 1 and rep.segments == len(serial["segments"]) and rep.index_commits == 0
    assert rep.index_chunks == len(serial["objects"]) >= 4  # in that one commit
    assert rep.upper_calls == rep.fallback_calls == 0  # every gist was computed ahead
    assert seen == sorted(seen) and seen[-1] == sum(i.size for i in corpus)
    got = state(url)
    assert_same(got, serial, log=False)
    segs = serial["segments"]
    msg = f"ingest {len(segs)} parts: {segs[0][2]} .. {segs[-1][2]}; retrieval index up to block "
    assert len(got["log"]) == 2 and got["log"][1].startswith(msg)
    plugins = cluster.run(lambda dask_worker: id(dask_worker.plugins[PLUGIN]))
    again = bulk_ingest(url, corpus, cluster, model=SPEC, config=BulkConfig(chunk_tokens=CHUNK))
    assert again.commits == 0 and again.skipped_done == 8 and not again.created
    assert again.version == rep.version
    # every worker holds the run's resources in its plugin, loaded once: the second run kept
    # the same plugin (and so the models) on each worker
    assert cluster.run(lambda dask_worker: id(dask_worker.plugins[PLUGIN])) == plugins
    models = cluster.run(lambda dask_worker: len(dask_worker.plugins[PLUGIN].models))
    assert set(models.values()) <= {0, 1} and sum(models.values()) >= 1


def test_per_chunk_commits_replay_the_serial_log(cluster, corpus, serial, tmp_path):
    """``commit_every_epochs=1``: one commit per chunk and one per epoch of key chunks, the
    serial ingest's log message for message."""
    url = str(tmp_path / "p.mc")
    rep = bulk_ingest(url, corpus, cluster, model=SPEC, config=PER_CHUNK)
    assert rep.commits == rep.segments == len(serial["segments"]) and rep.index_commits >= 4
    assert rep.upper_calls == rep.fallback_calls == 0
    assert_same(state(url), serial)  # the log included


def shard_objects(url, storage_options=None) -> list[str]:
    """The complete shards a tree holds (``arrays/<name>/c/<k>...``)."""
    be = mcstore.backend_for(url, storage_options)
    return [p for p, _, _ in be.walk("arrays") if "/c/" in p]


def expected_shards(url, storage_options=None) -> int:
    """How many complete shards a tree of this length has: tokens, and per level gists,
    gist versions, creation times and flags."""
    t = mcstore.open(url, storage_options=storage_options)
    n = t.length // t.epoch
    for lv in range(1, t.num_levels):
        n += 4 * (t.num_nodes(lv) // t.geo.level_shard_rows(lv))
    return n


def logged_bulk_ingest(url, inputs, client, storage_options=None):
    """A batched bulk ingest into a new tree whose committer's every request is logged."""
    from mcstore.testing import LoggingBackend

    # creates the tree, bound to the model (no inputs: no commit)
    bulk_ingest(url, [], client, model=SPEC, storage_options=storage_options)
    log = LoggingBackend(mcstore.backend_for(url, storage_options))
    tree = mcstore.open(log, "a")
    t0 = time.time_ns()
    rep = bulk_ingest(tree, inputs, client, model=SPEC, config=BATCHED)
    return rep, log, (t0, time.time_ns())


def assert_workers_wrote_the_shards(url, rep, log, clock, storage_options=None) -> None:
    """Each complete shard was written once, by a worker; the committer wrote none (its
    commits only checked their checksums) and its PUTs are tail deltas, records, head hints
    and key chunks; creation times are the run's, in commit order, one per batch."""
    n = expected_shards(url, storage_options)
    assert n >= 5 * 9  # five epochs: tokens, two levels of four arrays, and level 3's first
    assert len(shard_objects(url, storage_options)) == n
    assert rep.shards_written == n and rep.shard_errors == 0 and rep.shard_tasks == 5
    writes = [c.target for c in log.calls if c.op in ("put_if_absent", "write")]
    # the commit re-stamps each shard written ahead (its gc age restarts; S3: a copy onto
    # itself, no body sent), which is how it checks the shard is there
    restamps = [c.target for c in log.calls if c.op == "restamp"]
    assert writes and not [w for w in writes if "/c/" in w], "the committer wrote a shard"
    assert rep.io["puts"] == len(writes) + len(restamps)  # every committer PUT is in the log
    assert rep.worker_io["puts"] >= n  # the shards' PUTs are the workers'
    # per batch commit: a tail delta, a record, a head hint, an object map; and the key chunks
    assert rep.commits == 3 and rep.index_commits == 0
    assert len(writes) <= 4 * rep.commits + rep.index_chunks
    t = mcstore.open(url, storage_options=storage_options)
    for lv in range(1, t.num_levels):
        created = t.node_meta(lv)["created_at"]
        assert np.all(np.diff(created) >= 0) and clock[0] <= created.min() <= created.max()
        assert created.max() <= clock[1]
        assert len(np.unique(created)) <= rep.commits  # a batch's nodes share its time
    mcstore.verify(url, storage_options=storage_options)


def test_workers_write_every_shard_and_the_committer_none(cluster, corpus, serial, tmp_path):
    url = str(tmp_path / "l.mc")
    rep, log, clock = logged_bulk_ingest(url, corpus, cluster)
    assert_workers_wrote_the_shards(url, rep, log, clock)
    got = state(url)
    assert_same(got, serial, log=False)
    # three commits (and the creation), each ending where its batch of two epochs does
    assert got["lengths"][1:] == batch_ends(serial["segments"], 2)
    assert rep.upper_calls == rep.fallback_calls == 0


def test_workers_refused_by_the_store_leave_the_shards_to_the_commits(
    cluster, corpus, serial, tmp_path
):
    """A worker whose store writes fail: its shard tasks fail, and the commits write those
    shards themselves (nothing lost, the same tree)."""

    def refuse_writes(on: bool) -> None:  # runs in each worker process
        import mcstore as ms

        if on:
            ms.Tree.unrefused_write_ahead = ms.Tree.write_ahead

            def refuse(self, name, first, rows):
                raise ms.StoreAccessError(f"{self.url}: refused (test)")

            ms.Tree.write_ahead = refuse
        elif hasattr(ms.Tree, "unrefused_write_ahead"):
            ms.Tree.write_ahead = ms.Tree.unrefused_write_ahead

    url = str(tmp_path / "r.mc")
    cluster.run(refuse_writes, True)
    try:
        rep = bulk_ingest(url, corpus, cluster, model=SPEC, config=BATCHED)
    finally:
        cluster.run(refuse_writes, False)
    assert rep.shard_tasks == 5 and rep.shard_errors == 5 and rep.shards_written == 0
    assert len(shard_objects(url)) == expected_shards(url)  # the committer wrote them
    assert_same(state(url), serial, log=False)
    mcstore.verify(url)


def test_bulk_on_s3(cluster, corpus, serial, moto_server):  # noqa: F811
    so = moto_server["storage_options"]
    url = f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}/b.mc"
    rep, log, clock = logged_bulk_ingest(url, corpus, cluster, so)
    assert_workers_wrote_the_shards(url, rep, log, clock, so)
    got = state(url, so)
    assert_same(got, serial, log=False)
    assert got["lengths"][1:] == batch_ends(serial["segments"], 2)


KILLED_CLIENT = """
import os, signal, sys
from mcruntime.bulk import BulkConfig, ModelSpec, bulk_ingest, dask_client
from mcruntime.ingest import scan

url, folder, address, chunk = sys.argv[1:]


def die(_done):  # right after the first batch's commit, with the next batches' jobs in flight
    os.kill(os.getpid(), signal.SIGKILL)


with dask_client(address) as client:
    bulk_ingest(url, scan([folder]).inputs, client, model=ModelSpec(model="tiny", threads=1),
                config=BulkConfig(chunk_tokens=int(chunk), commit_every_epochs=2),
                on_progress=die)
"""


def test_client_process_killed_then_rerun(cluster, corpus, serial, tmp_path):
    """A real client process killed (SIGKILL) after its first batch's commit: the tree stays at
    that commit, with every segment of the batch; `mc ingest --dask` run again (one batch for
    the rest) ends with the serial ingest's tree."""
    url = str(tmp_path / "p.mc")
    folder = os.path.dirname(corpus[0].name)
    p = subprocess.run([sys.executable, "-c", KILLED_CLIENT, url, folder,
                        cluster.scheduler.address, str(CHUNK)],
                       cwd=ROOT, env=mc_env(), capture_output=True, timeout=180)  # fmt: skip
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()[-2000:]
    mid = state(url)
    first = batch_ends(serial["segments"], 2)[0]
    assert mid["lengths"] == [0, first] and 0 < first < len(serial["tokens"])
    assert mid["segments"] == [s for s in serial["segments"] if s[1] <= first]  # all of them
    assert np.array_equal(mid["tokens"], serial["tokens"][:first])
    r = run_mc(["ingest", url, folder, "--dask", cluster.scheduler.address,
                "--chunk-tokens", CHUNK, *TINY])  # fmt: skip
    assert r.code == 0, r.err
    assert "in 1 commit(s)" in r.out
    got = state(url)
    assert_same(got, serial, log=False)
    assert got["lengths"] == [0, first, len(serial["tokens"])]
    mcstore.verify(url)  # shards the dead run wrote ahead were reused or staged over


def test_hybrid_keys_equal_serial(cluster, corpus, tmp_path):
    """Dense keys (``--keys hybrid``) are made per epoch on the workers, as the serial index
    makes them (whole windows from block 0): equal up to fp16 rounding. Here the committer
    writes the shards (``worker_shards=False``)."""
    few = corpus[:4]
    base = mcmodels.load_base("tiny")
    gistnet = mcmodels.pick_gistnet(base, untrained_ok=True)
    url = str(tmp_path / "hs.mc")
    cfg = SessionConfig(retrieval="hybrid")
    with Session(url, model=base, gistnet=gistnet, window=512, config=cfg) as s:
        ingest_inputs(s, few, chunk_tokens=CHUNK)
    want = state(url)
    url = str(tmp_path / "hb.mc")
    # and the committer writes the shards (as for workers that cannot reach the tree)
    rep = bulk_ingest(url, few, cluster, model=SPEC,
                      config=BulkConfig(chunk_tokens=CHUNK, retrieval="hybrid",
                                        commit_every_epochs=2, worker_shards=False))  # fmt: skip
    assert rep.shard_tasks == rep.shards_written == 0 and not rep.worker_io
    assert len(shard_objects(url)) == expected_shards(url) > 0
    got = state(url)
    dense = [n for n in want["objects"] if "/dense-" in n]
    assert len(dense) >= 2 and sorted(got["objects"]) == sorted(want["objects"])
    for name in dense:
        a = np.load(io.BytesIO(got["objects"].pop(name)))["keys"].astype(np.float32)
        b = np.load(io.BytesIO(want["objects"].pop(name)))["keys"].astype(np.float32)
        np.testing.assert_allclose(a, b, atol=2e-3)
    assert_same(got, want, log=False)  # the rest bit for bit


def test_client_killed_mid_run_then_rerun(cluster, corpus, serial, tmp_path):
    """The client dies after its second batch's commit: both batches stay, whole; a re-run
    commits the rest and reuses what was written."""
    url = str(tmp_path / "k.mc")

    def die(_done: int) -> None:
        if mcstore.open(url).version == 3:
            raise KeyboardInterrupt  # the client dies after the second commit

    with pytest.raises(KeyboardInterrupt):
        bulk_ingest(url, corpus, cluster, model=SPEC, config=BATCHED, on_progress=die)
    mid = state(url)
    n = len(mid["tokens"])
    assert mid["lengths"] == [0, *batch_ends(serial["segments"], 2)[:2]]
    assert 0 < n < len(serial["tokens"])
    assert np.array_equal(mid["tokens"], serial["tokens"][:n])  # what was committed stays
    assert mid["segments"] == [s for s in serial["segments"] if s[1] <= n]
    rep = bulk_ingest(url, corpus, cluster, model=SPEC, config=BATCHED)
    assert rep.tokens == len(serial["tokens"]) - n and rep.commits == 1
    assert rep.fallback_calls == 0  # upper levels read the committed children from the tree
    # the first shard task reads the part of its shard committed before; a shard the dead
    # run wrote ahead holds the same tokens and gists (written) but other creation times
    # (the commit stages its own copy): the tree is whole either way
    assert rep.shard_errors == 0 and rep.shard_tasks == len(serial["tokens"]) // EPOCH - n // EPOCH
    assert len(shard_objects(url)) == expected_shards(url)
    mcstore.verify(url)
    assert_same(state(url), serial, log=False)


def test_concurrent_writer_gets_commit_conflict(cluster, corpus, serial, tmp_path):
    url = str(tmp_path / "c.mc")
    calls = []

    def other_writer(_done: int) -> None:
        calls.append(_done)
        if len(calls) == 3:  # another process commits between two of ours
            mcstore.open(url, "a").commit_objects({"note": b"someone else"})

    with pytest.raises(mcstore.CommitConflict):
        bulk_ingest(url, corpus, cluster, model=SPEC, config=BATCHED, on_progress=other_writer)
    bulk_ingest(url, corpus, cluster, model=SPEC, config=BATCHED)
    got = state(url)
    assert got["objects"].pop("note") == b"someone else"
    assert_same(got, serial, log=False)


def test_worker_killed_mid_run(cluster, corpus, serial, tmp_path):
    url = str(tmp_path / "w.mc")
    pids = cluster.run(os.getpid)  # worker address -> pid
    killed: list[str] = []

    def kill_busy(_done: int) -> None:
        if killed:
            return
        busy = [w for w, tasks in cluster.processing().items() if tasks]  # running or queued
        busy = busy or [w for w, keys in cluster.has_what().items() if keys]  # results held
        if not busy:
            return
        os.kill(pids[busy[0]], signal.SIGKILL)  # the nanny starts a new worker
        killed.append(busy[0])

    # small epochs of work in flight so that one is on the worker when it dies
    rep = bulk_ingest(url, corpus, cluster, model=SPEC,
                      config=BulkConfig(chunk_tokens=CHUNK, commit_every_epochs=2,
                                        jobs_ahead=128, tokenize_bytes=2000),
                      on_progress=kill_busy)  # fmt: skip
    assert killed, "no worker was busy to kill"
    assert killed[0] not in cluster.scheduler_info()["workers"]  # it died; its work was redone
    assert_same(state(url), serial, log=False)
    # a shard task redone finds what its first try wrote: the same bytes, written
    assert rep.shards_written == expected_shards(url) and rep.shard_errors == 0
    mcstore.verify(url)
    assert rep.workers == 2
    deadline = time.time() + 60  # the cluster recovers its two workers for the other tests
    while len(cluster.scheduler_info()["workers"]) < 2 and time.time() < deadline:
        time.sleep(0.5)


def test_worker_killed_mid_shard_write(cluster, corpus, serial, tmp_path):
    """A worker dies (SIGKILL) right after writing the first shard of a shard task: Dask
    runs the task again elsewhere, which finds that shard holding its bytes (written), and the
    commits check every shard instead of writing it."""
    marker = str(tmp_path / "killed")

    def die_once(on: bool, marker: str) -> None:  # runs in each worker process
        import os as os_
        import signal as signal_

        import mcstore as ms

        if not on:
            if hasattr(ms.Tree, "unkilled_write_ahead"):
                ms.Tree.write_ahead = ms.Tree.unkilled_write_ahead
            return
        ms.Tree.unkilled_write_ahead = ms.Tree.write_ahead

        def write_then_die(self, name, first, rows):
            got = ms.Tree.unkilled_write_ahead(self, name, first, rows)
            try:  # the first write in any process, once
                os_.close(os_.open(marker, os_.O_CREAT | os_.O_EXCL))
            except FileExistsError:
                return got
            os_.kill(os_.getpid(), signal_.SIGKILL)

        ms.Tree.write_ahead = write_then_die

    url = str(tmp_path / "m.mc")
    before = set(cluster.scheduler_info()["workers"])
    cluster.run(die_once, True, marker)
    try:
        rep = bulk_ingest(url, corpus, cluster, model=SPEC, config=BATCHED)
    finally:
        cluster.run(die_once, False, marker)
    assert os.path.exists(marker) and set(cluster.scheduler_info()["workers"]) != before
    assert rep.shards_written == expected_shards(url) and rep.shard_errors == 0
    assert_same(state(url), serial, log=False)
    mcstore.verify(url)
    deadline = time.time() + 60  # the cluster recovers its two workers for the other tests
    while len(cluster.scheduler_info()["workers"]) < 2 and time.time() < deadline:
        time.sleep(0.5)


def test_cli_dask_option(cluster, corpus, serial, tmp_path):
    url = tmp_path / "c.mc"
    folder = os.path.dirname(corpus[0].name)
    r = run_mc(["ingest", url, folder, "--dask", cluster.scheduler.address,
                "--chunk-tokens", CHUNK, *TINY])  # fmt: skip
    assert r.code == 0, r.err
    assert "ingested 7 file(s)" in r.out and "1 already present" in r.out and "on 2 worker" in r.out
    assert "in 1 commit(s)" in r.out  # the default batch holds the whole corpus
    assert_same(state(str(url)), serial, log=False)
    r = run_mc(["ingest", url, corpus[0].name, "--dask", "local:x", *TINY])
    assert r.code != 0 and len(r.err_lines) == 1 and "local:N" in r.err
    # --commit-every 0: one commit per file or chunk, the serial log exactly
    url0 = tmp_path / "c0.mc"
    r = run_mc(["ingest", url0, folder, "--dask", cluster.scheduler.address, "--commit-every",
                "0", "--chunk-tokens", CHUNK, *TINY])  # fmt: skip
    assert r.code == 0, r.err
    assert_same(state(str(url0)), serial)
    r = run_mc(["ingest", url0, folder, "--commit-every", "2", *TINY])
    assert r.code == 2 and "needs --dask" in r.err
