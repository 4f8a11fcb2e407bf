"""The two ways to a ``Tree`` handle: create a tree, or open one.

``create`` writes the root ``zarr.json`` (the static facts: block, dim, dtype, epoch, tree id,
fork bases) put-if-absent, then the binding, then version 1, also put-if-absent; a tree
exists once version 1 does. A create interrupted between the two leaves a root without commits: creating the same
tree again finishes it, while ``open`` refuses it. ``open`` finds the head (or reads the
version or tag asked for) and never writes.
"""

from __future__ import annotations

import json
import time
import uuid

from . import format as F
from .backend import Backend, open_backend
from .bases import allow_list, check_entries
from .errors import (
    CommitUnknown,
    CorruptTree,
    InvalidArgument,
    TreeExists,
    TreeNotFound,
    VersionNotFound,
)
from .objects import Blobs
from .records import (
    find_head,
    locate_head,
    put_new,
    read_expired,
    read_record,
    read_tag,
    write_head_hint,
)
from .tail import MAX_CHAIN
from .tree import Tree

DEFAULT_CACHE_BYTES = 64 * 2**20
ROOT_BYTES = 2**20  # the root's JSON: the static facts and the fork bases
MAX_DIM = 2**16  # gist width: far beyond any base model's embedding width
DEFAULT_EPOCH = 8192


def read_facts(be: Backend) -> dict:
    try:
        raw = be.read("zarr.json", limit=ROOT_BYTES)
    except FileNotFoundError:
        if be.exists(F.log_key(1)):
            raise root_missing(be) from None
        raise TreeNotFound(
            f"{be.url}: no MegaContext tree here; check the path/URL, or create one"
        ) from None
    except IsADirectoryError:
        raise TreeNotFound(f"{be.url}: not a tree") from None
    except NotADirectoryError:
        raise TreeNotFound(
            f"{be.url} is a file, not a MegaContext tree (a tree is a folder)"
        ) from None
    try:
        facts = json.loads(raw)["attributes"]["megacontext"]
    except (ValueError, KeyError, TypeError):
        raise CorruptTree(
            f"{be.url}: zarr.json is not a MegaContext tree root (or is damaged); restore it "
            "from a copy"
        ) from None
    if not isinstance(facts, dict) or facts.get("format") != F.FORMAT:
        raise CorruptTree(
            f"{be.url}: tree format {facts.get('format')!r} is not supported by this mcstore "
            f"(format {F.FORMAT}); upgrade MegaContext"
        )
    why = check_facts(facts)
    if why:
        raise CorruptTree(
            f"{be.url}: zarr.json is damaged ({why}); restore it from a copy of the tree"
        )
    return facts


def _put_created(be: Backend, key: str, data: bytes, ours) -> bool:
    """``put_new`` for create: an unknown outcome says how to find it out."""
    try:
        return put_new(be, key, data, ours)
    except CommitUnknown as e:
        raise CommitUnknown(
            f"{be.url}: whether the tree was created is unknown: the storage failed while "
            f"{key} was written and it could not be read back ({e}); open it to see, or run "
            "the create again (an interrupted create of the same tree is finished)"
        ) from e


def _holds_tree(tree_id: str):
    """Whether a root's bytes are the root of tree ``tree_id``."""

    def ours(raw: bytes) -> bool:
        try:
            return json.loads(raw)["attributes"]["megacontext"]["tree_id"] == tree_id
        except (ValueError, KeyError, TypeError):
            return False

    return ours


def _holds_nonce(nonce: str):
    """Whether a record's bytes carry ``nonce`` (the record is ours)."""

    def ours(raw: bytes) -> bool:
        try:
            return json.loads(raw).get("nonce") == nonce
        except (ValueError, AttributeError):
            return False

    return ours


def root_missing(be: Backend) -> CorruptTree:
    return CorruptTree(
        f"{be.url}: zarr.json is missing but the tree has commits: the tree is damaged; "
        "restore zarr.json from a copy"
    )


def facts_crc(facts: dict) -> int:
    return F.crc32c(F.canonical_json({k: v for k, v in facts.items() if k != "crc"}))


# the facts of a root written before roots carried a checksum: a root without one must have
# only these (a bit flip in the key "crc" leaves a root with a stray key and no checksum)
UNCHECKSUMMED_FACTS = frozenset(
    {"format", "block", "dim", "dtype", "stored_dtype", "epoch", "seg_shard", "heap_shard",
     "token_dtype", "tree_id", "created", "bases"}
)  # fmt: skip
FIXED_FACTS = {"seg_shard": F.SEG_SHARD, "heap_shard": F.HEAP_SHARD, "token_dtype": "int32"}


