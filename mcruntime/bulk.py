"""Bulk ingest on a Dask cluster: workers tokenise, gist, key and write the shards; one
client commits.

A serial ingest (``mcruntime.ingest``) spends its time in three places: tokenising files,
gisting every completed node with GistNet, and computing retrieval keys (BM25 terms, dense keys)
for every complete epoch. All three are pure functions of the token timeline, so here they run
on Dask workers: tokenise tasks (inputs in groups of about a megabyte), then one task per epoch
of the timeline (``tree.epoch`` tokens, one complete shard of the token array) holding its
level-1 gists and its retrieval-key chunks.

The client stays the single committer and replays the serial ingest exactly: the same inputs in
the same order, the same chunking and segment names (``part_name``, ``sha256=`` / ``tokens=``
tags, messages), one append per chunk and the key-chunk commits at the same points. Gists reach
the store through the ``gister`` callable ``Tree.append`` calls once per level with the nodes
that level gains (``mcstore.completed(old, new, level)``). Level 1 (all but 1/B of the work)
comes from the epoch tasks; levels 2 and up from one "upper" task per append, submitted as soon
as the epoch tasks it reads from are (Dask passes their results from worker to worker; nodes
committed before this run are read from the tree). The lookup checks that the children the
store passes are the ones gisted (tokens; a digest above) and otherwise asks a worker to gist
exactly what the store passed, while it waits; the tests assert that never happens.

Shards from the workers: most bytes of a commit are its complete shards (every epoch of
tokens completes one shard of ``tokens`` and of the ``gists``/``gistver``/``created``/
``flags`` of each level whose shard ends there), and the committer would write them all.
Instead one "shard" task per epoch opens the tree on a worker and writes the shards that epoch
completes with ``Tree.write_ahead`` (put-if-absent at their canonical names, encoded as the
commit would); the append that completes them gets their checksums (``append(written=…)``)
and writes no shard itself, only its tail delta and record. A shard is a task of its own
because no compute task holds one whole: the serial batches (below) and the appends cross
epoch boundaries, so a shard's gists come from two epoch tasks and from the upper tasks of
several appends (Dask moves them). Creation times are fixed per append when the client plans
it (``append(now=…)``), so the ``created_<l>`` shards written ahead are the ones the commit
would write; a commit's time is thus when it was planned, shortly before it is made. A shard
task that fails with a store error costs nothing but the committer's own write of those
shards; ``BulkConfig.worker_shards=False`` leaves every shard to the committer (workers that
cannot reach the tree's URL).

Bit for bit: a matrix kernel's result for one row can depend on the batch the row is in (a
batch of one takes another kernel), so the tasks gist in the serial gister's batches (one
append's nodes, 256 at a time: ``serial_calls``; each upper level in one call, as
``gist_completed`` calls the gister). The tree then equals a serial ingest's: tokens, segments,
gists, key chunks and log messages (the tests compare them; creation times are times).

Faults: tasks are pure, so a worker lost mid-task is recomputed by Dask (a shard it wrote
before dying is found holding the same bytes: written). Every append is a commit, so a client
killed mid-run loses nothing committed and a re-run resumes from the segments' tags
(``done_chunks``), as a serial re-run would; the shards the dead run wrote ahead are reused
(tokens and gists are the same bytes; creation times differ, and the commit stages its own
copy of those, as for any orphan). A concurrent writer makes the next append raise
``CommitConflict``.

Workers load the models once per process (``worker_models``) and open the tree once per
process (``worker_tree``) from a name or path and the tree's URL and storage options: nothing
large travels through the scheduler. Input files are read by the workers, and the tree written
by them, so a remote cluster needs the inputs at the same paths and the tree's URL reachable
(an object store, or a shared file system; stdin travels in the task).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

import mcstore
from mcmodels.defaults import DEFAULT_MODEL  # torch-free: the one definition
from mcruntime.binding import check_binding, gister_id, retrieval_kind
from mcruntime.errors import InputError, SessionError, StaleGists
from mcruntime.ingest import (
    CHUNK_TOKENS,
    IngestReport,
    Input,
    done_chunks,
    missing_ranges,
    part_name,
)
from mcruntime.lexical import EXTEND
from mcstore.format import gist_names

CHUNK_KINDS = {"bm25": ("bm25",), "hybrid": ("bm25", "dense")}  # retrieval kind -> stored chunks
WORKER_WAIT_S = 60  # how long a run waits for a cluster's first worker
GISTER_BATCH = 256  # streaming.Gister's default batch: the serial path's batches
WRITE_THREADS = 8  # shards a shard task writes at once (as a commit does)


class ClusterError(SessionError):
    """The Dask scheduler cannot be reached, or the cluster address is malformed."""

    exit_code = 13


@dataclass(frozen=True)
class ModelSpec:
    """What a worker loads (once per process): a base model name or path, a GistNet
    checkpoint path (None: the shipped default, else the fixed untrained one), and the torch
    threads of each worker process (None: torch's default)."""

    model: str = DEFAULT_MODEL
    gistnet: str | None = None
    threads: int | None = None


@dataclass
class BulkConfig:
    chunk_tokens: int = CHUNK_TOKENS  # tokens per commit, as the serial ingest
    retrieval: str | None = "auto"  # key kind; "auto": the tree's own (bm25 for a new tree)
    tokenize_bytes: int = 1 << 20  # input bytes per tokenise task (small files go together)
    tokenize_ahead: int = 16  # tokenise tasks submitted beyond the one being committed
    jobs_ahead: int = 128  # epoch and upper jobs in flight or held: bounds the client's memory
    # workers write each epoch's complete shards ahead of its commit (False: the committer
    # writes them, for workers that cannot reach the tree's URL)
    worker_shards: bool = True


@dataclass
class BulkReport(IngestReport):
    created: bool = False
    gistnet_id: str = ""
    model_name: str = ""
    workers: int = 0
    epoch_tasks: int = 0
    tokenize_tasks: int = 0
    upper_tasks: int = 0  # jobs gisting the levels >= 2 of one append
    upper_calls: int = 0  # gister calls sent to a worker while the committer waits
    upper_nodes: int = 0
    fallback_calls: int = 0  # level-1 calls not found precomputed (0 unless the plan is wrong)
    index_commits: int = 0
    wait_s: float = 0.0  # client time spent waiting for tokenise and epoch results
    upper_s: float = 0.0  # client time spent in worker calls for levels >= 2
    commit_s: float = 0.0  # client time spent in the store's append / commit (gister included)
    gister_s: float = 0.0  # of which in the gister (lookups and worker calls)
    tokenize_task_s: float = 0.0  # worker time in tokenise tasks
    epoch_task_s: float = 0.0  # worker time in epoch tasks
    upper_task_s: float = 0.0  # worker time in upper-level tasks
    shard_tasks: int = 0  # jobs writing the complete shards of one epoch ahead of its commit
    shards_written: int = 0  # shards the workers wrote (the commits only checked them)
    shard_errors: int = 0  # shard tasks that failed with a store error (the commit wrote them)
    shard_task_s: float = 0.0  # worker time in shard tasks
    version: int = 0
    length: int = 0
    io: dict = field(default_factory=dict)  # the committer's store requests and bytes
    worker_io: dict = field(default_factory=dict)  # the shard tasks' requests and bytes


# ---- the cluster ------------------------------------------------------------------------------


@contextlib.contextmanager
def dask_client(address: str) -> Iterator:
    """A ``distributed.Client`` for ``address``: a scheduler address (``tcp://host:8786``) or
    ``local:N``, a cluster of N single-threaded worker processes on 127.0.0.1 that lives as
    long as the ``with`` block."""
    from distributed import Client, LocalCluster

    if address.startswith("local:"):
        n = address[6:]
        if not n.isdigit() or int(n) < 1:
            raise ClusterError(f"cluster {address!r}: use local:N with N >= 1 workers")
        with (
            LocalCluster(
                n_workers=int(n),
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as e:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {e}") from None
    with client:
        yield client


# ---- worker side: pure functions of their arguments ------------------------------------------

_MODELS: dict[ModelSpec, tuple] = {}
_MODELS_LOCK = threading.Lock()


def worker_models(spec: ModelSpec) -> tuple:
    """(base, gistnet) for ``spec``, loaded once per process."""
    with _MODELS_LOCK:
        got = _MODELS.get(spec)
        if got is None:
            import torch

            import mcmodels

            if spec.threads:
                torch.set_num_threads(spec.threads)
            base = mcmodels.load_base(spec.model)
            gistnet = mcmodels.pick_gistnet(base, spec.gistnet, untrained_ok=True)
            got = _MODELS[spec] = (base, gistnet)
    return got


def _gister(spec: ModelSpec, dtype: str):
    from mcruntime.streaming import Gister

    base, gistnet = worker_models(spec)
    return Gister.for_tree(base, gistnet, SimpleNamespace(dtype=dtype), batch=GISTER_BATCH)


def worker_binding(spec: ModelSpec, dtype: str, kind: str | None) -> dict:
    """What a session records about these models (``session_binding``) and checks
    (``gistnet_binding``), the gist width and the model's name."""
    from mcruntime.binding import gistnet_binding, session_binding

    base, gistnet = worker_models(spec)
    return {
        "binding": session_binding(base, gistnet, dtype, kind),
        "check": gistnet_binding(base, gistnet, dtype),
        "dim": base.d_model,
        "name": base.name,
    }


def tokenize_inputs(spec: ModelSpec, items: list[tuple[str, int, bytes | None]]) -> dict:
    """Read, decode and tokenise inputs as the serial ingest does: per input its sha256 and
    int32 token ids, or the one-line reason it is no longer text (``{"inputs": [...]}``)."""
    from mcruntime.render import render_document

    t0 = time.perf_counter()
    base, _ = worker_models(spec)
    out = []
    for name, size, data in items:
        try:
            text = Input(name, size, data).text()
        except InputError as e:
            out.append({"name": name, "error": str(e), "kind": e.kind})
            continue
        ids = base.tokenizer.encode(render_document(text, name))
        sha = hashlib.sha256(text.encode()).hexdigest()
        out.append({"name": name, "sha": sha, "ids": np.asarray(ids, dtype=np.int32)})
    return {"inputs": out, "seconds": time.perf_counter() - t0}


@dataclass
class EpochJob:
    """The work of one epoch of the timeline: the level-1 gister calls that start in it (as
    the serial ingest batches them: one append's nodes, 256 at a time), and its key chunks."""

    first: int  # global position of the epoch's first token
    calls: list[tuple[int, int]]  # level-1 node ranges [a, b), contiguous, one gister call each
    call_tokens: np.ndarray  # int32, the tokens of those nodes (may reach into the next epoch)
    tokens: np.ndarray  # int32, the epoch's tokens (for the key chunks; else empty)
    following: np.ndarray  # up to EXTEND tokens after the epoch (BM25 words cut at its end)
    context: np.ndarray  # tokens before it (left context of dense keys)
    block: int
    epoch: int
    dtype: str
    kind: str | None
    chunks: bool = False  # compute the retrieval-key chunks of this (complete) epoch


@dataclass
class EpochResult:
    first: int  # first level-1 node of ``gists``
    gists: np.ndarray  # level-1 gists of the job's calls, in the stored dtype
    chunks: dict[str, bytes]  # tree object name -> bytes
    seconds: float


def chunk_name(kind: str, first: int, stop: int) -> str:
    """The object a ``NodeIndex`` stores for level-1 blocks ``[first, stop)`` of one key kind
    (``mcruntime.indexing``)."""
    return f"retrieval/{kind}/l1-{first:012d}-{stop:012d}.npz"


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def gist_epoch(spec: ModelSpec, job: EpochJob) -> EpochResult:
    """The epoch's level-1 gists, one gister call per serial call, and its key chunks.

    Level 1 is where the work is (a level above has 1/B of the nodes); the serial batches
    are kept because a matrix kernel's result for one row can depend on the batch it is in."""
    t0 = time.perf_counter()
    B = job.block
    first = job.calls[0][0] if job.calls else job.first // B
    parts = []
    if job.calls:
        gister = _gister(spec, job.dtype)
        for a, b in job.calls:
            kids = job.call_tokens[(a - first) * B : (b - first) * B].reshape(b - a, B)
            parts.append(np.asarray(gister(1, kids)))
    gists = np.concatenate(parts) if parts else np.zeros((0, 0), np.float16)
    chunks: dict[str, bytes] = {}
    if job.chunks:
        base, _ = worker_models(spec)
        b0, b1 = job.first // B, (job.first + job.epoch) // B
        if "bm25" in CHUNK_KINDS.get(job.kind, ()):
            from mcruntime.lexical import block_terms

            def decode(ids) -> str:  # as NodeIndex decodes
                return base.tokenizer.decode([int(i) for i in ids], skip_special=True)

            bt = block_terms(decode, job.tokens, B, following=job.following)
            chunks[chunk_name("bm25", b0, b1)] = _npz(bt.to_arrays())
        if "dense" in CHUNK_KINDS.get(job.kind, ()):
            from mcruntime.dense import DenseSpec, block_keys

            # as NodeIndex.update: whole windows from block 0, one window per forward row (an
            # epoch is whole windows), so the keys do not depend on the appends' boundaries
            ds = DenseSpec()
            keys = block_keys(base, job.tokens, ds, block=B, start_context=job.context, batch=1)
            chunks[chunk_name("dense-" + ds.id(base), b0, b1)] = _npz(
                {"keys": keys.astype(np.float16)}
            )
    return EpochResult(first, gists, chunks, time.perf_counter() - t0)


@dataclass
class UpperJob:
    """Every level >= 2 of one append, each level one gister call as the store makes it.
    ``pieces[level]``: the children at ``level`` that come from elsewhere, in order, as
    (index into the task's ``sources``, lo, hi): a source is the result of an earlier epoch or
    upper job (passed as a future in a plain list, so Dask hands the worker the result) or rows
    read from the tree; each piece gives the nodes [lo, hi) of that level."""

    old: int
    new: int
    block: int
    dtype: str
    pieces: dict[int, list[tuple[int, int, int]]]


@dataclass
class UpperResult:
    levels: dict[int, tuple[int, np.ndarray]]  # level -> (first node, gists)
    kids: dict[int, str]  # level -> digest of the children gisted (checked at commit)
    seconds: float


def _piece_rows(src, level: int, lo: int, hi: int) -> np.ndarray:
    if isinstance(src, EpochResult):
        return src.gists[lo - src.first : hi - src.first]
    if isinstance(src, UpperResult):
        first, g = src.levels[level]
        return g[lo - first : hi - first]
    return np.asarray(src)  # rows read from the tree: exactly [lo, hi)


def _digest(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()


def gist_upper(spec: ModelSpec, job: UpperJob, sources: list) -> UpperResult:
    """The gists an append adds above level 1, bottom-up as ``gist_completed`` calls."""
    t0 = time.perf_counter()
    gister = _gister(spec, job.dtype)
    B = job.block
    levels: dict[int, tuple[int, np.ndarray]] = {}
    kids_seen: dict[int, str] = {}
    lv = 2
    while True:
        a, b = mcstore.completed(job.old, job.new, lv, B)
        if a == b:
            break
        parts = [
            _piece_rows(sources[i], lv - 1, lo, hi) for i, lo, hi in job.pieces.get(lv - 1, [])
        ]
        start = a * B + sum(len(x) for x in parts)
        if lv - 1 in levels and b * B > start:  # the append's own nodes one level down
            first, own = levels[lv - 1]
            parts.append(own[start - first : b * B - first])
        kids = np.concatenate(parts).reshape(b - a, B, -1)
        kids_seen[lv] = _digest(kids)
        levels[lv] = (a, np.asarray(gister(lv, kids)))
        lv += 1
    return UpperResult(levels, kids_seen, time.perf_counter() - t0)


def gist_call(spec: ModelSpec, dtype: str, level: int, kids: np.ndarray) -> np.ndarray:
    """One gister call as the store makes it (the serial path's batches)."""
    return np.asarray(_gister(spec, dtype)(level, kids))


@dataclass(frozen=True)
class TreeRef:
    """What a worker needs to open the tree: its URL, storage options and id (a tree
    recreated at the same URL is another tree: the handle a process keeps is not reused)."""

    url: str
    storage_options: dict
    tree_id: str


_TREES: dict[tuple[str, str], mcstore.Tree] = {}
_TREES_LOCK = threading.Lock()


def worker_tree(ref: TreeRef) -> mcstore.Tree:
    """The tree opened for writing, once per process (``write_ahead`` needs only its
    geometry and backend, never its newest version)."""
    key = (ref.url, json.dumps(ref.storage_options, sort_keys=True, default=repr))
    with _TREES_LOCK:
        tree = _TREES.get(key)
        if tree is None or tree.tree_id != ref.tree_id:
            tree = mcstore.open(
                ref.url, "a", storage_options=ref.storage_options or None, telemetry=False
            )
            _TREES[key] = tree
    return tree


@dataclass
class ShardJob:
    """The complete shards one epoch of the timeline completes: per shard its array, its
    index and its rows in pieces (index into the task's ``sources``, level, lo, hi), as
    ``UpperJob.pieces``: a source is an epoch or upper job's result (a future in the plain
    list, so the worker gets the result) or rows the client holds (tokens, creation times,
    rows committed before this run)."""

    epoch: int
    tree: TreeRef
    shards: list[tuple[str, int, list[tuple[int, int, int, int]]]]


@dataclass
class ShardResult:
    epoch: int
    written: dict[str, int]  # "<array>/<k>" -> crc32c, for append(written=…)
    io: dict[str, int]  # this task's store requests and bytes
    seconds: float


def write_shards(job: ShardJob, sources: list) -> ShardResult:
    """Write the epoch's complete shards ahead of the commit that makes them visible, several
    at a time (on an object store each is a request's latency)."""
    t0 = time.perf_counter()
    tree = worker_tree(job.tree)
    before = tree.io_stats  # the process's counters: exact with one thread per worker

    def write(shard) -> dict[str, int]:
        name, k, parts = shard
        rows = np.concatenate([_piece_rows(sources[i], lv, lo, hi) for i, lv, lo, hi in parts])
        return tree.write_ahead(name, k, rows)

    written: dict[str, int] = {}
    with ThreadPoolExecutor(min(WRITE_THREADS, len(job.shards))) as ex:
        for got in ex.map(write, job.shards):
            written.update(got)
    after = tree.io_stats
    io_ = {k: after[k] - before.get(k, 0) for k in after}
    return ShardResult(job.epoch, written, io_, time.perf_counter() - t0)


# ---- client side: the plan and the single committer ------------------------------------------


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
class _Append:
    old: int
    new: int
    ids: np.ndarray
    source: str
    tags: tuple[str, ...]
    message: str
    progress: int  # input bytes done once this is committed
    ends_input: bool = False
    seq: int = 0  # its number in this run (the key of its upper job)
    now: int = 0  # its nodes' creation time (and its commit's), fixed when planned


@dataclass
class _Mark:  # an input finished without an append of its own (present, or skipped)
    progress: int
    skipped: InputError | None = None
    ends_input: bool = True


def serial_calls(
    old: int, new: int, block: int, level: int = 1, batch: int = GISTER_BATCH
) -> list[tuple[int, int]]:
    """The gister batches of the serial append ``old -> new`` at ``level``: node ranges."""
    a, b = mcstore.completed(old, new, level, block)
    return [(s, min(b, s + batch)) for s in range(a, b, batch)]


class BulkIngest:
    """One bulk ingest run into one open tree (see the module docstring)."""

    def __init__(
        self, client, tree, spec: ModelSpec, config: BulkConfig, kind, report, dense_id=None
    ):
        self.client, self.tree, self.spec, self.cfg = client, tree, spec, config
        self.kind, self.report, self.dense_id = kind, report, dense_id
        self.B, self.E = tree.block, tree.epoch
        self.per = self.E // self.B  # level-1 blocks per epoch
        self.chunk_kinds = CHUNK_KINDS.get(kind, ())
        self.ctx = 0  # tokens kept before an epoch: the left context of its dense keys
        self.window_blocks = 1  # dense keys are made for whole windows of blocks only
        if "dense" in self.chunk_kinds:
            from mcruntime.dense import DenseSpec

            self.ctx = DenseSpec().context
            self.window_blocks = DenseSpec().window // self.B
        L0 = tree.length
        self.committed = L0
        self.stored = self._stored_blocks()  # level-1 blocks whose key chunks are stored
        first = (L0 // self.E) * self.E
        if self.chunk_kinds:
            first = min(first, self.stored // self.per * self.E)
        self.next_epoch = first // self.E
        start = max(0, first - self.ctx)
        self.timeline = _Timeline(start, np.asarray(tree.tokens(start, L0), np.int32))
        self.planned_end = L0
        self.L0 = L0
        self.pending: deque[_Append | _Mark] = deque()
        # jobs: ("e", epoch) or ("u", append number) -> future, and fetched results
        self.futures: dict[tuple, object] = {}
        self.results: dict[tuple, EpochResult | UpperResult] = {}
        # level -> [lo, hi, job]: which job makes the nodes [lo, hi) of that level
        self.producers: dict[int, list[tuple[int, int, tuple]]] = {}
        self.calls: deque[tuple[int, int]] = deque()  # level-1 calls not yet in a job
        self.call_epochs: dict[int, int] = {}  # first node of a call -> epoch of its job
        self.uppers: deque[_Append] = deque()  # appends whose upper job is not submitted
        self.seq = 0  # appends planned
        # shard jobs: the next epoch to write, the nodes per level whose job is submitted (or
        # that the tree holds), and (end, now) of the planned appends whose nodes they write
        self.ref = TreeRef(tree.url, dict(tree.storage_options or {}), tree.tree_id)
        self.gset = tree.snapshot.gset
        self.gv = len(tree.gistnet_table()) - 1  # the gist version a new node gets
        self.next_shard = L0 // self.E
        self.made: dict[int, int] = {}
        lv = 1
        while self.B**lv <= L0:
            self.made[lv] = mcstore.num_nodes(L0, lv, self.B)
            lv += 1
        self.ends: deque[tuple[int, int]] = deque()
        self.last_now = 0
        self.done = done_chunks(SimpleNamespace(tree=tree))
        self.on_progress: Callable[[int], None] | None = None
        self.on_skip: Callable[[InputError], None] | None = None

    # -- what is stored ---------------------------------------------------------------------

    def _ready(self, length: int) -> int:
        """Level-1 blocks a NodeIndex has indexed at this length: EXTEND tokens after each,
        and for dense keys whole windows (``NodeIndex.update``, ``indexed``)."""
        ready = max(0, length - EXTEND) // self.B
        return ready // self.window_blocks * self.window_blocks

    def _stored_blocks(self) -> int:
        """As ``NodeIndex._load``: for each kind the contiguous run of chunks from block 0
        (within the ready blocks); the least over the kinds."""
        if not self.chunk_kinds:
            return 0
        names = set(self.tree.objects())
        ready = self._ready(self.tree.length)
        reach = None
        for kind in self.chunk_kinds:
            name = "bm25" if kind == "bm25" else f"dense-{self.dense_id}"
            have = 0
            while have + self.per <= ready and chunk_name(name, have, have + self.per) in names:
                have += self.per
            reach = have if reach is None else min(reach, have)
        return reach or 0

    # -- planning ---------------------------------------------------------------------------

    def plan(self, got: dict, base_bytes: int, size: int) -> None:
        """Queue the chunks of one tokenised input not yet in the tree (``ingest_text``)."""
        if "error" in got:
            self.pending.append(_Mark(base_bytes + size, InputError(got["error"], got["kind"])))
            return
        ids, sha, source = got["ids"], got["sha"], got["name"]
        n = len(ids)
        versions = self.done.setdefault(sha, {})
        complete = any(not missing_ranges(m, r, m or 1) for m, r in versions.items())
        have = versions.setdefault(n, [])
        todo = [] if complete else missing_ranges(n, have, self.cfg.chunk_tokens)
        if not todo:
            self.report.skipped_done += 1
            self.pending.append(_Mark(base_bytes + size))
            return
        for a, b in todo:
            name = part_name(source, a, b, n, self.cfg.chunk_tokens)
            old = self.planned_end
            self.last_now = max(time.time_ns(), self.last_now + 1)
            ap = _Append(
                old,
                old + b - a,
                ids[a:b],
                name,
                (f"sha256={sha}", f"tokens={a}-{b}/{n}"),
                f"ingest {name}",
                base_bytes + round(size * b / max(1, n)),
                now=self.last_now,
            )
            if self.cfg.worker_shards:
                self.ends.append((ap.new, ap.now))
            self.pending.append(ap)
            self.timeline.extend(ap.ids)
            self.planned_end = ap.new
            have.append((a, b))
            self.calls.extend(serial_calls(ap.old, ap.new, self.B))
            ap.seq, self.seq = self.seq, self.seq + 1
            if serial_calls(ap.old, ap.new, self.B, level=2):
                self.uppers.append(ap)
        self.report.files += 1
        self.pending[-1].progress = base_bytes + size
        self.pending[-1].ends_input = True

    def submit_epochs(self, final: bool) -> None:
        """Submit every epoch whose tokens (and EXTEND after it) are planned; all of them
        (the last one partial) once every input is planned."""
        while True:
            e = self.next_epoch
            a, b = e * self.E, (e + 1) * self.E
            if not (b + EXTEND <= self.planned_end or (final and a < self.planned_end)):
                self.submit_shards()
                return
            calls = []
            while self.calls and self.calls[0][0] * self.B < b:
                calls.append(self.calls.popleft())
                self.call_epochs[calls[-1][0]] = e
            tokens = self.timeline.take(a, b)
            following = self.timeline.take(b, b + EXTEND)
            chunks = (
                bool(self.chunk_kinds)
                and b // self.B > self.stored
                and len(tokens) == self.E
                and len(following) == EXTEND
            )
            if not calls and not chunks:
                self.next_epoch += 1
                continue
            none = np.zeros(0, np.int32)
            job = EpochJob(
                first=a,
                calls=calls,
                call_tokens=self.timeline.take(calls[0][0] * self.B, calls[-1][1] * self.B)
                if calls
                else none,
                tokens=tokens if chunks else none,
                following=following,
                context=self.timeline.take(a - self.ctx, a) if chunks else none,
                block=self.B,
                epoch=self.E,
                dtype=self.tree.dtype,
                kind=self.kind,
                chunks=chunks,
            )
            key = ("e", e)
            self.futures[key] = self.client.submit(gist_epoch, self.spec, job, pure=False)
            if calls:
                self.producers.setdefault(1, []).append((calls[0][0], calls[-1][1], key))
                self.made[1] = calls[-1][1]
            self.report.epoch_tasks += 1
            self.next_epoch += 1
            self.submit_uppers()

    def submit_uppers(self) -> None:
        """Submit the upper job of every append whose level-1 calls are all submitted, in
        order (each may need the nodes of the ones before)."""
        while self.uppers:
            ap = self.uppers[0]
            if any(a not in self.call_epochs for a, _ in serial_calls(ap.old, ap.new, self.B)):
                return
            self.uppers.popleft()
            pieces: dict[int, list] = {}
            sources: list = []
            lv, key = 2, ("u", ap.seq)
            while True:
                a, b = mcstore.completed(ap.old, ap.new, lv, self.B)
                if a == b:
                    break
                hi = b * self.B  # children from other jobs: up to the append's own ones
                if lv > 2:
                    hi = min(hi, mcstore.completed(ap.old, ap.new, lv - 1, self.B)[0])
                pieces[lv - 1] = []
                for src, lo, hi_ in self._pieces(lv - 1, a * self.B, hi):
                    pieces[lv - 1].append((len(sources), lo, hi_))
                    sources.append(src)
                self.producers.setdefault(lv, []).append((a, b, key))
                self.made[lv] = b
                lv += 1
            job = UpperJob(ap.old, ap.new, self.B, self.tree.dtype, pieces)
            self.futures[key] = self.client.submit(gist_upper, self.spec, job, sources, pure=False)
            self.report.upper_tasks += 1

    def shard_plan(self, e: int) -> list[tuple[str, int, int, int, int]]:
        """The complete shards epoch ``e`` completes: (array, level, shard, lo, hi) with
        [lo, hi) its rows. Tokens, and at each level whose shard ends where the epoch does
        (a shard is an epoch of tokens, or one node where a node spans more) its gists,
        gist versions, creation times and flags."""
        end = (e + 1) * self.E
        out = [("tokens", 0, e, e * self.E, end)]
        lv = 1
        while self.B**lv <= end:
            S = self.tree.geo.level_shard_rows(lv)
            span = S * self.B**lv
            if end % span == 0:
                k = end // span - 1
                gname, vname = gist_names(lv, self.gset)
                for name in (gname, vname, f"created_{lv}", f"flags_{lv}"):
                    out.append((name, lv, k, k * S, (k + 1) * S))
            lv += 1
        return out

    def submit_shards(self) -> None:
        """Submit the shard job of every epoch whose rows all have a source, in order."""
        while self.cfg.worker_shards and (self.next_shard + 1) * self.E <= self.planned_end:
            e = self.next_shard
            plan = self.shard_plan(e)
            if any(lv and self.made.get(lv, 0) < hi for _, lv, _, _, hi in plan):
                return  # a job making some of its gists is not submitted yet
            sources: list = []
            shards = []
            for name, lv, k, lo, hi in plan:
                parts = []
                for src, a, b in self._shard_rows(name, lv, lo, hi):
                    parts.append((len(sources), lv, a, b))
                    sources.append(src)
                shards.append((name, k, parts))
            job = ShardJob(e, self.ref, shards)
            self.futures[("s", e)] = self.client.submit(write_shards, job, sources, pure=False)
            self.report.shard_tasks += 1
            self.next_shard += 1
            while self.ends and self.ends[0][0] <= self.next_shard * self.E:
                self.ends.popleft()  # later shards hold nodes that end past it

    def _shard_rows(self, name: str, lv: int, lo: int, hi: int) -> list[tuple[object, int, int]]:
        """Where rows [lo, hi) of one array come from (see ``ShardJob``)."""
        if lv == 0:
            return [(self.timeline.take(lo, hi), lo, hi)]
        if name.startswith("gists_"):
            return self._pieces(lv, lo, hi)
        old = min(hi, max(lo, mcstore.num_nodes(self.L0, lv, self.B)))  # in the tree already
        out = [(self.tree.array_rows(name, lo, old), lo, old)] if old > lo else []
        n = hi - old
        if name.startswith("gistver_"):
            rows = np.full(n, self.gv, np.uint16)
        elif name.startswith("flags_"):
            rows = np.zeros(n, np.uint8)
        else:  # created: the time of the append that completes each node
            news = np.fromiter((a for a, _ in self.ends), np.int64, len(self.ends))
            nows = np.fromiter((t for _, t in self.ends), np.int64, len(self.ends))
            stops = (np.arange(old, hi, dtype=np.int64) + 1) * self.B**lv
            rows = nows[np.searchsorted(news, stops, side="left")]
        return [*out, (rows, old, hi)] if n else out

    def _pieces(self, level: int, lo: int, hi: int) -> list[tuple[object, int, int]]:
        """Where the nodes [lo, hi) of ``level`` come from: the jobs that make them, and the
        tree for nodes committed before (by an earlier run, or released here)."""
        out: list[tuple[object, int, int]] = []
        pos = lo
        for plo, phi, key in self.producers.get(level, []):
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
            out.append((self.futures[key], pos, stop))
            pos = stop
        if pos < hi:
            out.append(self._tree_rows(level, pos, hi))
        return out

    def _tree_rows(self, level: int, lo: int, hi: int) -> tuple[np.ndarray, int, int]:
        if hi > self.tree.num_nodes(level):
            raise RuntimeError(f"bulk ingest: level-{level} nodes {lo}-{hi} have no source")
        return (self.tree.gists(level, lo, hi), lo, hi)

    # -- committing -------------------------------------------------------------------------

    def _shard_epochs(self, ap: _Append) -> range:
        """The epochs whose shards this append completes (and a worker writes)."""
        if not self.cfg.worker_shards:
            return range(0)
        return range(ap.old // self.E, ap.new // self.E)

    def _needs(self, ap: _Append) -> list[tuple] | None:
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

    def _result(self, key: tuple) -> EpochResult | UpperResult | None:
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
                self.results[key] = res = ShardResult(key[1], {}, {}, 0.0)
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
            if isinstance(item, _Append):
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

    def _append(self, ap: _Append) -> None:
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
        have = self._ready(self.committed)
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
        if isinstance(item, _Mark) and item.skipped is not None:
            self.report.skipped.append(str(item.skipped))
            if self.on_skip:
                self.on_skip(item.skipped)
        if self.on_progress:
            self.on_progress(item.progress)

    # -- the run ----------------------------------------------------------------------------

    def run(self, inputs: list[Input]) -> None:
        groups = _groups(inputs, self.cfg.tokenize_bytes)
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

    def __init__(self, run: BulkIngest, ap: _Append):
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
        if (first, len(g)) != (a, b - a) or res.kids[level] != _digest(kids):
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


def _groups(inputs: list[Input], max_bytes: int) -> list[list[tuple[Input, int]]]:
    """Consecutive inputs in groups of about ``max_bytes``, each with its byte offset."""
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
    try:  # a scheduler without workers would leave every task waiting
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError:
        raise ClusterError(
            f"the Dask cluster at {client.scheduler.address} has no workers "
            f"(waited {WORKER_WAIT_S} s); start some, or use --dask local:N"
        ) from None
    report.workers = len(client.scheduler_info().get("workers", {}))
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
