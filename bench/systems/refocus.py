"""Refocus latency per scorer (recency, similarity, attention), split into its parts.

One refocus step as ``Session.refocus`` runs it, for a 16-token query taken from a random place
of the history (the same place, as a fraction of the length, for every length), followed by the
model step that recomputes the KV cache from the first changed entry. The parts: scoring, the
retrieval assist's search (once per call), allocator + vector reads (the rest of the call), KV
recompute. The step runs with the allocator's own threshold (``FocusConfig.tau_expand``), as
before a question: decoding raises it to ``decode_tau``, which section 1 measures.
"""

from __future__ import annotations

import time

import numpy as np

from bench.systems.plan import SCORERS
from bench.systems.probe import Probe, median, ms_stats


def bench_refocus(
    sessions: dict[int, object], probes: dict[int, Probe], reps: dict[str, int], seed=0
) -> dict[str, dict[int, dict]]:
    """Refocus steps for queries taken from random places of the history, interleaved across
    history lengths; each split into scoring, retrieval, allocator + reads, KV recompute."""
    from mcruntime.scorers import make_scorer

    out: dict[str, dict[int, dict]] = {}
    rng = np.random.default_rng(seed)
    for name in SCORERS:
        k = reps.get(name, 0)
        if not k:
            continue
        rows: dict[int, list[dict]] = {n: [] for n in sessions}
        for s in sessions.values():
            s.scorer = make_scorer(name)
        for _ in range(k):
            frac = float(rng.random())
            for n, s in sessions.items():
                rows[n].append(_one_step(s, probes[n], frac))
        out[name] = {n: _summarise(rs) for n, rs in rows.items()}
    # back to the session's own scorer
    for s in sessions.values():
        s.scorer = make_scorer(s.config.scorer or "recency")
    return out


def _one_step(s, p: Probe, frac: float) -> dict:
    n_hist = s.tree.length
    at = int(frac * max(1, n_hist - 16))
    q = [int(x) for x in s.tree.tokens(at, at + 16)]
    s.sync()
    s.window.logits()  # a clean cache before the step, as during decoding
    mark = len(p.events)
    c0, t0 = time.thread_time(), time.perf_counter()
    edits = s.refocus(q, rounds=1)
    t1 = time.perf_counter()
    first = s.window.cached
    s.window.logits()
    t2, c2 = time.perf_counter(), time.thread_time()
    ev = p.events[mark:]
    score = sum(e["s"] for e in ev if e["kind"] == "score")
    retr = sum(e["s"] for e in ev if e["kind"] == "retrieval")
    return {
        "score_s": score,
        "retrieval_s": retr,
        "allocate_read_s": (t1 - t0) - score - retr,
        "recompute_s": t2 - t1,
        "total_s": t2 - t0,
        "total_cpu_s": c2 - c0,
        "edits": edits,
        "first_changed": first,
        "positions": sum(e["positions"] for e in ev if e["kind"] == "logits"),
    }


def _summarise(rs: list[dict]) -> dict:
    return {
        "reps": len(rs),
        "score_ms": ms_stats([r["score_s"] for r in rs]),
        "retrieval_ms": ms_stats([r["retrieval_s"] for r in rs]),
        "allocate_read_ms": ms_stats([r["allocate_read_s"] for r in rs]),
        "recompute_ms": ms_stats([r["recompute_s"] for r in rs]),
        "total_ms": ms_stats([r["total_s"] for r in rs]),
        "total_cpu_ms": ms_stats([r["total_cpu_s"] for r in rs]),
        "edits": [r["edits"] for r in rs],
        "first_changed": [r["first_changed"] for r in rs],
        "positions_recomputed": [r["positions"] for r in rs],
        # recompute cost normalised by its size (steps that changed something)
        "recompute_ms_per_position": median(
            [r["recompute_s"] * 1e3 / r["positions"] for r in rs if r["positions"] > 1]
        ),
    }