def check_facts(facts: dict) -> str | None:
    """Why the root's facts cannot be this store's (None if they can). Trees written before
    the root carried a checksum have none, and only the facts of that time; every later root
    is checked bit for bit. Whoever writes the tree can recompute the checksum, so the facts
    are also bounded: no shard of the geometry may exceed ``F.MAX_SHARD_BYTES``."""
    if "crc" in facts:
        if facts["crc"] != facts_crc(facts):
            return "its checksum does not match"
    elif set(facts) - UNCHECKSUMMED_FACTS:
        stray = sorted(set(facts) - UNCHECKSUMMED_FACTS)
        return f"no checksum, and facts {stray} that only checksummed roots have"

    def pow2(v, lo, hi) -> bool:
        return type(v) is int and lo <= v <= hi and v & (v - 1) == 0

    if not pow2(facts.get("block"), 2, 1024):
        return f"block = {facts.get('block')!r}"
    if not pow2(facts.get("epoch"), facts["block"], 2**30):
        return f"epoch = {facts.get('epoch')!r}"
    if type(facts.get("dim")) is not int or not 1 <= facts["dim"] <= MAX_DIM:
        return f"dim = {facts.get('dim')!r}"
    if facts.get("dtype") not in F.DTYPES:
        return f"dtype = {facts.get('dtype')!r}"
    for k, v in {**FIXED_FACTS, "stored_dtype": F.DTYPES[facts["dtype"]]}.items():
        if k in facts and facts[k] != v:
            return f"{k} = {facts[k]!r}"
    geo = F.Geometry(facts["block"], facts["dim"], facts["dtype"], facts["epoch"])
    if geo.largest_shard() > F.MAX_SHARD_BYTES:
        return (
            f"block {facts['block']}, dim {facts['dim']} and epoch {facts['epoch']} make shards "
            f"of {geo.largest_shard()} bytes, more than {F.MAX_SHARD_BYTES}"
        )
    chain = facts.get("tail_chain", 6)
    if type(chain) is not int or not 1 <= chain <= 1024:
        return f"tail_chain = {chain!r}"
    if not isinstance(facts.get("tree_id"), str):
        return "tree id"
    return check_entries(facts.get("bases", []))


def backend_for(url: str | Backend, storage_options: dict | None = None) -> Backend:
    """``url`` opened as a backend; a :class:`Backend` given instead (e.g. a logging or
    latency wrapper from ``mcstore.testing``) is used as it is."""
    if isinstance(url, Backend):
        return url
    return open_backend(url, storage_options)


def open(
    url: str | Backend,
    mode: str = "r",
    *,
    version: int | str | None = None,
    storage_options: dict | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    telemetry: bool | None = None,
    allow_bases: list[str] | None = None,
) -> Tree:
    """Open a tree. mode "r" never writes; "a" appends. ``version`` (int or tag name) opens
    that snapshot read-only. ``telemetry`` defaults to on for "a", off for "r".

    ``allow_bases``: URLs (or folders) where this tree's fork bases may lie besides its own
    folder or bucket (a fork made into another folder); the storage option ``allow_bases``
    (comma-separated) says the same. Every base is checked to be the tree forked from, before
    its first read (``mcstore.bases``)."""
    if mode not in ("r", "a"):
        raise InvalidArgument(f"mode must be 'r' or 'a', not {mode!r}")
    if version is not None and mode == "a":
        raise InvalidArgument(
            f"{url}: a fixed version is read-only; open with mode='r' (or fork it to change it)"
        )
    allow = allow_list(allow_bases) + allow_list((storage_options or {}).get("allow_bases"))
    be = backend_for(url, storage_options)
    facts = read_facts(be)
    if version is None:
        head, rec = locate_head(be)
        if head == 0:
            raise CorruptTree(
                f"{be.url}: tree has no commit (an interrupted create); delete it and create "
                "it again"
            )
        rec = rec if rec is not None else read_record(be, head)
    else:
        v = read_tag(be, version) if isinstance(version, str) else int(version)
        try:
            rec = read_record(be, v)
        except VersionNotFound:
            expired = read_expired(be)
            if v in expired:
                raise expired.error(be.url, v) from None
            head = find_head(be)
            if 1 <= v <= head:
                raise CorruptTree(
                    f"{be.url}: commit record {F.log_key(v)} is missing but later commits exist;"
                    " the tree is damaged there: restore the log from a copy"
                ) from None
            raise VersionNotFound(f"{be.url}: no version {v} (versions 1..{head})") from None
    return Tree(
        be,
        facts,
        rec,
        mode=mode,
        pinned=version is not None,
        cache_bytes=cache_bytes,
        telemetry=(mode == "a") if telemetry is None else bool(telemetry),
        allow_bases=allow,
    )


