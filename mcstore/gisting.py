"""Computing gists: the nodes an append completes, and a regist's whole new gist set.

The store never runs a model: the caller passes a gist function (``GistFn``), called once per level with
every node that level gains (``[k, B]`` token ids at level 1, ``[k, B, dim]`` child gists
above), bottom-up, because a level's new nodes are the children of the next level's.
bfloat16 has no numpy dtype, so a bfloat16 tree stores and returns the bit patterns as
uint16; the two converters here are exact in one direction and round-to-nearest-even in the
other.

A regist recomputes every gist under new array names (``gists_l.<gset>``, a hash of the new
GistNet), writing each complete shard as soon as it is computed, so a rerun after a crash
skips what exists; only the commit at the end makes the new gist set visible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import format as F
from .backend import Backend, concurrently
from .errors import InvalidArgument, StoreError, damaged
from .shards import ensure_array_meta

GistFn = Callable[[int, np.ndarray], np.ndarray]  # (level, children) -> gists
RowReader = Callable[[str, int, int], np.ndarray]  # (array, a, b) -> committed rows [a, b)
Progress = Callable[[int, int, int], object]  # (level, nodes done, nodes at level)


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 stored as uint16 bits -> float32 (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits as uint16, round to nearest even (NaN stays NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    return np.where(nan, (u >> 16).astype(np.uint16) | 0x0040, rounded).astype(np.uint16)


def call_gister(
    url: str, geo: F.Geometry, gister: GistFn, level: int, kids: np.ndarray, k: int
) -> np.ndarray:
    """The gister's ``k`` gists, checked for shape and converted to the stored dtype."""
    out = np.asarray(gister(level, kids))
    if out.shape != (k, geo.dim):
        raise InvalidArgument(
            f"{url}: gister returned shape {out.shape} for level {level}, expected ({k}, {geo.dim})"
        )
    if geo.dtype == "bfloat16":
        if out.dtype == np.uint16:
            return np.ascontiguousarray(out)
        return float32_to_bf16(out.astype(np.float32))
    return np.ascontiguousarray(out.astype(np.float16))


@dataclass(frozen=True)
class Gisting:
    """How new nodes get their gists: the caller's gister, its index in the tree's table of
    gisters (stored per node as its gist version), the creation time, the gist set."""

    gister: GistFn
    gv: int
    now: int
    gset: str


def gist_completed(
    url: str,
    geo: F.Geometry,
    read: RowReader,
    old: int,
    new_rows: dict[str, np.ndarray],
    how: Gisting,
) -> None:
    """Add to ``new_rows`` every node that appending ``new_rows["tokens"]`` to a timeline of
    ``old`` tokens completes (gist, gist version, creation time, no flags). Older rows come
    from ``read``."""
    B = geo.block
    new = old + len(new_rows["tokens"])
    lv = 1
    while True:
        a, b = F.completed(old, new, lv, B)
        if b == a:
            break
        if lv >= F.MAX_LEVEL:
            raise InvalidArgument(f"{url}: tree deeper than {F.MAX_LEVEL} levels")
        below = "tokens" if lv == 1 else F.gist_names(lv - 1, how.gset)[0]
        kids = F.splice(
            lambda x0, x1, below=below: read(below, x0, x1),
            F.num_nodes(old, lv - 1, B),
            new_rows[below],
            a * B,
            b * B,
        )
        kids = kids.reshape(b - a, B) if lv == 1 else kids.reshape(b - a, B, geo.dim)
        gname, vname = F.gist_names(lv, how.gset)
        new_rows[gname] = call_gister(url, geo, how.gister, lv, kids, b - a)
        new_rows[vname] = np.full(b - a, how.gv, np.uint16)
        new_rows[f"created_{lv}"] = np.full(b - a, how.now, np.int64)
        new_rows[f"flags_{lv}"] = np.zeros(b - a, np.uint8)
        lv += 1


