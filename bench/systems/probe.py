"""Instruments: what a session does, from the spans it reports, and a summary of the times.

The benchmark never reimplements the decode loop: it runs ``Session.chat_stream`` and
``Session.refocus`` as they are and learns what happened inside from the spans the session and
its window report to their hooks (``mcruntime.hooks``), so what it measures is what a user of
the runtime gets, and renaming a method cannot silently change what is measured.
"""

from __future__ import annotations

import statistics

import numpy as np

from mcruntime.hooks import Timings


class Probe(Timings):
    """The spans of one session's work (``events``: ``logits``, ``refocus``, ``score``,
    ``retrieval``, …; see ``mcruntime.hooks``), and a forced answer.

    ``logits`` is one model step (duration, positions computed); the logits the session picks
    from get a bonus on the next forced token, so decoding never stops early and every history
    length decodes the same text (``k``: tokens forced so far). ``refocus`` is one refocus call
    (duration, edits; while decoding the session passes ``tau_expand=decode_tau``); ``score``
    and ``retrieval`` (once per refocus call) are their share of it.
    """

    def __init__(self, session, forced: list[int]):
        super().__init__()
        self.forced = forced
        self.k = 0
        session.set_hooks(self)

    def on_logits(self, logits):
        out = logits.clone()
        out[self.forced[self.k % len(self.forced)]] = out.max() + 10.0
        self.k += 1
        return out


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
