"""The client's plan of a bulk ingest: which chunks to commit in which order (by input, by
chunk, as the serial ingest) and in which batches (one commit each), and the worker jobs that
make what each commit needs (by epoch: level-1 gists and key chunks; by chunk: the upper levels;
by epoch again: the complete shards), each submitted as soon as everything it reads is planned.
``driver.BulkIngest`` commits them."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

import numpy as np

import mcstore
from mcruntime.bulk.config import CHUNK_KINDS, GISTER_BATCH, BulkConfig, ModelSpec
from mcruntime.bulk.tasks import (
    EpochJob,
    ShardJob,
    TreeRef,
    UpperJob,
    chunk_name,
    gist_epoch,
    gist_upper,
    write_shards,
)
from mcruntime.errors import InputError
from mcruntime.ingest import Input, done_chunks, missing_ranges, part_name
from mcruntime.lexical import EXTEND
from mcruntime.retrieval import Keys
from mcstore.format import gist_names


class _Timeline:
    """Planned tokens by global position; the front is dropped once nothing needs it."""

    def __init__(self, start: int, first: np.ndarray):
        self.parts: deque[tuple[int, np.ndarray]] = deque([(start, first)])
        self.start, self.end = start, start + len(first)

    def extend(self, ids: np.ndarray) -> None:
        self.parts.append((self.end, ids))
        self.end += len(ids)

    def take(self, a: int, b: int) -> np.ndarray:
        a, b = max(a, self.start), min(b, self.end)
        got = [p[max(0, a - s) : b - s] for s, p in self.parts if s < b and s + len(p) > a]
        return np.concatenate(got) if got else np.zeros(0, np.int32)

    def trim(self, pos: int) -> None:
        while len(self.parts) > 1 and self.parts[0][0] + len(self.parts[0][1]) <= pos:
            self.parts.popleft()
        self.start = self.parts[0][0]


@dataclass
class Append:
    """One planned chunk of an input: a segment, as the serial ingest appends it (alone, or in
    its batch's commit)."""

    old: int
    new: int
    ids: np.ndarray
    source: str
    tags: tuple[str, ...]
    message: str
    progress: int  # input bytes done once this is committed
    ends_input: bool = False
    seq: int = 0  # its number in this run (the key of its upper job)
    now: int = 0  # its nodes' creation time (and its commit's): its batch's, fixed when planned
    closes: bool = False  # the last chunk of its batch (one commit)


@dataclass
class Mark:  # an input finished without an append of its own (present, or skipped)
    progress: int
    skipped: InputError | None = None
    ends_input: bool = True


def serial_calls(
    old: int, new: int, block: int, level: int = 1, batch: int = GISTER_BATCH
) -> list[tuple[int, int]]:
    """The gister batches of the serial append ``old -> new`` at ``level``: node ranges."""
    a, b = mcstore.completed(old, new, level, block)
    return [(s, min(b, s + batch)) for s in range(a, b, batch)]


def input_groups(inputs: list[Input], max_bytes: int) -> list[list[tuple[Input, int]]]:
    """Consecutive inputs in groups of about ``max_bytes`` (one tokenise task each), each
    with its byte offset."""
    out: list[list[tuple[Input, int]]] = []
    cur: list[tuple[Input, int]] = []
    size = base = 0
    for inp in inputs:
        if cur and size + inp.size > max_bytes:
            out.append(cur)
            cur, size = [], 0
        cur.append((inp, base))
        size += inp.size
        base += inp.size
    if cur:
        out.append(cur)
    return out


@dataclass(frozen=True)
class RunFacts:
    """What the plan of one run is fixed by, read once when it opens: the tree's block ``B``
    and epoch ``E``, its length then (``L0``), the gist set and gist version new nodes get,
    the retrieval keys the run makes, and whether chunks commit in batches."""

    B: int
    E: int
    L0: int
    gset: str
    gv: int  # the gist version a new node gets
    ref: TreeRef  # what a shard job opens
    kind: object  # the retrieval kind (None: no keys)
    dense_id: str | None
    chunk_kinds: tuple
    ctx: int = 0  # tokens kept before an epoch: the left context of its dense keys
    window_blocks: int = 1  # dense keys are made for whole windows of blocks only
    batched: bool = False  # batches of epochs, one commit each (else a commit per chunk)

    @property
    def per(self) -> int:
        """Level-1 blocks per epoch."""
        return self.E // self.B

    @classmethod
    def of(cls, tree, config: BulkConfig, kind, dense_id) -> RunFacts:
        chunk_kinds = CHUNK_KINDS.get(kind, ())
        ctx, window_blocks = 0, 1
        if "dense" in chunk_kinds:
            from mcruntime.static_keys import spec_from_id

            ds = spec_from_id(dense_id)
            ctx, window_blocks = ds.context, max(1, ds.window // tree.block)
        return cls(
            B=tree.block,
            E=tree.epoch,
            L0=tree.length,
            gset=tree.snapshot.gset,
            gv=len(tree.gistnet_table()) - 1,
            ref=TreeRef(tree.url, dict(tree.storage_options or {}), tree.tree_id),
            kind=kind,
            dense_id=dense_id,
            chunk_kinds=chunk_kinds,
            ctx=ctx,
            window_blocks=window_blocks,
            batched=config.commit_every_epochs > 1,
        )


class JobKind(StrEnum):
    """What a worker job does (their alphabetical order is the order a batch waits on them)."""

    EPOCH = "epoch"  # level-1 gists and index keys of one epoch of tokens
    SHARDS = "shards"  # writes the complete shards one epoch completes
    UPPER = "upper"  # the gists above level 1 of one planned append


class JobKey(NamedTuple):
    """A submitted job: its kind and its epoch (EPOCH, SHARDS) or append number (UPPER)."""

    kind: JobKind
    n: int


@dataclass
class Jobs:
    """The worker jobs of a run: those submitted (``futures``, by :class:`JobKey`), which
    nodes each makes, and the planned work that waits for a job."""

    futures: dict[JobKey, object] = field(default_factory=dict)
    # level -> [lo, hi, job]: which job makes the nodes [lo, hi) of that level
    producers: dict[int, list[tuple[int, int, JobKey]]] = field(default_factory=dict)
    # level -> nodes whose job is submitted (or that the tree holds)
    made: dict[int, int] = field(default_factory=dict)
    calls: deque[tuple[int, int]] = field(default_factory=deque)  # level-1, not yet in a job
    call_epochs: dict[int, int] = field(default_factory=dict)  # call's first node -> its epoch
    uppers: deque[Append] = field(default_factory=deque)  # upper job not submitted yet
    # (end, now) of the planned appends whose nodes shard jobs write
    ends: deque[tuple[int, int]] = field(default_factory=deque)
    next_epoch: int = 0  # the next epoch job
    next_shard: int = 0  # the next epoch whose shards a job writes


@dataclass
class Batches:
    """Chunks in batches, one commit each: the open batch's first position (None: no batch
    open) and the time of its commit and nodes, the last time given, and how many batches
    are planned to their last chunk and not committed."""

    old: int | None = None
    now: int = 0
    last_now: int = 0
    closed: int = 0


class Planner:
    """The plan of one bulk ingest run into one open tree: the chunks to commit (``pending``)
    and the jobs submitted for them (``jobs``); see ``mcruntime.bulk``."""

    def __init__(
        self, client, tree, spec: ModelSpec, config: BulkConfig, kind, report, dense_id=None
    ):
        self.client, self.tree, self.spec, self.cfg = client, tree, spec, config
        self.report = report
        self.facts = fx = RunFacts.of(tree, config, kind, dense_id)
        self.stored = self._stored_blocks()  # level-1 blocks whose key chunks are stored
        first = (fx.L0 // fx.E) * fx.E
        if fx.chunk_kinds:
            first = min(first, self.stored // fx.per * fx.E)
        start = max(0, first - fx.ctx)
        self.timeline = _Timeline(start, np.asarray(tree.tokens(start, fx.L0), np.int32))
        self.planned_end = fx.L0
        self.pending: deque[Append | Mark] = deque()
        self.jobs = Jobs(next_epoch=first // fx.E, next_shard=fx.L0 // fx.E)
        lv = 1
        while fx.B**lv <= fx.L0:
            self.jobs.made[lv] = mcstore.num_nodes(fx.L0, lv, fx.B)
            lv += 1
        self.seq = 0  # appends planned
        self.batches = Batches()
        self.done = done_chunks(tree)

    # -- what is stored ---------------------------------------------------------------------

    def ready_blocks(self, length: int) -> int:
        """Level-1 blocks a NodeIndex has indexed at this length: EXTEND tokens after each,
        and for dense keys whole windows (``NodeIndex.update``, ``indexed``)."""
        ready = max(0, length - EXTEND) // self.facts.B
        return ready // self.facts.window_blocks * self.facts.window_blocks

    def _stored_blocks(self) -> int:
        """As ``NodeIndex._load``: for each kind the contiguous run of chunks from block 0
        (within the ready blocks); the least over the kinds."""
        if not self.facts.chunk_kinds:
            return 0
        names = set(self.tree.objects())
        ready = self.ready_blocks(self.tree.length)
        reach = None
        for kind in self.facts.chunk_kinds:
            name = Keys.BM25 if kind == Keys.BM25 else f"dense-{self.facts.dense_id}"
            have = 0
            while (
                have + self.facts.per <= ready
                and chunk_name(name, have, have + self.facts.per) in names
            ):
                have += self.facts.per
            reach = have if reach is None else min(reach, have)
        return reach or 0

    # -- planning ---------------------------------------------------------------------------

    def plan(self, got: dict, base_bytes: int, size: int) -> None:
        """Queue the chunks of one tokenised input not yet in the tree (``ingest_text``)."""
        if "error" in got:
            self.pending.append(Mark(base_bytes + size, InputError(got["error"], got["kind"])))
            return
        ids, sha, source = got["ids"], got["sha"], got["name"]
        n = len(ids)
        versions = self.done.setdefault(sha, {})
        complete = any(not missing_ranges(m, r, m or 1) for m, r in versions.items())
        have = versions.setdefault(n, [])
        todo = [] if complete else missing_ranges(n, have, self.cfg.chunk_tokens)
        if not todo:
            self.report.skipped_done += 1
            self.pending.append(Mark(base_bytes + size))
            return
        for a, b in todo:
            name = part_name(source, a, b, n, self.cfg.chunk_tokens)
            old = self.planned_end
            if self.batches.old is None:  # a batch opens: the time of its commit and nodes
                self.batches.last_now = max(time.time_ns(), self.batches.last_now + 1)
                self.batches.old, self.batches.now = old, self.batches.last_now
            ap = Append(
                old,
                old + b - a,
                ids[a:b],
                name,
                (f"sha256={sha}", f"tokens={a}-{b}/{n}"),
                f"ingest {name}",
                base_bytes + round(size * b / max(1, n)),
                now=self.batches.now,
            )
            if self.cfg.worker_shards:
                self.jobs.ends.append((ap.new, ap.now))
            self.pending.append(ap)
            self.timeline.extend(ap.ids)
            self.planned_end = ap.new
            have.append((a, b))
            self.jobs.calls.extend(serial_calls(ap.old, ap.new, self.facts.B))
            ap.seq, self.seq = self.seq, self.seq + 1
            if serial_calls(ap.old, ap.new, self.facts.B, level=2):
                self.jobs.uppers.append(ap)
            if self._closes(self.batches.old, ap.new):
                self.close_batch()
        self.report.files += 1
        self.pending[-1].progress = base_bytes + size
        self.pending[-1].ends_input = True

    def _closes(self, old: int, new: int) -> bool:
        """Whether a batch from ``old`` ends with a chunk ending at ``new``: at the first chunk
        that reaches a multiple of ``commit_every_epochs`` epochs (a batch holds about that many
        epochs); every chunk when batches are off."""
        if not self.facts.batched:
            return True
        span = self.cfg.commit_every_epochs * self.facts.E
        return new // span > old // span

    def close_batch(self) -> None:
        """The last planned chunk ends the open batch (at a boundary, and at the end)."""
        if self.batches.old is None:
            return
        last = next(x for x in reversed(self.pending) if isinstance(x, Append))
        last.closes = True
        self.batches.closed += 1
        self.batches.old = None

    def submit_epochs(self, final: bool) -> None:
        """Submit every epoch whose tokens (and EXTEND after it) are planned; all of them
        (the last one partial) once every input is planned."""
        while True:
            e = self.jobs.next_epoch
            a, b = e * self.facts.E, (e + 1) * self.facts.E
            if not (b + EXTEND <= self.planned_end or (final and a < self.planned_end)):
                self.submit_shards()
                return
            calls = []
            while self.jobs.calls and self.jobs.calls[0][0] * self.facts.B < b:
                calls.append(self.jobs.calls.popleft())
                self.jobs.call_epochs[calls[-1][0]] = e
            tokens = self.timeline.take(a, b)
            following = self.timeline.take(b, b + EXTEND)
            chunks = (
                bool(self.facts.chunk_kinds)
                and b // self.facts.B > self.stored
                and len(tokens) == self.facts.E
                and len(following) == EXTEND
            )
            if not calls and not chunks:
                self.jobs.next_epoch += 1
                continue
            none = np.zeros(0, np.int32)
            job = EpochJob(
                first=a,
                calls=calls,
                call_tokens=self.timeline.take(
                    calls[0][0] * self.facts.B, calls[-1][1] * self.facts.B
                )
                if calls
                else none,
                tokens=tokens if chunks else none,
                following=following,
                context=self.timeline.take(a - self.facts.ctx, a) if chunks else none,
                block=self.facts.B,
                epoch=self.facts.E,
                dtype=self.tree.dtype,
                kind=self.facts.kind,
                chunks=chunks,
                dense_id=self.facts.dense_id,
            )
            key = JobKey(JobKind.EPOCH, e)
            self.jobs.futures[key] = self.client.submit(gist_epoch, self.spec, job, pure=False)
            if calls:
                self.jobs.producers.setdefault(1, []).append((calls[0][0], calls[-1][1], key))
                self.jobs.made[1] = calls[-1][1]
            self.report.epoch_tasks += 1
            self.jobs.next_epoch += 1
            self.submit_uppers()

    def submit_uppers(self) -> None:
        """Submit the upper job of every append whose level-1 calls are all submitted, in
        order (each may need the nodes of the ones before)."""
        while self.jobs.uppers:
            ap = self.jobs.uppers[0]
            if any(
                a not in self.jobs.call_epochs
                for a, _ in serial_calls(ap.old, ap.new, self.facts.B)
            ):
                return
            self.jobs.uppers.popleft()
            pieces: dict[int, list] = {}
            sources: list = []
            lv, key = 2, JobKey(JobKind.UPPER, ap.seq)
            while True:
                a, b = mcstore.completed(ap.old, ap.new, lv, self.facts.B)
                if a == b:
                    break
                hi = b * self.facts.B  # children from other jobs: up to the append's own ones
                if lv > 2:
                    hi = min(hi, mcstore.completed(ap.old, ap.new, lv - 1, self.facts.B)[0])
                pieces[lv - 1] = []
                for src, lo, hi_ in self._pieces(lv - 1, a * self.facts.B, hi):
                    pieces[lv - 1].append((len(sources), lo, hi_))
                    sources.append(src)
                self.jobs.producers.setdefault(lv, []).append((a, b, key))
                self.jobs.made[lv] = b
                lv += 1
            job = UpperJob(ap.old, ap.new, self.facts.B, self.tree.dtype, pieces)
            self.jobs.futures[key] = self.client.submit(
                gist_upper, self.spec, job, sources, pure=False
            )
            self.report.upper_tasks += 1

    def shard_plan(self, e: int) -> list[tuple[str, int, int, int, int]]:
        """The complete shards epoch ``e`` completes: (array, level, shard, lo, hi) with
        [lo, hi) its rows. Tokens, and at each level whose shard ends where the epoch does
        (a shard is an epoch of tokens, or one node where a node spans more) its gists,
        gist versions, creation times and flags."""
        end = (e + 1) * self.facts.E
        out = [("tokens", 0, e, e * self.facts.E, end)]
        lv = 1
        while self.facts.B**lv <= end:
            S = self.tree.geo.level_shard_rows(lv)
            span = S * self.facts.B**lv
            if end % span == 0:
                k = end // span - 1
                gname, vname = gist_names(lv, self.facts.gset)
                for name in (gname, vname, f"created_{lv}", f"flags_{lv}"):
                    out.append((name, lv, k, k * S, (k + 1) * S))
            lv += 1
        return out

    def submit_shards(self) -> None:
        """Submit the shard job of every epoch whose rows all have a source, in order."""
        while (
            self.cfg.worker_shards and (self.jobs.next_shard + 1) * self.facts.E <= self.planned_end
        ):
            e = self.jobs.next_shard
            plan = self.shard_plan(e)
            if any(lv and self.jobs.made.get(lv, 0) < hi for _, lv, _, _, hi in plan):
                return  # a job making some of its gists is not submitted yet
            sources: list = []
            shards = []
            for name, lv, k, lo, hi in plan:
                parts = []
                for src, a, b in self._shard_rows(name, lv, lo, hi):
                    parts.append((len(sources), lv, a, b))
                    sources.append(src)
                shards.append((name, k, parts))
            job = ShardJob(self.facts.ref, shards)
            self.jobs.futures[JobKey(JobKind.SHARDS, e)] = self.client.submit(
                write_shards, job, sources, pure=False
            )
            self.report.shard_tasks += 1
            self.jobs.next_shard += 1
            while self.jobs.ends and self.jobs.ends[0][0] <= self.jobs.next_shard * self.facts.E:
                self.jobs.ends.popleft()  # later shards hold nodes that end past it

    def _shard_rows(self, name: str, lv: int, lo: int, hi: int) -> list[tuple[object, int, int]]:
        """Where rows [lo, hi) of one array come from (see ``ShardJob``)."""
        if lv == 0:
            return [(self.timeline.take(lo, hi), lo, hi)]
        if name.startswith("gists_"):
            return self._pieces(lv, lo, hi)
        old = min(
            hi, max(lo, mcstore.num_nodes(self.facts.L0, lv, self.facts.B))
        )  # in the tree already
        out = [(self.tree.array_rows(name, lo, old), lo, old)] if old > lo else []
        n = hi - old
        if name.startswith("gistver_"):
            rows = np.full(n, self.facts.gv, np.uint16)
        elif name.startswith("flags_"):
            rows = np.zeros(n, np.uint8)
        else:  # created: the time of the append that completes each node
            news = np.fromiter((a for a, _ in self.jobs.ends), np.int64, len(self.jobs.ends))
            nows = np.fromiter((t for _, t in self.jobs.ends), np.int64, len(self.jobs.ends))
            stops = (np.arange(old, hi, dtype=np.int64) + 1) * self.facts.B**lv
            rows = nows[np.searchsorted(news, stops, side="left")]
        return [*out, (rows, old, hi)] if n else out

    def _pieces(self, level: int, lo: int, hi: int) -> list[tuple[object, int, int]]:
        """Where the nodes [lo, hi) of ``level`` come from: the jobs that make them, and the
        tree for nodes committed before (by an earlier run, or released here)."""
        out: list[tuple[object, int, int]] = []
        pos = lo
        for plo, phi, key in self.jobs.producers.get(level, []):
            if pos >= hi:
                break
            if phi <= pos:
                continue
            if plo > pos:
                out.append(self._tree_rows(level, pos, min(plo, hi)))
                pos = min(plo, hi)
                if pos >= hi:
                    break
            stop = min(phi, hi)
            out.append((self.jobs.futures[key], pos, stop))
            pos = stop
        if pos < hi:
            out.append(self._tree_rows(level, pos, hi))
        return out

    def _tree_rows(self, level: int, lo: int, hi: int) -> tuple[np.ndarray, int, int]:
        if hi > self.tree.num_nodes(level):
            raise RuntimeError(f"bulk ingest: level-{level} nodes {lo}-{hi} have no source")
        return (self.tree.gists(level, lo, hi), lo, hi)
