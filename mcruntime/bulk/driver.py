"""The client side of a bulk ingest: the single committer, which replays the serial ingest's
appends and key-chunk commits in order as the workers' results come in (see
``mcruntime.bulk``), and ``bulk_ingest``, which opens or creates the tree and runs it."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import numpy as np

import mcstore
from mcruntime.binding import check_binding, gister_id, retrieval_kind
from mcruntime.bulk.cluster import wait_for_workers
from mcruntime.bulk.config import BulkConfig, BulkReport, ModelSpec
from mcruntime.bulk.plan import Append, Mark, Planner, input_groups, serial_calls
from mcruntime.bulk.tasks import (
    EpochResult,
    ShardResult,
    UpperResult,
    digest,
    gist_call,
    tokenize_inputs,
    worker_binding,
)
from mcruntime.errors import InputError, StaleGists
from mcruntime.ingest import Input


class BulkIngest(Planner):
    """One bulk ingest run into one open tree: the plan (``Planner``) and its single
    committer, which commits the planned chunks in order once their jobs' results are in."""

    def __init__(
        self, client, tree, spec: ModelSpec, config: BulkConfig, kind, report, dense_id=None
    ):
        super().__init__(client, tree, spec, config, kind, report, dense_id)
        self.committed = self.L0  # tokens committed: the tree's length
        self.results: dict[tuple, EpochResult | UpperResult | ShardResult] = {}  # fetched once
        self.on_progress: Callable[[int], None] | None = None
        self.on_skip: Callable[[InputError], None] | None = None

    # -- committing -------------------------------------------------------------------------

    def _shard_epochs(self, ap: Append) -> range:
        """The epochs whose shards this append completes (and a worker writes)."""
        if not self.cfg.worker_shards:
            return range(0)
        return range(ap.old // self.E, ap.new // self.E)

    def _needs(self, ap: Append) -> list[tuple] | None:
        """The jobs holding this append's gists and writing the shards it completes; None
        while one is not submitted yet."""
        need = set()
        for e in self._shard_epochs(ap):
            if ("s", e) not in self.futures:
                return None
            need.add(("s", e))
        for a, _ in serial_calls(ap.old, ap.new, self.B):
            if a not in self.call_epochs:
                return None
            need.add(("e", self.call_epochs[a]))
        if serial_calls(ap.old, ap.new, self.B, level=2):
            if ("u", ap.seq) not in self.futures:
                return None
            need.add(("u", ap.seq))
        return sorted(need)

    def _result(self, key: tuple) -> EpochResult | UpperResult | ShardResult | None:
        """A job's result, fetched once (the future stays: later jobs may depend on it)."""
        if key not in self.results:
            fut = self.futures.get(key)
            if fut is None:
                return None
            t0 = time.perf_counter()
            try:
                self.results[key] = res = fut.result()
            except (mcstore.StoreError, OSError):
                if key[0] != "s":
                    raise
                # the store refused a worker: the commit writes these shards itself
                self.report.shard_errors += 1
                self.results[key] = res = ShardResult({}, {}, 0.0)
            self.report.wait_s += time.perf_counter() - t0
            if key[0] == "e":
                self.report.epoch_task_s += res.seconds
            elif key[0] == "u":
                self.report.upper_task_s += res.seconds
            else:
                self.report.shard_task_s += res.seconds
                self.report.shards_written += len(res.written)
                for k, v in res.io.items():
                    self.report.worker_io[k] = self.report.worker_io.get(k, 0) + v
        return self.results[key]

    def commit_ready(self, block: bool) -> None:
        """Commit queued chunks in order while their gists are at hand; ``block``: wait for
        workers (when enough work is in flight, and at the end)."""
        while self.pending:
            item = self.pending[0]
            if isinstance(item, Append):
                need = self._needs(item)
                if need is None:
                    return  # its jobs are not planned to the end yet
                waiting = [self.futures[k] for k in need if k not in self.results]
                if waiting and not block and not all(f.done() for f in waiting):
                    return
                self._append(item)
            self.pending.popleft()
            self.report.inputs_done += item.ends_input
            self._progress(item)

    def _append(self, ap: Append) -> None:
        for key in self._needs(ap) or ():
            self._result(key)
        written: dict[str, int] = {}
        for e in self._shard_epochs(ap):
            written.update(self.results[("s", e)].written)
        gister = _Lookup(self, ap)
        t0 = time.perf_counter()
        self.tree.append(ap.ids, gister=gister, source=ap.source, tags=ap.tags,
                         message=ap.message, written=written, now=ap.now)  # fmt: skip
        self.report.commit_s += time.perf_counter() - t0
        for e in self._shard_epochs(ap):
            self.futures.pop(("s", e), None)
            self.results.pop(("s", e), None)
        self.report.commits += 1
        self.report.tokens += len(ap.ids)
        self.committed = ap.new
        self._persist_index()
        self._release()

    def _persist_index(self) -> None:
        """Commit the key chunks of the epochs this length makes ready (``NodeIndex.persist``
        after ``update``: same objects, same message)."""
        if not self.chunk_kinds:
            return
        have = self.ready_blocks(self.committed)
        objects: dict[str, bytes] = {}
        while (self.stored // self.per + 1) * self.per <= have:
            e = self.stored // self.per
            res = self._result(("e", e))
            if res is None or not res.chunks:
                raise RuntimeError(f"bulk ingest: no key chunks for epoch {e}")  # a plan bug
            objects.update(res.chunks)
            self.stored = (e + 1) * self.per
        if objects:
            t0 = time.perf_counter()
            self.tree.commit_objects(objects, message=f"retrieval index up to block {have}")
            self.report.commit_s += time.perf_counter() - t0
            self.report.index_commits += 1

    def _release(self) -> None:
        """Drop what no later append or index commit can need."""
        keep_from = self.committed // self.E
        if self.chunk_kinds:
            keep_from = min(keep_from, self.stored // self.per)
        done: set[tuple] = set()
        for level, prods in self.producers.items():
            while prods and prods[0][1] * self.B**level <= self.committed:
                done.add(prods.pop(0)[2])
        live = {k for prods in self.producers.values() for _, _, k in prods}
        for key in done - live:
            if key[0] == "e" and key[1] >= keep_from:
                continue  # its key chunks are not committed yet
            self.futures.pop(key, None)
            self.results.pop(key, None)
        for key in [k for k in self.futures if k[0] == "e" and k[1] < keep_from]:
            if key not in live:  # an index-only job
                self.futures.pop(key, None)
                self.results.pop(key, None)
        self.timeline.trim(min(keep_from * self.E, self.committed) - self.ctx)

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
            self.commit_ready(block=len(self.futures) >= self.cfg.jobs_ahead)
        self.submit_epochs(final=True)
        self.commit_ready(block=True)
        if self.pending:  # every epoch is submitted: nothing may be left waiting
            raise RuntimeError("bulk ingest: chunks left uncommitted")  # a plan bug


class _Lookup:
    """The ``gister`` of one append. Level 1: the rows the epoch jobs computed, once the
    tokens the store passes are checked to be the ones gisted. Levels above (1/B of the work
    per level, children made by earlier appends or read back from the tree): one worker call
    with exactly what the store passed, as the serial gister is called."""

    def __init__(self, run: BulkIngest, ap: Append):
        self.run, self.ap = run, ap

    def __call__(self, level: int, kids: np.ndarray) -> np.ndarray:
        run = self.run
        kids = np.asarray(kids)
        t0 = time.perf_counter()
        try:
            got = self._level1(kids) if level == 1 else self._upper(level, kids)
            if got is not None:
                return got
            if level == 1:
                run.report.fallback_calls += 1  # not what was planned (a bug, or a changed plan)
            run.report.upper_calls += 1
            run.report.upper_nodes += len(kids)
            # ahead of the queued epoch jobs: the committer waits for this one
            fut = run.client.submit(
                gist_call, run.spec, run.tree.dtype, level, kids, pure=False, priority=100
            )
            got = fut.result()
            run.report.upper_s += time.perf_counter() - t0
            return got
        finally:
            run.report.gister_s += time.perf_counter() - t0

    def _upper(self, level: int, kids: np.ndarray) -> np.ndarray | None:
        run = self.run
        a, b = mcstore.completed(self.ap.old, self.ap.new, level, run.B)
        res = run.results.get(("u", self.ap.seq))
        if res is None or level not in res.levels:
            return None
        first, g = res.levels[level]
        if (first, len(g)) != (a, b - a) or res.kids[level] != digest(kids):
            return None  # other children than the job gisted: gist what the store passes
        return g

    def _level1(self, kids: np.ndarray) -> np.ndarray | None:
        run, B = self.run, self.run.B
        a, b = mcstore.completed(self.ap.old, self.ap.new, 1, B)
        if kids.shape != (b - a, B):
            return None
        want = run.timeline.take(a * B, b * B)
        if len(want) != (b - a) * B or not np.array_equal(_bits(kids).ravel(), _bits(want)):
            return None
        parts, at = [], a
        done = [r for k, r in run.results.items() if k[0] == "e"]
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
    ``ingest_inputs`` on one machine. ``on_progress(bytes)`` after every commit."""
    spec, cfg = model or ModelSpec(), config or BulkConfig()
    report = report or BulkReport()
    if cfg.chunk_tokens < 1:
        raise InputError(f"chunk_tokens must be >= 1, not {cfg.chunk_tokens}", kind="argument")
    report.workers = wait_for_workers(client)
    tree = url_or_tree
    if isinstance(url_or_tree, str):
        try:
            tree = mcstore.open(url_or_tree, "a", storage_options=storage_options)
        except mcstore.TreeNotFound:
            tree = None
    kind = retrieval_kind(cfg.retrieval, tree.binding if tree is not None else None)
    dtype = tree.dtype if tree is not None else "float16"
    info = client.submit(worker_binding, spec, dtype, kind, pure=False).result()
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
    run.run(inputs)
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
