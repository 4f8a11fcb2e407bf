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
import logging

from . import format as F
from .backend import Backend, concurrently
from .errors import CommitConflict

log = logging.getLogger(__name__)

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


def ensure_array_meta(
    be: Backend, geo: F.Geometry, name: str, known: set[str], adopted: set[str]
) -> None:
    """Write the array's zarr.json if it is not there (``known``: arrays already checked).

    One a crashed writer left is adopted (re-stamped, its age restarts) and its name added to
    ``adopted``: a gc that looked at its age before the re-stamp may still delete it, so the
    commit that first reaches the array checks it again afterwards (``Tree._committed``)."""
    if name in known:
        return
    key = f"arrays/{name}/zarr.json"
    meta = F.array_metadata(geo, name)
    if be.restamp(key, meta):
        adopted.add(name)
    else:
        be.write(key, meta)
    known.add(name)


def write_ahead(be: Backend, geo: F.Geometry, name: str, first: int, rows) -> dict[str, int]:
    """Write the complete shards of array ``name`` holding ``rows`` from shard ``first`` on,
    before any commit names them (bulk ingest: each worker writes the shards it computed).

    Put-if-absent at the canonical names, exactly as a commit would write them; a name that
    already holds these bytes (a rerun) counts as written, and is re-stamped so that gc
    counts its age from now (:func:`adopt`). -> ``{"<name>/<k>": crc32c}`` of
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
        if be.put_if_absent(key, data) or adopt(be, key, data):
            out[f"{name}/{first + j}"] = F.crc32c(data)
    return out


def adopt(be: Backend, key: str, data: bytes) -> bool:
    """Whether ``key`` (where put-if-absent found something) holds exactly ``data``; if so it
    is re-stamped, so gc measures its age from this adoption: a crashed writer's identical
    shard is hours old, and a gc that judged it abandoned would delete it under the commit
    that now names it. A name that empties meanwhile (a gc took it) is written again."""
    for _ in range(3):
        try:
            there = be.read(key)
        except FileNotFoundError:
            if be.put_if_absent(key, data):
                return True
            continue
        if there != data:
            return False
        if be.restamp(key, data):
            return True
    return False  # emptied and refilled under us three times: leave it to the staged path


def put_shards(
    be: Backend,
    geo: F.Geometry,
    shards: list[tuple[str, int, bytes]],
    version: int,
    nonce: str,
    override: dict[str, str],
    written: dict[str, int] | None = None,
) -> list[tuple[str, bytes]]:
    """Write complete shards for ``version``; stage (and add to ``override``) any whose
    canonical name holds other bytes. CommitConflict if ``version`` is already taken.

    ``written``: shards another process wrote ahead (``write_ahead``) by crc32c; one whose
    checksum equals ours is not written again, only re-stamped (local disk: its time; S3: a
    copy onto itself, no body travels), which also says it is still there: a gc that ran
    between the write-ahead and this commit may have removed it, and then it is written here
    like any other. -> the shards the commit adopted instead of writing (``(key, bytes)``:
    written ahead, or left with our bytes by a crashed writer), for
    :func:`rewrite_missing` after the record."""
    adopted: list[tuple[str, bytes]] = []
    if written:
        ahead = [(n, k, d) for n, k, d in shards if written.get(f"{n}/{k}") == F.crc32c(d)]
        keys = [geo.spec(n).chunk_key(k) for n, k, _ in ahead]
        there = concurrently(be, be.restamp, keys)
        skip = {(n, k) for (n, k, _), ok in zip(ahead, there, strict=True) if ok}
        adopted += [(key, d) for (n, k, d), key in zip(ahead, keys, strict=True) if (n, k) in skip]
        shards = [(n, k, d) for n, k, d in shards if (n, k) not in skip]
    if not shards:
        return adopted
    keys = [geo.spec(n).chunk_key(k) for n, k, _ in shards]
    results = concurrently(be, be.put_if_absent, keys, [d for _, _, d in shards])
    for (name, k, data), key, ok in zip(shards, keys, results, strict=True):
        if ok:
            continue
        if adopt(be, key, data):
            adopted.append((key, data))
            continue
        if be.exists(F.log_key(version)):
            raise CommitConflict(
                f"{be.url}: another writer committed version {version} first; nothing was "
                "committed: call refresh() and retry"
            )
        stage = f"stage/{version:020d}-{nonce}/{name}/{k}"
        be.write(stage, data)
        override[f"{name}/{k}"] = stage
    return adopted


def rewrite_missing(be: Backend, adopted: list[tuple[str, bytes]]) -> list[str]:
    """After the commit: write again any adopted shard that is gone. Re-stamping closes
    most of gc's window, not all of it: a gc that read a shard's old time just before the
    re-stamp and deletes it just after the record lands leaves the commit naming a missing
    shard; the committer still holds the bytes, so it looks once more (one existence check
    per adopted shard, concurrent on S3) and puts back what is missing. -> the keys rewritten.

    The commit has landed by now, so a failure here is logged, never raised: an error would
    tell the caller the commit failed, and a retry would store it twice."""
    if not adopted:
        return []
    try:
        there = concurrently(be, be.exists, [k for k, _ in adopted])
        gone = [(k, d) for (k, d), ok in zip(adopted, there, strict=True) if not ok]
        for k, d in gone:
            be.write(k, d)
        if gone:
            log.warning("%s: wrote %d adopted shards again that a gc removed", be.url, len(gone))
        return [k for k, _ in gone]
    except Exception as e:  # the commit stands; say so, and what to check
        log.warning("%s: could not check the adopted shards after a commit (%s)", be.url, e)
        return []


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
