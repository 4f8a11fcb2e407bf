"""A tree's history as the explorer plays it back: commits with what each appended, two
versions compared, and the question a chat turn asked (so its focus can be shown again).

Segments are append-only along a tree's history, so what commit v appended is the segments
starting in ``[length of its parent, length of v)``: read from the newest version's segment
list and the log, with no version opened per commit.
"""

from __future__ import annotations

import bisect

from mcruntime.render import LABELS, Role, role_of
from mcruntime.timeline import segment_row

MAX_COMMITS = 200  # commits sent per page


def commits(tree, limit: int = 50) -> list[dict]:
    """The newest ``limit`` commits of ``tree``'s version (newest first), each with the token
    range and the segment ids it appended (none for a commit of objects only)."""
    limit = max(1, min(int(limit), MAX_COMMITS))
    entries = tree.log(limit=limit + 1)
    lengths = {e.version: e.length for e in entries}
    segs = tree.segments()
    starts = [s.start for s in segs]
    out = []
    for e in entries[:limit]:
        before = lengths.get(e.parent, 0 if e.parent == 0 else None)
        added = []
        if before is not None and e.length > before:
            lo = bisect.bisect_left(starts, before)
            hi = bisect.bisect_left(starts, e.length)
            added = list(range(lo, hi))
        out.append({
            "version": e.version, "parent": e.parent, "time_ns": int(e.time),
            "message": e.message, "length": e.length,
            "appended": [before, e.length] if before is not None else None,
            "segments": added,
            "chat": any(role_of(segs[i].source) is Role.USER for i in added),
        })  # fmt: skip
    return out


def compare(a, b) -> dict:
    """Two versions' segments side by side: the ones both hold, and the ones only one holds
    (``a`` and ``b`` are the tree opened at each version)."""
    sa, sb = a.segments(), b.segments()

    def key(s):
        return (s.start, s.stop, s.source, s.time)

    same = 0
    while same < min(len(sa), len(sb)) and key(sa[same]) == key(sb[same]):
        same += 1
    return {
        "a": {"version": a.version, "length": a.length, "segments": len(sa)},
        "b": {"version": b.version, "length": b.length, "segments": len(sb)},
        "common": same,
        "only_a": [segment_row(i, sa[i]) for i in range(same, len(sa))][:500],
        "only_b": [segment_row(i, sb[i]) for i in range(same, len(sb))][:500],
        "objects_changed": sorted(
            n for n in set(a.objects_map()) | set(b.objects_map())
            if a.objects_map().get(n) != b.objects_map().get(n)
        ),
    }  # fmt: skip


def turn_question(tree, tokenizer, version: int) -> str | None:
    """The question of the chat turn commit ``version`` appended (its user segment's text
    without the label the tree stores around it), or None when it appended no user turn."""
    for c in commits(tree, limit=MAX_COMMITS):
        if c["version"] == version:
            segs = tree.segments()
            for i in c["segments"]:
                if role_of(segs[i].source) is Role.USER:
                    text = tokenizer.decode(tree.tokens(segs[i].start, segs[i].stop).tolist())
                    return text.strip().removeprefix(LABELS[Role.USER].strip()).strip()
            return None
    return None
