"""What a focus looks like, as data: the one source of truth for every report of a focus.

A working context is a list of entries ``(level, index)``; a person wants to know which parts of
the history the model reads in full detail, which as gists, from which file, and where the
question's hits are. :class:`FocusPicture` holds exactly that, computed once from the working
context and the tree's segments:

* ``runs``: the whole timeline as maximal runs of one level (what an overview strip draws);
* ``spans``: every raw stretch (``kind`` "detail": expanded for this question; "tail": the newest
  tokens, always raw), cut at segment boundaries so each names the one source it holds;
* ``segments`` and ``recall`` (the passages read back before the question, with scores).

The text listing (``mc chat --show-focus``, ``mc show``), ``Answer.focus`` and the PNG of
``mc show --png`` are all built from one ``FocusPicture``, so they cannot disagree.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mcstore.format import BLOCK

Entry = tuple[int, int]
PART = re.compile(r" \(tokens \d+-\d+ of \d+\)$")  # the name mcruntime.ingest gives a part


@dataclass(frozen=True)
class Run:
    """Tokens ``[start, stop)`` shown at one ``level`` (0: raw) by ``entries`` consecutive entries."""

    start: int
    stop: int
    level: int
    entries: int


@dataclass(frozen=True)
class Span:
    """Raw tokens ``[start, stop)`` of one segment: ``kind`` "detail" (expanded) or "tail"."""

    start: int
    stop: int
    source: str | None
    kind: str

    def as_dict(self) -> dict:
        return {"start": self.start, "stop": self.stop, "source": self.source, "kind": self.kind}


@dataclass(frozen=True)
class Seg:
    start: int
    stop: int
    source: str


@dataclass(frozen=True)
class Passage:
    """A recalled passage: tokens read back raw right before the question."""

    start: int
    stop: int
    source: str | None
    score: float


@dataclass(frozen=True)
class FocusPicture:
    length: int
    block: int
    cost: int  # model positions the working context takes (one per entry)
    budget: int | None  # positions allowed for it
    runs: tuple[Run, ...]
    spans: tuple[Span, ...]
    segments: tuple[Seg, ...]
    recall: tuple[Passage, ...] = ()
    query: str | None = None
    levels: dict[int, int] = field(default_factory=dict)  # level -> entries at that level

    @classmethod
    def of(
        cls,
        entries: Sequence[Entry],
        length: int,
        *,
        raw_from: int,
        segments: Iterable,
        block: int = BLOCK,
        budget: int | None = None,
        recall: Iterable[dict] = (),
        query: str | None = None,
    ) -> FocusPicture:
        """The picture of a working context. ``raw_from``: first token of the raw recent tail
        (``WorkingContext.raw_floor``); ``segments``: the tree's segments (``start``, ``stop``,
        ``source``); ``recall``: the recall report (dicts with start, stop, source, score)."""
        segs = tuple(Seg(int(s.start), int(s.stop), str(s.source)) for s in segments)
        runs: list[list[int]] = []  # [start, stop, level, entries]
        levels: dict[int, int] = {}
        for level, index in entries:
            size = block**level
            s, e = index * size, (index + 1) * size
            levels[level] = levels.get(level, 0) + 1
            if runs and runs[-1][2] == level and runs[-1][1] == s:
                runs[-1][1] = e
                runs[-1][3] += 1
            else:
                runs.append([s, e, level, 1])
        raw: list[tuple[int, int, str]] = []
        for s, e, level, _ in runs:
            if level != 0:
                continue
            if s < raw_from:
                raw.append((s, min(e, raw_from), "detail"))
            if e > raw_from:
                raw.append((max(s, raw_from), e, "tail"))
        spans = tuple(
            Span(a, b, src, kind) for s, e, kind in raw for a, b, src in split_at(s, e, segs)
        )
        passages = tuple(
            Passage(int(p["start"]), int(p["stop"]), p.get("source"), float(p.get("score", 0)))
            for p in recall
        )
        return cls(
            length=length,
            block=block,
            cost=len(entries),
            budget=budget,
            runs=tuple(Run(*r) for r in runs),
            spans=spans,
            segments=segs,
            recall=passages,
            query=query,
            levels=dict(sorted(levels.items())),
        )

    @property
    def detail(self) -> tuple[Span, ...]:
        return tuple(s for s in self.spans if s.kind == "detail")

    @property
    def tail(self) -> tuple[Span, ...]:
        return tuple(s for s in self.spans if s.kind == "tail")

    def report(self) -> list[dict]:
        """The spans as dicts (``Answer.focus``): start, stop, source, kind."""
        return [s.as_dict() for s in self.spans]

    def level_at(self, pos: int) -> int:
        """The level at which token ``pos`` is shown."""
        starts = [r.start for r in self.runs]
        return self.runs[bisect.bisect_right(starts, pos) - 1].level


def split_at(start: int, stop: int, segs: Sequence[Seg]) -> list[tuple[int, int, str | None]]:
    """``[start, stop)`` cut at segment boundaries, each piece with its segment's source."""
    if not segs:
        return [(start, stop, None)]
    starts = [s.start for s in segs]
    k = max(0, bisect.bisect_right(starts, start) - 1)
    out = []
    pos = start
    while pos < stop:
        seg = segs[k] if k < len(segs) else None
        end = stop if seg is None or k + 1 >= len(segs) else min(stop, segs[k + 1].start)
        if seg is not None and pos < seg.start:  # a gap before the first segment
            end, src = min(stop, seg.start), None
        else:
            src = seg.source if seg is not None else None
            k += 1
        out.append((pos, end, src))
        pos = end
    return out


