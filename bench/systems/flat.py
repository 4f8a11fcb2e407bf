"""Flat cost: what a whole chat turn costs per token at a small and a large history.

Sections 1 and 2 time the model's steps and single refocus calls; this one times what a user
of ``Session.ask`` waits for, so that work the runtime does *outside* the model (question focus
and retrieval, a refocus every ``refocus_every`` tokens, the focus report, appending both turns
to the tree and indexing them) is counted too: none of it may grow with the history.

Its trees are built from many small appends (``Plan.flat_segment`` tokens each), as a history
of documents and chat turns is, because per-segment bookkeeping is the kind of cost that grows
with history; the decode section's trees have one segment per 131k tokens and would hide it.
One session per history, each turn a ``Session.ask`` of the same question with the same forced
answer (``Probe``), remembered as a chat turn; the sessions take turns in alternating order, so
machine load hits both alike. Per turn: wall and CPU time of the whole ask, its decode loop
(``Answer.timings``), and the model's own steps (``window.logits``); runtime = ask - model.
``ratio``: each per-token median at the largest history over the smallest.
"""

from __future__ import annotations

import statistics
import time

from bench.systems.plan import QUESTION, Plan
from bench.systems.probe import Probe

# per-token medians compared across histories: name -> the turn's field, in seconds
METRICS = {
    "ask": "ask_s",
    "ask_cpu": "ask_cpu_s",
    "decode": "decode_s",
    "model": "model_s",
    "runtime": "runtime_s",
}


def bench_flat(sessions: dict[int, object], probes: dict[int, Probe], plan: Plan) -> dict:
    """``plan.flat_turns`` asks per session, alternating between the sessions; per-token
    medians per history and their ratios (largest history over smallest)."""
    turns: dict[int, list[dict]] = {n: [] for n in sessions}
    order = sorted(sessions)
    for t in range(plan.flat_turns):
        for n in order if t % 2 == 0 else reversed(order):
            turns[n].append(one_turn(sessions[n], probes[n], plan.flat_tokens))
    per = {n: summarise_turns(turns[n], plan.flat_warmup) for n in order}
    lo, hi = per[order[0]], per[order[-1]]
    ratio = {
        m: (hi[f"{m}_ms_per_token"] / lo[f"{m}_ms_per_token"])
        if hi[f"{m}_ms_per_token"] and lo[f"{m}_ms_per_token"]
        else None
        for m in METRICS
    }
    return {
        "window": plan.flat_window,
        "new_tokens": plan.flat_tokens,
        "turns": plan.flat_turns,
        "warmup": plan.flat_warmup,
        "segment_tokens": plan.flat_segment,
        "question": QUESTION,
        "histories": {str(n): v for n, v in per.items()},
        "ratio": ratio,  # largest history / smallest
    }


def one_turn(s, probe: Probe, max_new_tokens: int) -> dict:
    """One ``Session.ask`` (remembered), timed whole and split into the model's steps."""
    mark = len(probe.events)
    history = s.tree.length
    c0, t0 = time.thread_time(), time.perf_counter()
    turn = s.ask(QUESTION, max_new_tokens=max_new_tokens)
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    ev = probe.events[mark:]
    model = sum(e["s"] for e in ev if e["kind"] == "logits")
    refocus = [e for e in ev if e["kind"] == "refocus"]
    return {
        "history": history,
        "tokens": len(turn.answer.tokens),
        "ask_s": wall,
        "ask_cpu_s": cpu,
        "decode_s": turn.answer.timings["decode_s"],
        "model_s": model,
        "runtime_s": wall - model,
        "positions": sum(e["positions"] for e in ev if e["kind"] == "logits"),
        "refocus_calls": len(refocus),
        "refocus_edits": sum(e["edits"] for e in refocus),
    }


def summarise_turns(turns: list[dict], warmup: int) -> dict:
    """Per-token medians over the turns after ``warmup`` (the first turns are reported apart:
    they fill the store's caches and read the tree's segment table once)."""
    kept = [t for t in turns[warmup:] if t["tokens"]] or [t for t in turns if t["tokens"]]
    out = {
        f"{m}_ms_per_token": (
            statistics.median(t[k] / t["tokens"] for t in kept) * 1e3 if kept else None
        )
        for m, k in METRICS.items()
    }
    first = turns[0] if turns else None
    out["first_turn_ms_per_token"] = (
        {m: first[k] / first["tokens"] * 1e3 for m, k in METRICS.items()}
        if first and first["tokens"]
        else None
    )
    out["turns_measured"] = len(kept)
    out["history_start"] = turns[0]["history"] if turns else None
    out["turns"] = turns
    return out
