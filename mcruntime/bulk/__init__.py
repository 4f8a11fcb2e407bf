"""Bulk ingest on a Dask cluster: workers tokenise, gist, key and write the shards; one
client commits, a batch of files at a time.

A serial ingest (``mcruntime.ingest``) spends its time in three places: tokenising files,
gisting every completed node with GistNet, and computing retrieval keys (BM25 terms, dense keys)
for every complete epoch. All three are pure functions of the token timeline, so here they run
on Dask workers: tokenise tasks (inputs in groups of about a megabyte), then one task per epoch
of the timeline (``tree.epoch`` tokens, one complete shard of the token array) holding its
level-1 gists and its retrieval-key chunks.

The client stays the single committer and plans the serial ingest's appends exactly: the same
inputs in the same order, the same chunking and segment names (``part_name``, ``sha256=`` /
``tokens=`` tags). It commits them in batches (``BulkConfig.commit_every_epochs``, 16 by
default): a batch ends at the first chunk that reaches the next multiple of that many epochs of
tokens (or at the end), and is one ``Tree.append_many`` commit holding every segment of its
chunks and the retrieval-key chunks its length makes ready (``objects=``). The tree reads
exactly as after one append per chunk (segments, token ranges, gists); only the log is shorter,
and a commit's requests are paid once per batch instead of once per file (the committer was the
bottleneck from about 2 workers on S3: ``bench/results/bulk.md``). ``commit_every_epochs`` 0 or
1 commits as the serial ingest does: one append per chunk and the key chunks' own commits at
the same points, the same log messages.

Gists reach the store through the ``gister`` callable ``append_many`` calls once per level with
the nodes the whole batch completes at that level (``mcstore.completed(old, new, level)``).
Level 1 (all but 1/B of the work) comes from the epoch tasks; levels 2 and up from one "upper"
task per chunk, submitted as soon as the epoch tasks it reads from are (Dask passes their
results from worker to worker; nodes committed before this run are read from the tree). The
lookup checks that the children the store passes are the ones gisted (tokens; above, a digest
of each chunk's share of them) and otherwise asks a worker to gist exactly what the store
passed, chunk by chunk, while it waits; the tests assert that never happens.

Shards from the workers: most bytes of a commit are its complete shards (every epoch of
tokens completes one shard of ``tokens`` and of the ``gists``/``gistver``/``created``/
``flags`` of each level whose shard ends there), and the committer would write them all.
Instead one "shard" task per epoch opens the tree on a worker and writes the shards that epoch
completes with ``Tree.write_ahead`` (put-if-absent at their canonical names, encoded as the
commit would); the append that completes them gets their checksums (``append(written=…)``)
and writes no shard itself, only its tail delta and record. A shard is a task of its own
because no compute task holds one whole: the serial batches (below) and the appends cross
epoch boundaries, so a shard's gists come from two epoch tasks and from the upper tasks of
several appends (Dask moves them). Creation times are fixed per batch when the client plans its
first chunk (``append_many(now=…)``: every node of a commit has its time), so the
``created_<l>`` shards written ahead are the ones the commit would write; a commit's time is
thus when its batch was opened, shortly before it is made. A shard
task that fails with a store error costs nothing but the committer's own write of those
shards; ``BulkConfig.worker_shards=False`` leaves every shard to the committer (workers that
cannot reach the tree's URL).

Bit for bit: a matrix kernel's result for one row can depend on the batch the row is in (a
batch of one takes another kernel), so the tasks gist in the serial gister's batches (one
chunk's nodes, 256 at a time: ``serial_calls``; each upper level of a chunk in one call, as the
serial ``gist_completed`` calls the gister), whatever the commit's batch. The tree then equals a
serial ingest's: tokens, segments, gists and key chunks, and with per-chunk commits the log
messages (the tests compare them; creation times are times).

Faults: tasks are pure, so a worker lost mid-task is recomputed by Dask (a shard it wrote
before dying is found holding the same bytes: written). A client killed mid-run keeps every
committed batch (at most a batch of work is redone) and a re-run resumes from the segments'
tags (``done_chunks``: each segment of a batch has its own), as a serial re-run would; the
shards the dead run wrote ahead are reused
(tokens and gists are the same bytes; creation times differ, and the commit stages its own
copy of those, as for any orphan). A concurrent writer makes the next commit raise
``CommitConflict``.

Each worker loads the models and opens the tree once, in a Dask worker plugin
(``tasks.WorkerResources``, registered by the run; a later run on the same cluster keeps it),
from a name or path and the tree's URL and storage options: nothing large travels through the
scheduler. Input files are read by the workers, and the tree written
by them, so a remote cluster needs the inputs at the same paths and the tree's URL reachable
(an object store, or a shared file system; stdin travels in the task).

The package: ``config`` (what a run is given and reports), ``cluster`` (the Dask client),
``tasks`` (what the workers run), ``plan`` (the client's plan and job submission) and
``driver`` (the committer and ``bulk_ingest``).
"""

from mcruntime.bulk.cluster import ClusterError, dask_client
from mcruntime.bulk.config import BulkConfig, BulkReport, ModelSpec
from mcruntime.bulk.driver import BulkIngest, bulk_ingest
from mcruntime.bulk.plan import serial_calls
from mcruntime.bulk.tasks import WRITE_THREADS, worker_binding

__all__ = [
    "WRITE_THREADS",
    "BulkConfig",
    "BulkIngest",
    "BulkReport",
    "ClusterError",
    "ModelSpec",
    "bulk_ingest",
    "dask_client",
    "serial_calls",
    "worker_binding",
]
