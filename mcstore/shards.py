"""Writing complete shards, and the staged-override repair that keeps them immutable.

A commit writes the shards it completes under their canonical zarr names before its record,
put-if-absent, so a shard name is never overwritten blindly. The name can be taken by other
bytes only if a crashed or still-running writer wrote a shard for the same version and has
not (yet) committed. That orphan must not be overwritten before our commit wins (its writer
might win instead), so ours goes to ``stage/<n>-<nonce>/<array>/<k>`` and the record's
``override`` maps ``<array>/<k>`` to it; readers follow the override. Once our record is in,
the orphan's writer has lost version n, so we copy our shard over the canonical name; if
that copy fails, the next commit does it before its own writes, and drops the override.
Overrides that shadow a shard of a forked-from base tree stay: that shard is not ours.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

from . import format as F
from .backend import Backend
from .errors import CommitConflict

Bases = list[tuple[Backend, dict[str, int]]]  # forked-from trees: (backend, shards per array)


def shadows_base(key: str, bases: Bases) -> bool:
    """Whether override ``<array>/<k>`` stands in for a shard of a base tree."""
    name, _, k = key.rpartition("/")
    return any(int(k) < counts.get(name, 0) for _, counts in bases)


def settle_inherited(
    be: Backend, geo: F.Geometry, override: dict[str, str], bases: Bases, fixed: set[str]
) -> dict[str, str]:
    """The overrides a new commit keeps: those that shadow a base. The rest are repaired
    (copied to the canonical name, unless this handle already did) and dropped."""
    kept = dict(override)
    for key in list(kept):
        if shadows_base(key, bases):
            continue
        if key not in fixed:
            name, _, k = key.rpartition("/")
            be.write(geo.spec(name).chunk_key(int(k)), be.read(kept[key]))
        kept.pop(key)
    return kept


def ensure_array_meta(be: Backend, geo: F.Geometry, name: str, known: set[str]) -> None:
    """Write the array's zarr.json if it is not there (``known``: arrays already checked)."""
    if name in known:
        return
    key = f"arrays/{name}/zarr.json"
    if not be.exists(key):
        be.write(key, F.array_metadata(geo, name))
    known.add(name)


def write_ahead(be: Backend, geo: F.Geometry, name: str, first: int, rows) -> dict[str, int]:
    """Write the complete shards of array ``name`` holding ``rows`` from shard ``first`` on,
    before any commit names them (bulk ingest: each worker writes the shards it computed).

    Put-if-absent at the canonical names, exactly as a commit would write them; a name that
    already holds these bytes (a rerun) counts as written. -> ``{"<name>/<k>": crc32c}`` of
    the shards now there with our bytes, for ``Tree.append(written=…)``; a shard whose name
    holds other bytes (a crashed writer's orphan) is left out, and the commit writes it
    through its staged-override path."""
    spec = geo.spec(name)
    S = spec.shard_rows
    if len(rows) % S:
        raise ValueError(f"{name}: {len(rows)} rows is not a whole number of {S}-row shards")
    out: dict[str, int] = {}
    for j in range(len(rows) // S):
        data = F.encode_shard(spec, rows[j * S : (j + 1) * S])
        key = spec.chunk_key(first + j)
        if be.put_if_absent(key, data) or _holds(be, key, data):
            out[f"{name}/{first + j}"] = F.crc32c(data)
    return out


def _holds(be: Backend, key: str, data: bytes) -> bool:
    try:
        return be.read(key) == data
    except FileNotFoundError:
        return False


def put_shards(
    be: Backend,
    geo: F.Geometry,
    shards: list[tuple[str, int, bytes]],
    version: int,
    nonce: str,
    override: dict[str, str],
    written: dict[str, int] | None = None,
) -> None:
    """Write complete shards for ``version``; stage (and add to ``override``) any whose
    canonical name holds other bytes. CommitConflict if ``version`` is already taken.

    ``written``: shards another process wrote ahead (``write_ahead``) by crc32c; one whose
    checksum equals ours is not written again, only checked to be there (a HEAD, no body): a
    gc that ran between the write-ahead and this commit may have removed it, and then it is
    written here like any other."""
    if written:
        ahead = [(n, k) for n, k, d in shards if written.get(f"{n}/{k}") == F.crc32c(d)]
        there = _each(be, be.exists, [geo.spec(n).chunk_key(k) for n, k in ahead])
        skip = {nk for nk, ok in zip(ahead, there, strict=True) if ok}
        shards = [(n, k, d) for n, k, d in shards if (n, k) not in skip]
    if not shards:
        return
    keys = [geo.spec(n).chunk_key(k) for n, k, _ in shards]
    results = _each(be, be.put_if_absent, keys, [d for _, _, d in shards])
    for (name, k, data), key, ok in zip(shards, keys, results, strict=True):
        if ok:
            continue
        try:
            existing = be.read(key)
        except FileNotFoundError:
            existing = None
        if existing == data:
            continue
        if be.exists(F.log_key(version)):
            raise CommitConflict(
                f"{be.url}: another writer committed version {version} first; nothing was "
                "committed: call refresh() and retry"
            )
        stage = f"stage/{version:020d}-{nonce}/{name}/{k}"
        be.write(stage, data)
        override[f"{name}/{k}"] = stage


def _each(be: Backend, fn, *args: list) -> list:
    """``fn`` over the argument lists: concurrently on an object store, one by one else."""
    n = len(args[0])
    if be.concurrent_io and n > 1:
        with ThreadPoolExecutor(min(8, n)) as ex:
            return list(ex.map(fn, *args))
    return [fn(*a) for a in zip(*args, strict=True)]


def repair_staged(
    be: Backend, geo: F.Geometry, override: dict[str, str], inherited: dict[str, str]
) -> set[str]:
    """After the commit: copy this commit's staged shards over their canonical names.
    -> the override keys repaired (a failure is left for the next commit)."""
    fixed = set()
    for key, path in override.items():
        if key in inherited:
            continue
        name, _, k = key.rpartition("/")
        with contextlib.suppress(Exception):
            be.write(geo.spec(name).chunk_key(int(k)), be.read(path))
            fixed.add(key)
    return fixed
