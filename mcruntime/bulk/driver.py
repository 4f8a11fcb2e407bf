"""The client side of a bulk ingest: the single committer, which commits the serial ingest's
chunks in order, a batch at a time (``append_many`` with the batch's key chunks; or per chunk,
as the serial ingest), as the workers' results come in (see ``mcruntime.bulk``), and
``bulk_ingest``, which opens or creates the tree and runs it."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import numpy as np

import mcstore
from mcruntime.binding import check_binding, gister_id, retrieval_kind
from mcruntime.bulk.cluster import wait_for_workers
from mcruntime.bulk.config import BulkConfig, BulkReport, ModelSpec
from mcruntime.bulk.plan import (
    Append,
    JobKey,
    JobKind,
    Mark,
    Planner,
    input_groups,
    serial_calls,
)
from mcruntime.bulk.tasks import (
    EpochResult,
    ShardResult,
    UpperResult,
    digest,
    gist_call,
    register,
    tokenize_inputs,
    worker_binding,
)
from mcruntime.errors import InputError, StaleGists
from mcruntime.ingest import Input


class BulkIngest(Planner):
    """One bulk ingest run into one open tree: the plan (``Planner``) and its single
    committer, which commits the planned batches in order once their jobs' results are in."""

    def __init__(
        self, client, tree, spec: ModelSpec, config: BulkConfig, kind, report, dense_id=None
    ):
        super().__init__(client, tree, spec, config, kind, report, dense_id)
        self.committed = self.facts.L0  # tokens committed: the tree's length
        self.results: dict[JobKey, EpochResult | UpperResult | ShardResult] = {}  # fetched once
        self.on_progress: Callable[[int], None] | None = None
        self.on_skip: Callable[[InputError], None] | None = None

    # -- committing -------------------------------------------------------------------------

    def _shard_epochs(self, batch: list[Append]) -> range:
        """The epochs whose shards this batch completes (and a worker writes)."""
        if not self.cfg.worker_shards:
            return range(0)
        return range(batch[0].old // self.facts.E, batch[-1].new // self.facts.E)

    def _key_epochs(self, length: int) -> range:
        """The epochs whose key chunks a tree of this length gets (``NodeIndex.update``
        indexes the ready blocks), beyond those stored."""
        if not self.facts.chunk_kinds:
            return range(0)
        first = self.stored // self.facts.per
        return range(first, max(first, self.ready_blocks(length) // self.facts.per))

    def _needs(self, batch: list[Append]) -> list[JobKey] | None:
        """The jobs holding this batch's gists and key chunks and writing the shards it
        completes; None while one is not submitted yet."""
        need = set()
        for e in self._shard_epochs(batch):
            need.add(JobKey(JobKind.SHARDS, e))
        for e in self._key_epochs(batch[-1].new):
            need.add(JobKey(JobKind.EPOCH, e))
        for ap in batch:
            for a, _ in serial_calls(ap.old, ap.new, self.facts.B):
                if a not in self.jobs.call_epochs:
                    return None
                need.add(JobKey(JobKind.EPOCH, self.jobs.call_epochs[a]))
            if serial_calls(ap.old, ap.new, self.facts.B, level=2):
                need.add(JobKey(JobKind.UPPER, ap.seq))
        if any(k not in self.jobs.futures for k in need):
            return None
        return sorted(need)

    def _result(self, key: JobKey) -> EpochResult | UpperResult | ShardResult | None:
        """A job's result, fetched once (the future stays: later jobs may depend on it)."""
        if key not in self.results:
            fut = self.jobs.futures.get(key)
            if fut is None:
                return None
            t0 = time.perf_counter()
            try:
                self.results[key] = res = fut.result()
            except (mcstore.StoreError, OSError):
                if key.kind != JobKind.SHARDS:
                    raise
                # the store refused a worker: the commit writes these shards itself
                self.report.shard_errors += 1
                self.results[key] = res = ShardResult({}, {}, 0.0)
            self.report.wait_s += time.perf_counter() - t0
            if key.kind == JobKind.EPOCH:
                self.report.epoch_task_s += res.seconds
            elif key.kind == JobKind.UPPER:
                self.report.upper_task_s += res.seconds
            else:
                self.report.shard_task_s += res.seconds
                self.report.shards_written += len(res.written)
                for k, v in res.io.items():
                    self.report.worker_io[k] = self.report.worker_io.get(k, 0) + v
        return self.results[key]

    def _batch(self) -> list | None:
        """The items up to the end of the first batch (Marks of the inputs between its chunks
        included); None while its last chunk is not planned."""
        if not self.batches.closed:
            return None
        out = []
        for item in self.pending:
            out.append(item)
            if isinstance(item, Append) and item.closes:
                return out
        raise RuntimeError("bulk ingest: a closed batch without its last chunk")  # a plan bug

    def commit_ready(self, block: bool) -> None:
        """Commit queued batches in order while their gists are at hand; ``block``: wait for
        workers (when enough work is in flight, and at the end)."""
        while self.pending:
            if isinstance(self.pending[0], Mark):
                items = [self.pending[0]]
            else:
                items = self._batch()
                if items is None:
                    return  # its last chunk is not planned yet
                batch = [x for x in items if isinstance(x, Append)]
                need = self._needs(batch)
                if need is None:
                    return  # its jobs are not planned to the end yet
                waiting = [self.jobs.futures[k] for k in need if k not in self.results]
                if waiting and not block and not all(f.done() for f in waiting):
                    return
                self._commit(batch, need)
                self.batches.closed -= 1
            for item in items:
                self.pending.popleft()
                self.report.inputs_done += item.ends_input
                self._progress(item)

    def _commit(self, batch: list[Append], need: list[tuple]) -> None:
        """One batch: one ``append`` per chunk and the key chunks' own commits, as the serial
        ingest makes them (batches off); else one ``append_many`` holding the key chunks."""
        for key in need:
            self._result(key)
        written: dict[str, int] = {}
        for e in self._shard_epochs(batch):
            written.update(self.results[JobKey(JobKind.SHARDS, e)].written)
        gister = _Lookup(self, batch)
        parts = [(ap.ids, ap.source, ap.tags) for ap in batch]
        t0 = time.perf_counter()
        if not self.facts.batched:
            ap = batch[0]
            self.tree.append(ap.ids, gister=gister, source=ap.source, tags=ap.tags,
                             message=ap.message, written=written, now=ap.now)  # fmt: skip
        else:
            have, objects = self._key_chunks(batch[-1].new)
            message = batch[0].message
            if len(batch) > 1:
                message = f"ingest {len(batch)} parts: {batch[0].source} .. {batch[-1].source}"
            if objects:
                message += f"; retrieval index up to block {have}"
            self.tree.append_many(parts, gister=gister, message=message, objects=objects or None,
                                  written=written, now=batch[0].now)  # fmt: skip
        self.report.commit_s += time.perf_counter() - t0
        for e in self._shard_epochs(batch):
            self.jobs.futures.pop(JobKey(JobKind.SHARDS, e), None)
            self.results.pop(JobKey(JobKind.SHARDS, e), None)
        self.report.commits += 1
        self.report.segments += len(batch)
        self.report.tokens += sum(len(ap.ids) for ap in batch)
        self.committed = batch[-1].new
        if not self.facts.batched:
            self._persist_index()
        self._release()

    def _key_chunks(self, length: int) -> tuple[int, dict[str, bytes]]:
        """The key chunks of the epochs a tree of this length makes ready and that are not
        stored (``NodeIndex.update``): (ready blocks, object name -> bytes)."""
        objects: dict[str, bytes] = {}
        for e in self._key_epochs(length):
            res = self._result(JobKey(JobKind.EPOCH, e))
            if res is None or not res.chunks:
                raise RuntimeError(f"bulk ingest: no key chunks for epoch {e}")  # a plan bug
            objects.update(res.chunks)
            self.stored = (e + 1) * self.facts.per
        self.report.index_chunks += len(objects)
        return self.ready_blocks(length), objects

    def _persist_index(self) -> None:
        """Commit the key chunks of the epochs this length makes ready (``NodeIndex.persist``
        after ``update``: same objects, same message)."""
        have, objects = self._key_chunks(self.committed)
        if objects:
            t0 = time.perf_counter()
            self.tree.commit_objects(objects, message=f"retrieval index up to block {have}")
            self.report.commit_s += time.perf_counter() - t0
            self.report.index_commits += 1

    def _release(self) -> None:
        """Drop what no later append or index commit can need."""
        keep_from = self.committed // self.facts.E
        if self.facts.chunk_kinds:
            keep_from = min(keep_from, self.stored // self.facts.per)
        done: set[JobKey] = set()
        for level, prods in self.jobs.producers.items():
            while prods and prods[0][1] * self.facts.B**level <= self.committed:
                done.add(prods.pop(0)[2])
        live = {k for prods in self.jobs.producers.values() for _, _, k in prods}
        for key in done - live:
            if key.kind == JobKind.EPOCH and key.n >= keep_from:
                continue  # its key chunks are not committed yet
            self.jobs.futures.pop(key, None)
            self.results.pop(key, None)
        for key in [k for k in self.jobs.futures if k.kind == JobKind.EPOCH and k.n < keep_from]:
            if key not in live:  # an index-only job
                self.jobs.futures.pop(key, None)
                self.results.pop(key, None)
        self.timeline.trim(min(keep_from * self.facts.E, self.committed) - self.facts.ctx)

    def _progress(self, item) -> None:
        if isinstance(item, Mark) and item.skipped is not None:
            self.report.skipped.append(str(item.skipped))
            if self.on_skip:
                self.on_skip(item.skipped)
        if self.on_progress:
            self.on_progress(item.progress)

    # -- the run ----------------------------------------------------------------------------

    def run(self, inputs: list[Input]) -> None:
        groups = input_groups(inputs, self.cfg.tokenize_bytes)
        queued: deque = deque()
        todo = iter(groups)

        def fill() -> None:
            while len(queued) < self.cfg.tokenize_ahead:
                g = next(todo, None)
                if g is None:
                    return
                items = [(inp.name, inp.size, inp.data) for inp, _ in g]
                fut = self.client.submit(tokenize_inputs, self.spec, items, pure=False)
                queued.append((g, fut))
                self.report.tokenize_tasks += 1

        fill()
        while queued:
            g, fut = queued.popleft()
            t0 = time.perf_counter()
            got = fut.result()
            self.report.wait_s += time.perf_counter() - t0
            self.report.tokenize_task_s += got["seconds"]
            fill()
            for (inp, base_bytes), res in zip(g, got["inputs"], strict=True):
                self.plan(res, base_bytes, inp.size)
            self.submit_epochs(final=False)
            self.commit_ready(block=len(self.jobs.futures) >= self.cfg.jobs_ahead)
        self.close_batch()
        self.submit_epochs(final=True)
        self.commit_ready(block=True)
        if self.pending:  # every epoch is submitted: nothing may be left waiting
            raise RuntimeError("bulk ingest: chunks left uncommitted")  # a plan bug


class _Lookup:
    """The ``gister`` of one commit (one chunk, or a batch of them: the store then calls it
    once per level with the nodes of every chunk). Level 1: the rows the epoch jobs
    computed, once the tokens the store passes are checked to be the ones gisted. Levels above
    (1/B of the work per level): per chunk, the rows its upper job computed, once the children
    the store passes are checked to be the ones it gisted (a digest). Whatever is not found
    (a bug, or a changed plan) is gisted on a worker, chunk by chunk, with exactly what the
    store passed, as the serial gister is called."""

    def __init__(self, run: BulkIngest, batch: list[Append]):
        self.run, self.batch = run, batch
        self.old, self.new = batch[0].old, batch[-1].new

    def __call__(self, level: int, kids: np.ndarray) -> np.ndarray:
        run = self.run
        kids = np.asarray(kids)
        t0 = time.perf_counter()
        try:
            a, b = mcstore.completed(self.old, self.new, level, run.facts.B)
            if len(kids) != b - a:  # not the nodes this batch completes: gist what was passed
                return self._on_worker(level, kids, fallback=level == 1)
            if level == 1:
                got = self._level1(kids, a, b)
                if got is not None:
                    return got
            parts = []
            for ap in self.batch:  # chunk by chunk, as the serial ingest calls the gister
                x, y = mcstore.completed(ap.old, ap.new, level, run.facts.B)
                if x == y:
                    continue
                sub = kids[x - a : y - a]
                got = self._upper(ap, level, sub, x, y) if level > 1 else None
                if got is None:
                    got = self._on_worker(level, sub, fallback=level == 1)
                parts.append(got)
            return np.concatenate(parts)
        finally:
            run.report.gister_s += time.perf_counter() - t0

    def _on_worker(self, level: int, kids: np.ndarray, *, fallback: bool) -> np.ndarray:
        run = self.run
        t0 = time.perf_counter()
        run.report.fallback_calls += fallback  # level 1 not as planned (a bug, a changed plan)
        run.report.upper_calls += 1
        run.report.upper_nodes += len(kids)
        # ahead of the queued epoch jobs: the committer waits for this one
        fut = run.client.submit(
            gist_call, run.spec, run.tree.dtype, level, kids, pure=False, priority=100
        )
        got = fut.result()
        run.report.upper_s += time.perf_counter() - t0
        return got

    def _upper(self, ap: Append, level: int, kids: np.ndarray, a: int, b: int):
        res = self.run.results.get(JobKey(JobKind.UPPER, ap.seq))
        if res is None or level not in res.levels:
            return None
        first, g = res.levels[level]
        if (first, len(g)) != (a, b - a) or res.kids[level] != digest(kids):
            return None  # other children than the job gisted: gist what the store passes
        return g

    def _level1(self, kids: np.ndarray, a: int, b: int) -> np.ndarray | None:
        run, B = self.run, self.run.facts.B
        if kids.shape != (b - a, B):
            return None
        want = run.timeline.take(a * B, b * B)
        if len(want) != (b - a) * B or not np.array_equal(_bits(kids).ravel(), _bits(want)):
            return None
        parts, at = [], a
        done = [r for k, r in run.results.items() if k.kind == JobKind.EPOCH]
        for r in sorted(done, key=lambda r: r.first):
            lo, hi = max(at, r.first), min(b, r.first + len(r.gists))
            if lo == at and hi > lo:
                parts.append(r.gists[lo - r.first : hi - r.first])
                at = hi
        return np.concatenate(parts) if at == b else None


def _bits(a: np.ndarray) -> np.ndarray:
    """An array's bit patterns, so that equal means identical (NaN included)."""
    a = np.ascontiguousarray(a)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}.get(a.itemsize, np.uint8))


def bulk_ingest(
    url_or_tree,
    inputs: list[Input],
    client,
    *,
    model: ModelSpec | None = None,
    config: BulkConfig | None = None,
    storage_options: dict | None = None,
    report: BulkReport | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_skip: Callable[[InputError], None] | None = None,
) -> BulkReport:
    """Ingest ``inputs`` (from ``mcruntime.ingest.scan``) into a tree (created on first use,
    bound to the model) with the work spread over ``client``'s workers; the same tree as
    ``ingest_inputs`` on one machine (one commit per batch of ``commit_every_epochs`` epochs).
    ``on_progress(bytes)`` for each input or chunk, once its commit is made."""
    spec, cfg = model or ModelSpec(), config or BulkConfig()
    report = report or BulkReport()
    if cfg.chunk_tokens < 1:
        raise InputError(f"chunk_tokens must be >= 1, not {cfg.chunk_tokens}", kind="argument")
    if cfg.commit_every_epochs < 0:
        raise InputError(
            f"commit_every_epochs must be >= 0, not {cfg.commit_every_epochs}", kind="argument"
        )
    report.workers = wait_for_workers(client)
    register(client)  # each worker loads the models and opens the tree once, for every run
    tree = url_or_tree
    if isinstance(url_or_tree, str):
        try:
            tree = mcstore.open(url_or_tree, "a", storage_options=storage_options)
        except mcstore.TreeNotFound:
            tree = None
    recorded = tree.binding if tree is not None else None
    kind = retrieval_kind(cfg.retrieval, recorded, new=tree is None)
    dtype = tree.dtype if tree is not None else "float16"
    info = client.submit(worker_binding, spec, dtype, kind, recorded, pure=False).result()
    report.model_name = info["name"]
    report.gistnet_id = info["binding"]["gistnet"]["id"]
    if tree is None:
        tree = mcstore.create(
            url_or_tree,
            dim=info["dim"],
            binding=info["binding"],
            gister_id=gister_id(info["binding"]),
            storage_options=storage_options,
        )
        report.created = True
    else:
        _check_tree(tree, info)
    dense_id = (info["binding"].get("retrieval") or {}).get("dense")
    run = BulkIngest(client, tree, spec, cfg, kind, report, dense_id)
    run.on_progress, run.on_skip = on_progress, on_skip
    t0 = time.perf_counter()
    run.run(inputs)
    report.run_s = time.perf_counter() - t0
    report.version, report.length, report.io = tree.version, tree.length, tree.io_stats
    return report


def _check_tree(tree, info: dict) -> None:
    """The checks a ``Session`` makes before writing to an existing tree."""
    if tree.dim != info["dim"]:
        raise mcstore.BindingMismatch(
            f"tree {tree.url} holds {tree.dim}-wide gists but {info['name']} is "
            f"{info['dim']}-wide; use the model it was built with (its binding names it)"
        )
    if not check_binding(tree, info["check"]):
        raise StaleGists(
            f"tree {tree.url} was gisted by another GistNet "
            f"({((tree.binding or {}).get('gistnet') or {}).get('id', 'unknown')}); "
            "recompute its gists with this one, or use that GistNet",
            url=tree.url,
        )
