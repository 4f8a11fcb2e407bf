"""Instruments: time what a session does by wrapping its own methods, and summarise the times.

The benchmark never reimplements the decode loop: it runs ``Session.chat_stream`` and
``Session.refocus`` as they are and learns what happened inside from these wrappers, so what
it measures is what a user of the runtime gets.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import numpy as np


def time_calls(obj, attr: str, cell: list[float] | None = None) -> list[float]:
    """Wrap ``obj.attr`` (a callable) so the seconds spent in it accumulate in the returned cell
    (``cell``, to add several callables up in one)."""
    fn = getattr(obj, attr)
    cell = [0.0] if cell is None else cell

    def timed(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            cell[0] += time.perf_counter() - t0

    setattr(obj, attr, timed)
    return cell


class Probe:
    """Times what ``Session.chat_stream`` does, by wrapping the session's own methods.

    ``window.logits``: the model step (duration, positions computed); its result gets a bonus
    on the next forced token, so decoding never stops early and every history length decodes
    the same text. ``refocus``: one refocus call (duration, edits; while decoding the session
    passes ``tau_expand=decode_tau``). ``scorer`` and the retrieval assist's ``index.search``
    (once per refocus call): their share of it.
    """

    def __init__(self, session, forced: list[int]):
        self.s = session
        self.forced = forced
        self.k = 0
        self.events: list[dict] = []
        win = session.window
        logits, refocus = win.logits, session.refocus

        def timed_logits():
            before = win.recomputed
            t0 = time.perf_counter()
            out = logits()
            dt = time.perf_counter() - t0
            self.events.append(
                {"kind": "logits", "s": dt, "positions": win.recomputed - before, "len": win.length}
            )
            out = out.clone()
            out[self.forced[self.k % len(self.forced)]] = out.max() + 10.0
            self.k += 1
            return out

        def timed_refocus(query_ids, tail=None, rounds=1, **kw):
            t0 = time.perf_counter()
            edits = refocus(query_ids, tail=tail, rounds=rounds, **kw)
            self.events.append({
                "kind": "refocus", "s": time.perf_counter() - t0, "edits": edits,
                "rounds": rounds, "tau_expand": kw.get("tau_expand"),
            })  # fmt: skip
            return edits

        win.logits = timed_logits
        session.refocus = timed_refocus
        self.set_scorer(session.scorer)
        if session.index is not None:
            search = session.index.search

            def timed_search(*a, **k):
                t0 = time.perf_counter()
                out = search(*a, **k)
                self.events.append({"kind": "retrieval", "s": time.perf_counter() - t0})
                return out

            session.index.search = timed_search

    def set_scorer(self, scorer) -> None:
        def timed_scorer(view):
            t0 = time.perf_counter()
            out = scorer(view)
            self.events.append({"kind": "score", "s": time.perf_counter() - t0})
            return out

        self.s.scorer = timed_scorer


@contextlib.contextmanager
def timed_index_builds():
    """Seconds spent building the session's retrieval index (``NodeIndex``) while opening."""
    import mcruntime.session as ms

    orig, cell = ms.NodeIndex, [0.0]

    class Timed(orig):
        def __init__(self, *a, **k):
            t0 = time.perf_counter()
            super().__init__(*a, **k)
            cell[0] += time.perf_counter() - t0

    ms.NodeIndex = Timed
    try:
        yield cell
    finally:
        ms.NodeIndex = orig


# -- statistics ----------------------------------------------------------------------------------


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def ms_stats(xs: list[float]) -> dict:
    """n, median, p90, mean, min, max of durations in seconds, as milliseconds."""
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "median_ms": statistics.median(xs) * 1e3,
        "p90_ms": float(np.percentile(np.asarray(xs), 90)) * 1e3,
        "mean_ms": statistics.fmean(xs) * 1e3,
        "min_ms": min(xs) * 1e3,
        "max_ms": max(xs) * 1e3,
    }
