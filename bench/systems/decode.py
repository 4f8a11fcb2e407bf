"""Decode latency per token vs history length: the constant-compute claim.

Every history length has its own session, all open at once; their chat turns advance one token
each in turn (in alternating order), so load from the rest of the machine hits every length
alike and the ratios between lengths stay meaningful on a shared machine. Each ``next()`` of
``chat_stream`` is one step, classified from what the probe saw inside it.
"""

from __future__ import annotations

import time

from bench.systems.plan import QUESTION, Plan
from bench.systems.probe import Probe, ms_stats

# ratio columns: each length's value over the smallest length's
RATIOS = {
    "decode_median": lambda d: d["decode"].get("median_ms"),
    "decode_p90": lambda d: d["decode"].get("p90_ms"),
    "decode_cpu_median": lambda d: d["decode_cpu"].get("median_ms"),
    "decode_cpu_p90": lambda d: d["decode_cpu"].get("p90_ms"),
    "amortized": lambda d: d["amortized_ms_per_token"],
    "amortized_cpu": lambda d: d["amortized_cpu_ms_per_token"],
}


def bench_decode(
    sessions: dict[int, object], probes: dict[int, Probe], plan: Plan, rounds: int
) -> dict[int, dict]:
    """Interleaved chat turns, one token of every session in turn; per-step classification,
    and every length's ratios to the smallest one."""
    steps: dict[int, list[dict]] = {n: [] for n in sessions}
    for rnd in range(rounds):
        gens = {
            n: s.chat_stream(QUESTION, max_new_tokens=plan.new_tokens) for n, s in sessions.items()
        }
        idx = dict.fromkeys(sessions, 0)
        live = sorted(gens)
        flip = False
        while live:
            order = list(reversed(live)) if flip else list(live)
            flip = not flip
            for n in order:
                p = probes[n]
                mark = len(p.events)
                c0, t0 = time.thread_time(), time.perf_counter()
                try:
                    next(gens[n])
                    done = False
                except StopIteration:
                    done = True
                dt, dc = time.perf_counter() - t0, time.thread_time() - c0
                ev = p.events[mark:]
                steps[n].append(
                    {"round": rnd, "i": idx[n], "s": dt, "cpu": dc, "done": done, "events": ev}
                )
                idx[n] += 1
                if done:
                    live.remove(n)
    out = {n: summarise_steps(st, plan) for n, st in steps.items()}
    n0 = min(out)
    for n, d in out.items():
        d["history"] = sessions[n].tree.length
        d["ratio_vs_smallest"] = {
            name: (get(d) / get(out[n0]) if get(d) and get(out[n0]) else None)
            for name, get in RATIOS.items()
        }
    return out


def summarise_steps(steps: list[dict], plan: Plan) -> dict:
    """Statistics of one session's steps: wall time (what a user waits) and this thread's CPU
    time (what the step computed; unlike wall time it does not count time the scheduler gave
    to other processes on a shared machine)."""
    first, end, pure, pure_cpu, rsteps, rsteps_cpu = [], [], [], [], [], []
    amort_s = amort_cpu = 0.0
    amort_n = multi = 0
    rcalls, redits, rpos, pure_pos, trace, lens, taus = [], [], [], [], [], [], []
    for st in steps:
        ev = st["events"]
        n_logits = sum(e["kind"] == "logits" for e in ev)
        rf = [e for e in ev if e["kind"] == "refocus"]
        pos = [e["positions"] for e in ev if e["kind"] == "logits"]
        kind = "first" if st["i"] == 0 else "end" if st["done"] else "refocus" if rf else "decode"
        trace.append(
            [st["round"], st["i"], kind, round(st["s"] * 1e3, 3), round(st["cpu"] * 1e3, 3)]
            + [sum(pos)]
        )
        if kind == "first":
            first.append(st["s"])
            continue
        if kind == "end":
            end.append(st["s"])
            continue
        if n_logits != 1:
            multi += 1  # a token that did not end a character: two steps in one next()
        k = max(1, n_logits)
        if st["i"] <= plan.warmup:
            continue
        amort_s += st["s"]
        amort_cpu += st["cpu"]
        amort_n += k
        if rf:
            rsteps.append(st["s"] / k)
            rsteps_cpu.append(st["cpu"] / k)
            rcalls += [e["s"] for e in rf]
            redits += [e["edits"] for e in rf]
            taus += [e.get("tau_expand") for e in rf]
            rpos += pos
        else:
            pure.append(st["s"] / k)
            pure_cpu.append(st["cpu"] / k)
            pure_pos += pos
            lens += [e["len"] for e in ev if e["kind"] == "logits" and "len" in e]
    return {
        "decode": ms_stats(pure),
        "decode_cpu": ms_stats(pure_cpu),
        "decode_positions_max": max(pure_pos) if pure_pos else None,
        "window_positions": [min(lens), max(lens)] if lens else None,  # cache length, decoding
        "refocus_step": ms_stats(rsteps),
        "refocus_step_cpu": ms_stats(rsteps_cpu),
        "refocus_call": ms_stats(rcalls),
        "refocus_edits": redits,
        "refocus_tau_expand": sorted(set(taus), key=str),  # as the session passed it
        "refocus_recomputed_positions": rpos,
        "amortized_ms_per_token": amort_s / amort_n * 1e3 if amort_n else None,
        "amortized_cpu_ms_per_token": amort_cpu / amort_n * 1e3 if amort_n else None,
        "tokens_measured": amort_n,
        "first_token": ms_stats(first),
        "end_of_turn": ms_stats(end),
        "multi_token_steps": multi,
        "trace": {
            "columns": ["round", "step", "kind", "wall_ms", "cpu_ms", "positions"],
            "rows": trace,
        },
    }
