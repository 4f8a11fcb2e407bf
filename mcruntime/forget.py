"""Forgetting: which tokens a rule names, what replaces them, and the tree's record of it.

A memory that can only grow is a data-protection defect: a password or a customer's details
ingested by mistake would stay readable in every version, in the retrieval index and in the
gists. Forgetting redacts in place (``mcstore.Tree.redact``): the named tokens are replaced by
a marker of the same length, so every other position (spans, gists, segment starts, index
blocks) stays valid; every gist above them is computed again and the retrieval index chunks
that covered them are rebuilt from the redacted text, all in one commit. ``mcstore.purge``
then removes the older versions that still hold the text.

Rules: a document by its id (its segment number, as ``mc export`` and the documents listing
give it), documents by a glob over their source names, or every occurrence of a text
(case-insensitive) wherever it was remembered. The tree keeps a log of what was forgotten
(``forgotten.json``: when, by which rule, which documents and how many tokens), never the
content: a text rule is logged by its hash and length.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

FORGOTTEN_OBJECT = "forgotten.json"
MARKER = " [forgotten]"  # what the reader sees where forgotten text was


@dataclass(frozen=True)
class ForgetRule:
    """Exactly one of: ``segment`` (a document id), ``source`` (a glob over source names),
    ``match`` (a text, case-insensitive)."""

    segment: int | None = None
    source: str | None = None
    match: str | None = None

    def __post_init__(self):
        given = [x is not None for x in (self.segment, self.source, self.match)]
        if sum(given) != 1:
            raise ValueError("name exactly one of: a document id, a source glob, a text to match")
        if self.match is not None and not self.match.strip():
            raise ValueError("the text to forget is empty")
        if self.segment is not None and self.segment < 0:
            raise ValueError(f"document ids start at 0, not {self.segment}")

    def logged(self) -> dict:
        """The rule as the tree records it: never the forgotten text itself."""
        if self.segment is not None:
            return {"document": self.segment}
        if self.source is not None:
            return {"source": self.source}
        digest = hashlib.sha256(self.match.casefold().encode()).hexdigest()
        return {"match_sha256": digest, "match_chars": len(self.match)}


@dataclass
class Forgotten:
    """What one forget did (``version`` None: the rule named nothing, nothing was committed)."""

    rule: dict
    version: int | None = None
    documents: list[int] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)  # token positions [a, b)
    tokens: int = 0
    time: int = 0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["spans"] = [list(s) for s in self.spans]
        return d


def find_spans(tree, tokenizer, rule: ForgetRule) -> tuple[list[int], list[tuple[int, int]]]:
    """-> (the documents the rule names that still hold text to redact, the token spans to
    redact), spans sorted, merged. What an earlier forget redacted is left out: a forget that
    is retried (a client that lost the reply, a script run twice) commits nothing and adds no
    second row to the log."""
    segs = tree.segments()
    if rule.segment is not None:
        if rule.segment >= len(segs):
            raise LookupError(f"no document {rule.segment}: the memory holds {len(segs)}")
        docs = [rule.segment]
    elif rule.source is not None:
        docs = [i for i, s in enumerate(segs) if fnmatch.fnmatchcase(s.source, rule.source)]
    else:
        return _matched(tree, tokenizer, segs, rule.match)
    done = [tuple(sp) for row in forgotten_log(tree) for sp in row.get("spans", [])]
    held = {i: _minus([(segs[i].start, segs[i].stop)], done) for i in docs}
    docs = [i for i in docs if held[i]]
    return docs, [sp for i in docs for sp in held[i]]


def _minus(spans: list[tuple[int, int]], taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` without the positions any of ``taken`` covers."""
    out, taken = [], _merged(taken)
    for a, b in spans:
        for x, y in taken:
            if y <= a or x >= b:
                continue
            if x > a:
                out.append((a, x))
            a = max(a, y)
            if a >= b:
                break
        if a < b:
            out.append((a, b))
    return out


def _matched(tree, tokenizer, segs, match: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Every occurrence of ``match`` (case-insensitive): once redacted it no longer occurs."""
    docs, spans = [], []
    needle = match.casefold()
    for i, s in enumerate(segs):
        ids = [int(x) for x in tree.tokens(s.start, s.stop)]
        if needle not in tokenizer.decode(ids, skip_special=False).casefold():
            continue  # the cheap test first: most documents hold no occurrence
        found = _match_spans(tokenizer, ids, needle)
        if found:
            docs.append(i)
            spans += [(s.start + a, s.start + b) for a, b in found]
    return docs, _merged(spans)


def _match_spans(tokenizer, ids: list[int], needle: str) -> list[tuple[int, int]]:
    """Token spans [a, b) covering each occurrence of ``needle`` in the text of ``ids``."""
    pieces = [tokenizer.decode([i], skip_special=False) for i in ids]
    text = "".join(pieces).casefold()
    ends = np.cumsum([len(p.casefold()) for p in pieces])
    out, at = [], text.find(needle)
    while at >= 0:
        a = int(np.searchsorted(ends, at, side="right"))
        b = int(np.searchsorted(ends, at + len(needle), side="left")) + 1
        out.append((a, min(b, len(ids))))
        at = text.find(needle, at + 1)
    return out


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def marker_ids(tokenizer, n: int) -> np.ndarray:
    """``n`` ids that read as the marker once, then spaces; a run too short for the marker
    reads as underscores."""
    unit = [int(i) for i in tokenizer.encode(MARKER)]
    if n < len(unit):
        return np.full(n, tokenizer.encode("_")[-1], np.int32)
    space = tokenizer.encode(" ")[-1]
    return np.asarray(unit + [space] * (n - len(unit)), np.int32)


def edits_for(tokenizer, spans: list[tuple[int, int]]) -> list[tuple[int, np.ndarray]]:
    return [(a, marker_ids(tokenizer, b - a)) for a, b in spans]


def tokens_after(tree, edits) -> Callable[[int, int], np.ndarray]:
    """The tree's tokens as they read once ``edits`` are committed (for the index chunks
    that are rebuilt in the same commit)."""

    def read(a: int, b: int) -> np.ndarray:
        out = np.array(tree.tokens(a, b))
        for start, ids in edits:
            lo, hi = max(a, start), min(b, start + len(ids))
            if lo < hi:
                out[lo - a : hi - a] = ids[lo - start : hi - start]
        return out

    return read


def forgotten_log(tree) -> list[dict]:
    """The tree's record of what was forgotten, oldest first."""
    if FORGOTTEN_OBJECT not in tree.objects():
        return []
    return json.loads(tree.read_object(FORGOTTEN_OBJECT))


def logged_with(tree, entry: Forgotten) -> bytes:
    entry.time = entry.time or time.time_ns()
    return json.dumps([*forgotten_log(tree), entry.as_dict()], indent=1).encode()
