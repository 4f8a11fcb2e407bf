"""Export a memory as JSON lines and import it again: a user's data, readable and movable.

One line per segment, in order::

    {"id": 0, "source": "notes/a.md", "tags": [], "role": "document",
     "created": "2026-12-06T18:41:48.123456Z", "time_ns": 1796…, "tokens": 812, "text": "…"}

``role`` is ``document``, ``user`` or ``assistant`` (chat turns); ``text`` is what was remembered,
without the heading or speaker label the tree stores around it (``mcruntime.render``), so the file
reads as the user's own text. A segment whose tokens are not in that rendered form (appended as
raw token ids by a program) is exported with ``"raw": true`` and its decoded tokens as text.

Import appends the lines in order, rendered as ``Session.ingest`` and ``remember_turns`` render
them, keeping each segment's source, tags and time: a round trip gives the same segments and
text. Lines are committed in batches (one commit each, ``IMPORT_BATCH`` segments or
``IMPORT_TOKENS`` tokens); an import killed part way leaves whole batches, and running it again
continues after the lines the tree already ends with, so nothing is imported twice.
Token ids are not carried: text is what a user owns, and another model tokenises it its own way.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from mcruntime.errors import InputError
from mcruntime.render import ASSISTANT, USER, Role, render_document, render_turn, role_of

IMPORT_BATCH = 256  # segments per commit at most
IMPORT_TOKENS = 1 << 20  # tokens per commit at most
ROLES = tuple(str(r) for r in Role)
MAX_LINE = 64 << 20  # bytes: one line is one segment's text; anything longer is not ours


@dataclass
class Record:
    source: str
    tags: tuple[str, ...]
    role: str
    text: str
    time_ns: int | None = None
    raw: bool = False

    def key(self) -> tuple:
        return (self.source, self.tags, self.role, self.text, self.raw)


def unrender(role: str, source: str, text: str) -> tuple[str, bool]:
    """The remembered text inside its stored form, and whether it was raw (not rendered)."""
    if role == "document":
        head = f"### {source}\n"
        if text.startswith(head) and text.endswith("\n\n"):
            body = text[len(head) : -2]
            if render_document(body, source) == text:
                return body, False
    else:
        label, end = (USER, "\n") if role == "user" else (ASSISTANT, "\n\n")
        if text.startswith(label) and text.endswith(end):
            body = text[len(label) : len(text) - len(end)]
            if render_turn(role, body) == text:
                return body, False
    return text, True


def records(tree, tokenizer, segments=None) -> Iterator[Record]:
    """Every segment of ``tree`` (an open tree at the version wanted), or those of
    ``segments``, as a :class:`Record`."""
    for seg in tree.segments() if segments is None else segments:
        ids = [int(i) for i in tree.tokens(seg.start, seg.stop)]
        role = role_of(seg.source)
        text, raw = unrender(role, seg.source, tokenizer.decode(ids, skip_special=False))
        yield Record(seg.source, tuple(seg.tags), role, text, int(seg.time), raw)


def export_lines(tree, tokenizer) -> Iterator[str]:
    """The JSON lines of ``mc export`` (each ends with a newline)."""
    for i, (seg, rec) in enumerate(zip(tree.segments(), records(tree, tokenizer), strict=True)):
        line = {
            "id": i,
            "source": rec.source,
            "tags": list(rec.tags),
            "role": rec.role,
            "created": _iso(rec.time_ns),
            "time_ns": rec.time_ns,
            "tokens": seg.stop - seg.start,
            "text": rec.text,
        }
        if rec.raw:
            line["raw"] = True
        yield json.dumps(line, ensure_ascii=False) + "\n"


def _iso(ns: int) -> str:
    t = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_lines(lines: Iterable[str | bytes]) -> list[Record]:
    """Every line checked before anything is written: one clear error names the first bad
    line (``InputError``), and the tree is untouched."""
    out = []
    for n, line in enumerate(lines, 1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"line {n}: not UTF-8 text", kind="import") from None
        if not line.strip():
            continue
        if len(line) > MAX_LINE:
            raise InputError(f"line {n}: longer than {MAX_LINE} bytes", kind="import")
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"line {n}: not JSON ({e.msg})", kind="import") from None
        out.append(_record(d, n))
    return out


def _record(d, n: int) -> Record:
    if not isinstance(d, dict):
        raise InputError(f"line {n}: a JSON object was expected", kind="import")
    text, source = d.get("text"), d.get("source")
    role = d.get("role", "document")
    tags = d.get("tags", [])
    if not isinstance(text, str) or not text:
        raise InputError(f"line {n}: 'text' must be a non-empty string", kind="import")
    if role not in ROLES:
        raise InputError(f"line {n}: 'role' must be one of {', '.join(ROLES)}", kind="import")
    if role != "document":
        source = Role(role).source
    if not isinstance(source, str) or not source:
        raise InputError(f"line {n}: 'source' must be a non-empty string", kind="import")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InputError(f"line {n}: 'tags' must be a list of strings", kind="import")
    ns = d.get("time_ns")
    if ns is not None and (isinstance(ns, bool) or not isinstance(ns, int) or not 0 <= ns < 2**63):
        raise InputError(f"line {n}: 'time_ns' must be a non-negative integer", kind="import")
    return Record(source, tuple(tags), role, text, ns, bool(d.get("raw", False)))


def already_there(tree, tokenizer, recs: list[Record]) -> int:
    """How many of ``recs`` (from the first) the tree already ends with: a re-run after a
    killed import continues after them."""
    segs = tree.segments()
    if not segs or not recs:
        return 0
    first = recs[0].key()
    for k in range(min(len(segs), len(recs)), 0, -1):
        tail = segs[len(segs) - k :]
        if tail[0].source != recs[0].source:
            continue
        if next(records(tree, tokenizer, tail[:1])).key() != first:
            continue  # one decode per candidate start; the whole run only where it begins right
        if [r.key() for r in records(tree, tokenizer, tail)] == [r.key() for r in recs[:k]]:
            return k
    return 0


def import_records(
    session,
    recs: list[Record],
    *,
    on_batch=None,
    batch_segments: int = IMPORT_BATCH,
    batch_tokens: int = IMPORT_TOKENS,
) -> dict:
    """Append ``recs`` to the session's tree in batches (one commit each); returns what was
    done. ``on_batch(n)`` is called after each commit with the segments imported so far."""
    tok = session.base.tokenizer
    skip = already_there(session.tree, tok, recs)
    batch, n_tok, commits, appended = [], 0, 0, 0

    def flush():
        nonlocal batch, n_tok, commits, appended
        if not batch:
            return
        parts = [(ids, r.source, r.tags) for r, ids in batch]
        times = [r.time_ns if r.time_ns is not None else time.time_ns() for r, _ in batch]
        session.append_segments(parts, message=f"import {len(batch)} segments", times=times)
        commits += 1
        appended += len(batch)
        if on_batch:
            on_batch(appended)
        batch, n_tok = [], 0

    for r in recs[skip:]:
        if r.raw:
            text = r.text
        elif r.role == "document":
            text = render_document(r.text, r.source)
        else:
            text = render_turn(r.role, r.text)
        ids = np.asarray(tok.encode(text), np.int32)
        if len(batch) >= batch_segments or (batch and n_tok + len(ids) > batch_tokens):
            flush()
        batch.append((r, ids))
        n_tok += len(ids)
    flush()
    return {"lines": len(recs), "skipped": skip, "imported": appended, "commits": commits}


def open_for_export(url: str, model, *, version=None, storage_options=None):
    """``(tree, tokenizer)`` to export ``url`` at ``version``: the tree read-only, and the
    tokenizer of ``model`` (a name or a loaded base), refused with ``BindingMismatch`` if the
    tree was built with another tokenizer (its token ids would decode to other text)."""
    import mcmodels
    import mcstore
    from mcruntime.binding import check_binding

    tree = mcstore.open(url, version=version, storage_options=storage_options)
    base = model if hasattr(model, "tokenizer") else mcmodels.load_base(model)
    check_binding(tree, {"tokenizer": base.binding()})
    return tree, base.tokenizer
