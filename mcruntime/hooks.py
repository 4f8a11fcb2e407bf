"""Explicit observation points of a session: where its time goes, and one decoding hook.

A ``Session`` (and its ``Window``) call ``hooks.span(kind, **info)`` around each piece of work
they do, at the place the work is done, so what a benchmark or a trace measures does not depend
on the names of the methods it would otherwise have to replace. The base ``Hooks`` does nothing
and costs a method call; ``Timings`` records every span as an event dict. Kinds:

========== ==================================================== ==============================
kind       what                                                 info
========== ==================================================== ==============================
logits     one model step (``Window.logits``)                   positions (recomputed), len
refocus    one ``Session.refocus`` call                         edits, rounds, tau_expand
score      one scorer call inside a refocus round
retrieval  the retrieval assist's search (``Session.search``)
index_open building or loading the retrieval index (``Session``)
store      ``tree.append`` in ``Session.append_ids`` (incl. gist)
gist       one call of the session's gister (inside ``store``)
index      keeping the retrieval index current and persisting it
========== ==================================================== ==============================

``on_logits`` sees the logits the session is about to pick the next token from and may return
others: a benchmark forces a fixed answer so every history decodes the same text.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

KINDS = ("logits", "refocus", "score", "retrieval", "index_open", "store", "gist", "index")


class Hooks:
    """No observation: every span is free of bookkeeping, logits pass through."""

    def span(self, kind: str, **info) -> contextlib.AbstractContextManager[dict]:
        """A context around one piece of work; the dict it yields may take more info."""
        return contextlib.nullcontext({})

    def wrap(self, kind: str, fn: Callable) -> Callable:
        """``fn`` itself, or ``fn`` with every call inside ``span(kind)``."""
        return fn

    def on_logits(self, logits):
        return logits


class Timings(Hooks):
    """Records every span as ``{"kind", "s", **info}`` in ``events`` (in order of completion)."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    @contextlib.contextmanager
    def span(self, kind: str, **info) -> Iterator[dict]:
        rec = {"kind": kind, **info}
        t0 = time.perf_counter()
        try:
            yield rec
        finally:
            rec["s"] = time.perf_counter() - t0
            self.events.append(rec)

    def wrap(self, kind: str, fn: Callable) -> Callable:
        def timed(*a, **k):
            with self.span(kind):
                return fn(*a, **k)

        return timed

    def total(self, kind: str, since: int = 0) -> float:
        """Seconds spent in spans of ``kind`` among ``events[since:]``."""
        return sum(e["s"] for e in self.events[since:] if e["kind"] == kind)

    def mark(self) -> int:
        """The index of the next event (pass it to ``total`` / ``since``)."""
        return len(self.events)

    def since(self, mark: int) -> list[dict]:
        return self.events[mark:]


NO_HOOKS = Hooks()
