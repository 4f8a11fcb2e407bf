"""mcstore: the MegaContext tree store (numpy in, numpy out; never imports torch).

Layout of a tree (format 1) on any fsspec URL::

    zarr.json                         zarr v3 root group; attrs["megacontext"] = static facts
                                      (format, block B, dim d, dtype, epoch E, tree id, fork bases)
    arrays/<name>/zarr.json           zarr v3 array, shape 2**40 rows (never rewritten)
    arrays/<name>/c/<k>[/0]           complete shards only, zarr sharding_indexed + crc32c
    log/<n:020d>.json                 commit records (put-if-absent), self-checksummed
    log/head                          a hint of the newest n (probing forward corrects it)
    tail/<n>-<nonce>.bin              one delta per commit: its rows not yet in a full shard
    stage/<n>-<nonce>/<name>/<k>      shards that an orphan blocked at the canonical name
    redact/<n>-<nonce>/<name>/<k>     shards a redaction rewrote (read instead of the canonical)
    meta/{binding,objects}-<hash>.json  content-addressed small JSON (binding, object map)
    index/<sha256>.bin                committed opaque objects (vector index files)
    refs/tags/<name>.json, refs/forks/<id>.json   tags and fork pins
    telemetry/<writer>-<seq>.npz      access counts, never part of a commit

Arrays: ``tokens`` (int32, chunk = one block, shard = E tokens); per level l >= 1
``gists_l`` (float16, or bfloat16 stored as uint16 bits; chunk = one node, shard = E/B**l
rows, at least 1), ``gistver_l`` (uint16), ``created_l`` (int64 ns), ``flags_l`` (uint8);
segments ``seg_start``/``seg_time``/``seg_end`` (int64) and ``seg_heap`` (uint8 JSON text).
A regist writes new gist arrays ``gists_l.<hash>``/``gistver_l.<hash>``.

Modules, from the bottom: ``format`` (encodings, no I/O), ``backend`` (object access;
``local`` and ``s3`` hold its classes for local disk and S3), ``errors``, ``cache``; ``records`` (commit log, head, tags), ``objects`` (meta blobs, named
objects), ``nodes`` (segments, flags), ``telemetry``, ``tail`` (deltas), ``shards`` (shard
writes, staged overrides), ``bases`` (fork bases: where they may lie, checked before a first
read), ``reads`` (shard reads through the cache), ``gisting``, ``redact`` (rows rewritten in
place); then
``view`` (``TreeView``: a handle's state and reads), ``tree`` (``Tree``: writes and the commit
protocol), ``entry`` (create, open), ``ops`` (fork, gc, verify) and ``purge``. ``testing`` holds backend
wrappers (logging, latency) for tests and benchmarks. See ``docs/architecture.md``.
"""

from .backend import Backend, open_backend
from .entry import backend_for, create, open
from .errors import (
    BindingMismatch,
    CommitConflict,
    CommitUnknown,
    CorruptTree,
    InvalidArgument,
    PurgeRefused,
    ReadOnlyError,
    StoreAccessError,
    StoreError,
    TreeExists,
    TreeNotFound,
    VersionNotFound,
)
from .format import canonical_json, completed, load_npz, num_levels, num_nodes, span
from .gisting import bf16_to_float32, float32_to_bf16
from .nodes import Segment
from .ops import GCReport, destroy, fork, gc, verify
from .purge import PurgeReport, purge
from .records import LogEntry
from .tree import Tree

__all__ = [
    "Backend",
    "BindingMismatch",
    "CommitConflict",
    "CommitUnknown",
    "CorruptTree",
    "GCReport",
    "InvalidArgument",
    "LogEntry",
    "PurgeRefused",
    "PurgeReport",
    "ReadOnlyError",
    "Segment",
    "StoreAccessError",
    "StoreError",
    "Tree",
    "TreeExists",
    "TreeNotFound",
    "VersionNotFound",
    "backend_for",
    "bf16_to_float32",
    "canonical_json",
    "completed",
    "create",
    "destroy",
    "float32_to_bf16",
    "fork",
    "gc",
    "load_npz",
    "num_levels",
    "num_nodes",
    "open",
    "open_backend",
    "purge",
    "span",
    "verify",
]
