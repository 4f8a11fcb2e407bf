"""Redaction: rewriting token rows in place (same count), with every gist above them.

Forgetting must keep every position of the rest valid (gists, spans, segment starts and the
retrieval index are all addressed by token position), so forgotten tokens are replaced, not
removed: the caller gives the replacement ids, and every complete node over a changed token
is gisted again, level by level, with the caller's gister, as an append would.

Complete shards are immutable and older versions still read them, so a changed complete shard
is written whole under ``redact/<version>-<nonce>/<array>/<k>`` and the record's ``redact`` map
points readers of this and every later version there (later records carry the map). Rows past
the last complete shard are rewritten in a checkpoint of the tail. Older versions are left as
they were: ``mcstore.purge`` expires them and deletes what only they reach.
"""

from __future__ import annotations

import itertools

import numpy as np

from . import format as F
from .errors import InvalidArgument
from .gisting import Gisting, RowReader, call_gister

Edits = list[tuple[int, np.ndarray]]  # (first token position, replacement ids)
Changes = dict[str, dict[int, np.ndarray]]  # array -> row -> new row value


def normalised_edits(url: str, edits) -> Edits:
    """The edits as non-empty int32 runs, sorted, not overlapping (what a redaction's
    fingerprint is taken over, before the tree's length is known to the handle)."""
    out: Edits = []
    for start, ids in edits:
        ids = np.asarray(ids)
        if ids.ndim != 1 or not ids.size or not np.issubdtype(ids.dtype, np.integer):
            raise InvalidArgument(f"{url}: a redaction replaces a non-empty run of token ids")
        if ids.min() < 0 or ids.max() > np.iinfo(np.int32).max:
            raise InvalidArgument(f"{url}: token ids must be in [0, 2**31)")
        out.append((int(start), ids.astype(np.int32)))
    out.sort(key=lambda e: e[0])
    for (a, x), (b, _) in itertools.pairwise(out):
        if a + len(x) > b:
            raise InvalidArgument(f"{url}: redactions at {a} and {b} overlap")
    if not out:
        raise InvalidArgument(f"{url}: nothing to redact")
    return out


def check_inside(url: str, length: int, edits: Edits) -> None:
    """InvalidArgument unless every run lies inside a tree of ``length`` tokens."""
    for start, ids in edits:
        if not 0 <= start <= start + len(ids) <= length:
            raise InvalidArgument(
                f"{url}: tokens [{start}, {start + len(ids)}) are outside the tree's {length}"
            )


def redaction_rows(
    url: str, geo: F.Geometry, read: RowReader, length: int, edits: Edits, how: Gisting
) -> Changes:
    """Every row a redaction changes: the tokens, and the gist and gist version of each
    complete node above them (``how.gister`` is called once per level, bottom-up)."""
    B = geo.block
    changes: Changes = {"tokens": {}}
    for start, ids in edits:
        for j, t in enumerate(ids):
            changes["tokens"][start + j] = t
    below, touched = "tokens", sorted(changes["tokens"])
    lv = 1
    while True:
        nodes = sorted({r // B for r in touched} & set(range(F.num_nodes(length, lv, B))))
        if not nodes:
            return changes
        kids = []
        for i in nodes:
            rows = np.array(read(below, i * B, (i + 1) * B))
            for r in range(i * B, (i + 1) * B):
                if r in changes[below]:
                    rows[r - i * B] = changes[below][r]
            kids.append(rows)
        gname, vname = F.gist_names(lv, how.gset)
        gists = call_gister(url, geo, how.gister, lv, np.stack(kids), len(nodes))
        changes[gname] = dict(zip(nodes, gists, strict=True))
        changes[vname] = {i: np.uint16(how.gv) for i in nodes}
        below, touched = gname, nodes
        lv += 1


def rewritten(
    geo: F.Geometry,
    ext: F.Extent,
    read: RowReader,
    tail: dict[str, np.ndarray],
    changes: Changes,
) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """-> (each changed complete shard, encoded whole: ``<array>/<k>`` -> bytes; each changed
    array's whole new tail) for a checkpoint commit of the same extent."""
    shards: dict[str, bytes] = {}
    tails: dict[str, np.ndarray] = {}
    for name, rows in changes.items():
        if not rows:
            continue
        spec = geo.spec(name)
        S, bound = spec.shard_rows, geo.bound(name, ext)
        by_shard: dict[int, list[int]] = {}
        for r in rows:
            if r < bound:
                by_shard.setdefault(r // S, []).append(r)
        for k, rs in sorted(by_shard.items()):
            old = read(name, k * S, (k + 1) * S)
            data = np.array(old)
            for r in rs:
                data[r - k * S] = rows[r]
            if not np.array_equal(data, old):  # e.g. gist versions that stay the same
                shards[f"{name}/{k}"] = F.encode_shard(spec, data)
        late = [r for r in rows if r >= bound]
        if late:
            t = np.array(tail[name])
            for r in late:
                t[r - bound] = rows[r]
            tails[name] = t
    return shards, tails