def write_gist_set(
    be: Backend,
    geo: F.Geometry,
    read: RowReader,
    length: int,
    how: Gisting,
    *,
    known_meta: set[str],
    adopted_meta: set[str],
    progress: Progress | None,
) -> dict[str, np.ndarray]:
    """Write every complete shard of gist set ``how.gset`` for a timeline of ``length``
    tokens (skipping shards that exist); -> the tails (rows past the last complete shard) of
    its arrays, for the commit. Tokens come from ``read``."""
    B = geo.block
    tails: dict[str, np.ndarray] = {}
    lv = 1
    while F.num_nodes(length, lv, B) > 0:
        n = F.num_nodes(length, lv, B)
        gname, vname = F.gist_names(lv, how.gset)
        spec, vspec = geo.spec(gname), geo.spec(vname)
        S = spec.shard_rows
        below = "tokens" if lv == 1 else F.gist_names(lv - 1, how.gset)[0]

        def kids_of(x0, x1, below=below, lv=lv):
            if lv == 1:
                return read("tokens", x0 * B, x1 * B).reshape(x1 - x0, B)
            rows = F.splice(
                lambda a, b, below=below: read_written(be, geo, below, a, b),
                geo.bound(below, F.Extent(length, 0, 0, how.gset)),
                tails[below],
                x0 * B,
                x1 * B,
            )
            return rows.reshape(x1 - x0, B, geo.dim)

        nfull = n // S
        for k in range(nfull):
            # a rerun adopts what the crashed run wrote: re-stamped, its age restarts now
            if be.restamp(spec.chunk_key(k)) and be.restamp(vspec.chunk_key(k)):
                continue
            out = call_gister(be.url, geo, how.gister, lv, kids_of(k * S, (k + 1) * S), S)
            ensure_array_meta(be, geo, gname, known_meta, adopted_meta)
            ensure_array_meta(be, geo, vname, known_meta, adopted_meta)
            be.write(spec.chunk_key(k), F.encode_shard(spec, out))
            be.write(vspec.chunk_key(k), F.encode_shard(vspec, np.full(S, how.gv, np.uint16)))
            if progress:
                progress(lv, (k + 1) * S, n)
        if n > nfull * S:
            kids = kids_of(nfull * S, n)
            tails[gname] = call_gister(be.url, geo, how.gister, lv, kids, n - nfull * S)
            tails[vname] = np.full(n - nfull * S, how.gv, np.uint16)
        else:
            tails[gname], tails[vname] = spec.empty(0), vspec.empty(0)
        if progress:
            progress(lv, n, n)
        lv += 1
    return tails


def restamp_gist_set(be: Backend, geo: F.Geometry, ext: F.Extent) -> None:
    """Re-stamp every complete shard of gist set ``ext.gset`` right before the regist
    commits them, so gc counts their age from the commit; StoreError if one is gone."""
    keys = [
        geo.spec(name).chunk_key(k)
        for lv in range(1, F.num_levels(ext.length, geo.block))
        for name in F.gist_names(lv, ext.gset)
        for k in range(geo.shards(name, ext))
    ]
    there = concurrently(be, be.restamp, keys) if keys else []
    gone = [k for k, ok in zip(keys, there, strict=True) if not ok]
    if gone:
        raise StoreError(
            f"{be.url}: gist shard {gone[0]}, written by this regist, vanished before the regist "
            "committed (a gc with too short a grace?); the tree itself is intact: run the "
            "regist again"
        )


def read_written(be: Backend, geo: F.Geometry, name: str, a: int, b: int) -> np.ndarray:
    """Rows [a, b) of a not yet committed array from its complete shards (whole-shard
    reads, past the cache: they are read once, to gist the level above)."""
    spec = geo.spec(name)
    S = spec.shard_rows
    out = []
    for k in range(a // S, (b - 1) // S + 1):
        key = spec.chunk_key(k)
        try:
            raw = be.read(key)
        except FileNotFoundError:
            raise StoreError(
                f"{be.url}: gist shard {key}, written by this regist, vanished before the regist "
                "committed (a gc with too short a grace?); the tree itself is intact: run the "
                "regist again"
            ) from None
        if len(raw) != spec.shard_nbytes:
            raise damaged(be.url, key, "has the wrong size; delete it and rerun regist")
        rows = np.concatenate(
            [
                F.decode_chunk(spec, raw[i * spec.chunk_nbytes : (i + 1) * spec.chunk_nbytes])
                for i in range(spec.chunks_per_shard)
            ]
        )
        lo, hi = max(a, k * S) - k * S, min(b, (k + 1) * S) - k * S
        out.append(rows[lo:hi])
    return np.concatenate(out)