def create(
    url: str | Backend,
    *,
    dim: int,
    dtype: str = "float16",
    block: int = F.BLOCK,
    binding: dict | None = None,
    gister_id: str | None = None,
    storage_options: dict | None = None,
    epoch: int = DEFAULT_EPOCH,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    bases: list | None = None,
) -> Tree:
    """Create an empty tree (version 1) and return it opened with mode "a".

    ``binding`` is the caller's record of what builds the tree (opaque JSON, compared with
    ``same_binding``); ``gister_id`` names the gister in ``gistnet_table()``; ``bases`` (for
    :func:`mcstore.fork`) lists the trees whose complete shards this one starts from."""
    _check_geometry(dim, dtype, block, epoch)
    be = _empty_place(url, storage_options)
    facts = {
        "format": F.FORMAT,
        "block": int(block),
        "dim": int(dim),
        "dtype": dtype,
        "stored_dtype": F.DTYPES[dtype],
        "epoch": int(epoch),
        "seg_shard": F.SEG_SHARD,
        "heap_shard": F.HEAP_SHARD,
        "token_dtype": "int32",
        "tree_id": uuid.uuid4().hex,
        "created": time.time_ns(),
        "bases": list(bases or []),
        "tail_chain": MAX_CHAIN["object_store" if be.concurrent_io else "local"],
    }
    facts["crc"] = facts_crc(facts)
    facts = _put_root(be, facts)
    rec = _first_record(facts["tree_id"])
    rec["binding"] = Blobs(be).write("binding", {"binding": binding, "gistnets": [gister_id]})
    if not _put_created(be, F.log_key(1), F.encode_record(rec), _holds_nonce(rec["nonce"])):
        raise TreeExists(f"{be.url}: a tree was created here concurrently; open it instead")
    write_head_hint(be, 1)
    return Tree(
        be,
        facts,
        rec,
        mode="a",
        pinned=False,
        cache_bytes=cache_bytes,
        telemetry=True,
        allow_bases=[b["url"] for b in facts.get("bases", [])],  # the caller named them
    )


def _check_geometry(dim: int, dtype: str, block: int, epoch: int) -> None:
    """InvalidArgument unless the tree's shape is one the format can hold."""
    if dtype not in F.DTYPES:
        raise InvalidArgument(f"dtype must be one of {sorted(F.DTYPES)}, not {dtype!r}")
    if int(dim) < 1:
        raise InvalidArgument("dim must be >= 1")
    for nm, v in (("block", block), ("epoch", epoch)):
        if int(v) < 2 or int(v) & (int(v) - 1):
            raise InvalidArgument(f"{nm} must be a power of two >= 2, not {v}")
    if epoch < block:
        raise InvalidArgument("epoch must be >= block")
    if dim > MAX_DIM or epoch > 2**30 or block > 1024:
        raise InvalidArgument(f"dim must be <= {MAX_DIM}, block <= 1024 and epoch <= 2**30")
    if F.Geometry(int(block), int(dim), dtype, int(epoch)).largest_shard() > F.MAX_SHARD_BYTES:
        raise InvalidArgument(
            f"block {block}, dim {dim} and epoch {epoch} make shards larger than "
            f"{F.MAX_SHARD_BYTES} bytes; use a smaller epoch"
        )


def _empty_place(url: str | Backend, storage_options: dict | None) -> Backend:
    """The backend at ``url``, its root made; TreeExists where a tree (or a file) is."""
    be = backend_for(url, storage_options)
    try:
        be.ensure_root()
    except (FileExistsError, NotADirectoryError):
        raise TreeExists(
            f"{be.url} is a file; a tree needs a folder of its own: pick another path"
        ) from None
    if be.exists(F.log_key(1)):
        if not be.exists("zarr.json"):
            raise root_missing(be)
        raise TreeExists(f"{be.url}: a tree already exists here; open it, or pick another path/URL")
    return be


def _put_root(be: Backend, facts: dict) -> dict:
    """Write the root if absent. put_new: a lost answer to our own PUT is recognised by the
    tree id, not taken for another tree; a root left by an interrupted create of an
    identical tree is finished, not refused. -> the facts of the root there."""
    if _put_created(be, "zarr.json", F.root_metadata(facts), _holds_tree(facts["tree_id"])):
        return facts
    try:
        old = read_facts(be)
    except Exception:
        old = None
    if be.exists(F.log_key(1)) or old is None:
        raise TreeExists(f"{be.url}: a tree already exists here; open it or pick another URL")
    same = all(old.get(k) == facts[k] for k in ("block", "dim", "dtype", "epoch", "bases"))
    if not same:
        raise TreeExists(
            f"{be.url}: holds an unfinished tree with other parameters (an interrupted "
            "create); delete it or pick another URL"
        )
    return old


def _first_record(tree_id: str) -> dict:
    return {
        "version": 1,
        "parent": 0,
        "time": time.time_ns(),
        "message": "create",
        "length": 0,
        "nseg": 0,
        "nheap": 0,
        "tail_from": 1,
        "delta": None,
        "chain": [],
        "gset": "",
        "binding": None,
        "objects": None,
        "tree": tree_id,
        "nonce": uuid.uuid4().hex[:12],
    }