def plural(n: int, one: str, many: str | None = None) -> str:
    """``1 gist``, ``2 gists``: a count with its noun."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


@dataclass(frozen=True)
class Zoom:
    """A stretch of the timeline worth drawing large: expanded spans close to each other, or
    the recent tail. ``spans``: indices into ``FocusPicture.spans``."""

    number: int  # 1, 2, … in timeline order (the tail is last)
    start: int
    stop: int
    spans: tuple[int, ...]
    kind: str  # "detail" or "tail"


def zooms(
    pic: FocusPicture, *, max_detail: int = 5, gap: int | None = None
) -> tuple[list[Zoom], list[int]]:
    """Zoom panels for a picture: groups of detail spans at most ``gap`` tokens apart (default
    eight blocks), the ``max_detail`` groups with the most raw tokens, plus the tail. Returns
    the panels in timeline order and the indices of the detail spans left without a panel."""
    gap = 8 * pic.block if gap is None else gap
    groups: list[list[int]] = []
    for k, sp in enumerate(pic.spans):
        if sp.kind != "detail":
            continue
        if groups and sp.start - pic.spans[groups[-1][-1]].stop <= gap:
            groups[-1].append(k)
        else:
            groups.append([k])

    def raw_tokens(g: list[int]) -> int:
        return sum(pic.spans[k].stop - pic.spans[k].start for k in g)

    keep = sorted(sorted(groups, key=raw_tokens, reverse=True)[:max_detail], key=lambda g: g[0])
    left = [k for g in groups if g not in keep for k in g]
    out = [Zoom(0, pic.spans[g[0]].start, pic.spans[g[-1]].stop, tuple(g), "detail") for g in keep]
    tail = [k for k, sp in enumerate(pic.spans) if sp.kind == "tail"]
    if tail and out and pic.spans[tail[0]].start - out[-1].stop <= gap:
        tail = [*out.pop().spans, *tail]  # detail just before the tail: one panel
    if tail:
        out.append(Zoom(0, pic.spans[tail[0]].start, pic.spans[tail[-1]].stop, tuple(tail), "tail"))
    out = [Zoom(i + 1, z.start, z.stop, z.spans, z.kind) for i, z in enumerate(out)]
    return out, left


def short_names(sources: Sequence[str]) -> dict[str, str]:
    """Display names: a folder prefix common to every path-like source is dropped
    (``/usr/lib/python3.11/json/decoder.py`` -> ``json/decoder.py``), and what is still a long
    path keeps its last two parts; the parts of a long input (``x.log (tokens 0-32768 of
    90112)``) are named as the input."""
    whole = {s: PART.sub("", s) for s in sources}  # a part of a long input: its input's name
    sources = list(dict.fromkeys(whole.values()))
    paths = [s for s in sources if "/" in s and ":" not in s.split("/")[0]]
    prefix = ""
    if len(set(paths)) > 1:
        parts = [p.split("/")[:-1] for p in paths]
        common = []
        for level in zip(*parts, strict=False):
            if len(set(level)) != 1:
                break
            common.append(level[0])
        prefix = "/".join(common) + "/" if common else ""
    elif paths:
        prefix = paths[0].rsplit("/", 1)[0] + "/"
    out = {}
    for s in sources:
        name = s[len(prefix) :] if prefix and s.startswith(prefix) else s
        if name in paths or name.count("/") > 1:  # still a long path: its last two parts
            name = "/".join(name.rsplit("/", 2)[-2:])
        out[s] = name
    return {s: out[w] for s, w in whole.items()}
