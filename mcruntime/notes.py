"""Notes a person adds to a segment: stored in the tree as named objects, so each note is a
commit (versioned, shown by ``mc log``, kept by forks, removed by nothing but a later commit).

One object per annotated segment, ``notes/<segment id>``, holding the segment's start (so a
note never attaches to another segment under the same id) and its notes, oldest first.
"""

from __future__ import annotations

import json
import time

from mcruntime.errors import InputError

PREFIX = "notes/"
MAX_CHARS = 4000  # one note
MAX_NOTES = 200  # per segment


def read_notes(tree) -> dict[int, list[dict]]:
    """Every segment's notes at the tree's version: segment id -> [{text, time_ns}]."""
    out = {}
    for name in tree.objects():
        if name.startswith(PREFIX) and name[len(PREFIX) :].isdigit():
            try:  # stored text is untrusted: a malformed object is no notes
                notes = json.loads(tree.read_object(name)).get("notes", [])
                out[int(name[len(PREFIX) :])] = [
                    {"text": str(n["text"]), "time_ns": int(n.get("time_ns", 0))} for n in notes
                ]
            except (ValueError, TypeError, KeyError, AttributeError):
                continue
    return out


def add_note(tree, segment: int, text: str) -> int:
    """Commit a note on segment ``segment`` of ``tree`` (opened for writing); -> the version."""
    text = (text or "").strip()
    if not text:
        raise InputError("the note is empty", kind="empty")
    if len(text) > MAX_CHARS:
        raise InputError(f"a note holds at most {MAX_CHARS} characters", kind="too_long")
    segs = tree.segments()
    if not 0 <= int(segment) < len(segs):
        raise InputError(f"no segment {segment} (the tree holds {len(segs)})", kind="range")
    segment = int(segment)
    name = f"{PREFIX}{segment}"
    doc = {"segment": segment, "start": segs[segment].start, "notes": []}
    if name in tree.objects():
        doc = json.loads(tree.read_object(name))
    if len(doc["notes"]) >= MAX_NOTES:
        raise InputError(f"segment {segment} holds {MAX_NOTES} notes already", kind="too_many")
    doc["notes"].append({"text": text, "time_ns": time.time_ns()})
    raw = json.dumps(doc, ensure_ascii=False, sort_keys=True).encode()
    return tree.commit_objects({name: raw}, message=f"note on segment {segment}")
