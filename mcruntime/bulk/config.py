"""What a bulk ingest is given and what it reports: the models a worker loads, the run's
settings and its counters (plain dataclasses), and the constants both sides of the run share."""

from __future__ import annotations

from dataclasses import dataclass, field

from mcmodels.defaults import DEFAULT_MODEL  # torch-free: the one definition
from mcruntime.ingest import CHUNK_TOKENS, IngestReport
from mcruntime.retrieval import Keys

CHUNK_KINDS = {
    Keys.BM25: (Keys.BM25,),
    Keys.HYBRID: (Keys.BM25, "dense"),
}  # retrieval kind -> stored chunks
GISTER_BATCH = 256  # blocks per gister call, serial (streaming.Gister) and bulk alike: a
# kernel's rounding can depend on the batch, and bulk gists must be bit for bit the serial ones
# epochs of tokens per commit: the committer's requests per epoch fall as 1/N (bench/bulk.py)
# while a client killed mid-run redoes at most N epochs of work
COMMIT_EVERY_EPOCHS = 16


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
    retrieval: str | None = "auto"  # key kind; "auto": the tree's own (hybrid for a new tree)
    tokenize_bytes: int = 1 << 20  # input bytes per tokenise task (small files go together)
    tokenize_ahead: int = 16  # tokenise tasks submitted beyond the one being committed
    # epoch and upper jobs in flight or held: bounds the client's memory (a batch's jobs are
    # held until its commit, whatever this says)
    jobs_ahead: int = 128
    # one commit (``Tree.append_many``, the key chunks in it) per batch of chunks ending at the
    # first chunk that reaches a multiple of this many epochs of tokens; 0 or 1: one commit
    # per file or chunk and one per epoch of key chunks, as the serial ingest commits
    commit_every_epochs: int = COMMIT_EVERY_EPOCHS
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
    segments: int = 0  # segments appended (one per file or chunk; ``commits`` counts commits)
    upper_tasks: int = 0  # jobs gisting the levels >= 2 of one chunk
    upper_calls: int = 0  # gister calls sent to a worker while the committer waits
    upper_nodes: int = 0
    fallback_calls: int = 0  # level-1 calls not found precomputed (0 unless the plan is wrong)
    index_commits: int = 0  # commits of key chunks alone (per-chunk commits only)
    index_chunks: int = 0  # key-chunk objects committed
    run_s: float = 0.0  # client time from the first tokenise task to the last commit
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
