"""What a request to `mc serve` names and carries, as pure functions: a memory's name, which of
a conversation's turns a tree has not seen, whether it answered this very request before, and
what a stream still owes. No I/O: ``Memories`` applies them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mcruntime.serve.wire import APIError

# a memory name is one path component of the root: no separators, no "..", nothing a URL
# would read as a scheme, query or fragment; "@" is allowed so an e-mail address in the
# request's `user` field names a memory as it is
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
SUFFIX = ".mc"  # memory NAME is the tree ROOT/NAME.mc (what `mc ingest ROOT/NAME.mc` creates)


def check_name(name: str | None) -> str:
    if name is None or not NAME_RE.fullmatch(name) or ".." in name or name.endswith("."):
        shown = repr(name[:80]) if isinstance(name, str) else "(none)"
        raise APIError(
            400,
            f"invalid memory name {shown}: use 1-64 letters, digits, '.', '_', '-' or '@', "
            "starting with a letter or digit (no '..')",
            param="memory",
            code="invalid_memory_name",
        )
    return name


def unseen(history: list[tuple[str, str]], tail: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The turns of ``history`` the tree has not seen, given its newest chat turns ``tail``
    (both oldest first, texts compared without surrounding whitespace).

    The seen part is the longest prefix of ``history`` whose end lines up with the end of the
    tree's chat: ``history[:k]`` and ``tail`` agree on their last ``min(k, len(tail))`` turns."""
    hist = [(r, t.strip()) for r, t in history]
    tail = [(r, t.strip()) for r, t in tail]
    for k in range(len(hist), 0, -1):
        m = min(k, len(tail))
        if m and hist[k - m : k] == tail[len(tail) - m :]:
            return history[k:]
    return list(history)


def answered(
    history: list[tuple[str, str]], question: str, tail: list[tuple[str, str]]
) -> str | None:
    """The answer the tree holds to this very request, or None: its chat (``tail``, oldest
    first) ends with ``question`` and an answer, and ``history`` lines up with what comes
    before them, as when a client sends a request again after its response was lost. A
    request without history is always a new question (asking the same again is allowed)."""
    if not history or len(tail) < 3:
        return None
    (r1, q), (r2, a) = tail[-2:]
    if (r1, r2) != ("user", "assistant") or q.strip() != question.strip():
        return None
    return None if unseen(history, tail[:-2]) else a


def missing_tail(sent: str, final: str) -> str:
    """What a stream still owes so that what the client got is, but for surrounding blank
    space, the answer remembered: the runtime may have streamed leading blank lines that the
    final answer drops, after which it stops streaming."""
    shown = sent.lstrip()
    return final[len(shown) :] if final.startswith(shown) else ""


@dataclass
class TurnResult:
    text: str
    completion_tokens: int
    prompt_tokens: int  # positions of the window the answer was decoded from
    finish_reason: str  # "stop", or "length" when max_tokens ran out
    memory: dict  # name, version and length of the tree after the turn
