"""The worker side of a bulk ingest: the tasks (tokenise inputs, gist an epoch's level-1 nodes
and make its retrieval-key chunks, gist an append's upper levels, write an epoch's complete
shards) and the per-process caches they share. Tasks are pure functions of their arguments
(a worker lost mid-task is recomputed by Dask); each worker process loads the models and opens
the tree once, so nothing large travels through the scheduler.

Bit for bit: a matrix kernel's result for one row can depend on the batch the row is in, so
the gister is called in the serial path's batches (``GISTER_BATCH``)."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from distributed import WorkerPlugin, get_worker

import mcstore
from mcruntime.bulk.config import CHUNK_KINDS, GISTER_BATCH, ModelSpec
from mcruntime.errors import InputError
from mcruntime.ingest import Input
from mcruntime.retrieval import Keys
from mcstore.backend import IO_THREADS

WRITE_THREADS = IO_THREADS  # shards a shard task writes at once (as a commit does)

PLUGIN = "megacontext-bulk"  # the name the worker plugin is registered under


class WorkerResources(WorkerPlugin):
    """What each worker process loads once and every task on it shares: the models (by
    ``ModelSpec``) and the tree handle (by URL and options). Registered on the cluster by the
    driver (``register``); a task finds it through its worker. The driver's own process uses
    ``LOCAL``, for the gists it computes itself and for the binding check."""

    idempotent = True  # a second run on the same cluster keeps the loaded models
    name = PLUGIN

    def __init__(self):
        self.setup(None)

    def setup(self, worker) -> None:
        self.lock = threading.Lock()
        self.models: dict[ModelSpec, tuple] = {}
        self.trees: dict[tuple[str, str], mcstore.Tree] = {}

    def teardown(self, worker) -> None:
        with self.lock:
            self.models.clear()
            for tree in self.trees.values():
                tree.close()
            self.trees.clear()

    def __getstate__(self) -> dict:  # shipped to workers empty: each loads its own
        return {}

    def __setstate__(self, state: dict) -> None:
        self.setup(None)

    def model_pair(self, spec: ModelSpec) -> tuple:
        """(base, gistnet) for ``spec``, loaded once."""
        with self.lock:
            got = self.models.get(spec)
            if got is None:
                import torch

                import mcmodels

                if spec.threads:
                    torch.set_num_threads(spec.threads)
                base = mcmodels.load_base(spec.model)
                gistnet = mcmodels.pick_gistnet(base, spec.gistnet, untrained_ok=True)
                got = self.models[spec] = (base, gistnet)
        return got

    def tree(self, ref: TreeRef) -> mcstore.Tree:
        """The tree opened for writing, once (``write_ahead`` needs only its geometry and
        backend, never its newest version); a tree recreated at the URL is opened anew."""
        key = (ref.url, json.dumps(ref.storage_options, sort_keys=True, default=repr))
        with self.lock:
            tree = self.trees.get(key)
            if tree is None or tree.tree_id != ref.tree_id:
                tree = mcstore.open(
                    ref.url, "a", storage_options=ref.storage_options or None, telemetry=False
                )
                self.trees[key] = tree
        return tree


LOCAL = WorkerResources()  # the driver process's own


def register(client) -> None:
    """Give every worker of ``client``'s cluster (and any that joins later) its resources."""
    client.register_plugin(WorkerResources(), name=PLUGIN)


def resources() -> WorkerResources:
    """This process's resources: its worker's plugin, or ``LOCAL`` outside a worker."""
    try:
        worker = get_worker()
    except ValueError:
        return LOCAL
    return worker.plugins.get(PLUGIN) or LOCAL


def worker_models(spec: ModelSpec) -> tuple:
    """(base, gistnet) for ``spec``, loaded once per process."""
    return resources().model_pair(spec)


def _gister(spec: ModelSpec, dtype: str):
    from mcruntime.streaming import Gister

    base, gistnet = worker_models(spec)
    return Gister.for_dtype(base, gistnet, dtype, batch=GISTER_BATCH)


def worker_binding(spec: ModelSpec, dtype: str, kind: str | None, recorded=None) -> dict:
    """What a session records about these models (``session_binding``) and checks
    (``gistnet_binding``), the gist width and the model's name."""
    from mcruntime.binding import gistnet_binding, session_binding

    base, gistnet = worker_models(spec)
    return {
        "binding": session_binding(base, gistnet, dtype, kind, recorded),
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
    dense_id: str | None = None  # the tree's meaning keys (binding "retrieval.dense")


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
        if Keys.BM25 in CHUNK_KINDS.get(job.kind, ()):
            from mcruntime.lexical import block_terms

            def decode(ids) -> str:  # as NodeIndex decodes
                return base.tokenizer.decode([int(i) for i in ids], skip_special=True)

            bt = block_terms(decode, job.tokens, B, following=job.following)
            chunks[chunk_name(Keys.BM25, b0, b1)] = _npz(bt.to_arrays())
        if "dense" in CHUNK_KINDS.get(job.kind, ()):
            from mcruntime.static_keys import spec_from_id

            # as NodeIndex.update: whole windows from block 0, one window per forward row (an
            # epoch is whole windows), so the keys do not depend on the appends' boundaries
            ds = spec_from_id(job.dense_id)
            keys = ds.keys(base, job.tokens, job.context, block=B)
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


def digest(a: np.ndarray) -> str:
    """A fingerprint of the children an upper job gists: the committer gists them itself
    unless the store passes the same ones."""
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
        kids_seen[lv] = digest(kids)
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


def worker_tree(ref: TreeRef) -> mcstore.Tree:
    """The tree opened for writing, once per process."""
    return resources().tree(ref)


@dataclass
class ShardJob:
    """The complete shards one epoch of the timeline completes: per shard its array, its
    index and its rows in pieces (index into the task's ``sources``, level, lo, hi), as
    ``UpperJob.pieces``: a source is an epoch or upper job's result (a future in the plain
    list, so the worker gets the result) or rows the client holds (tokens, creation times,
    rows committed before this run)."""

    tree: TreeRef
    shards: list[tuple[str, int, list[tuple[int, int, int, int]]]]


@dataclass
class ShardResult:
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
    return ShardResult(written, io_, time.perf_counter() - t0)
