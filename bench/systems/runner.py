"""The run: every section for every model in one process, in the order that lets sessions be
shared, and the command line (``python -m bench systems``, ``mc bench systems``).

Per model: build (or reuse) the trees, list their bytes, open one session per history on a fork
(timing the open and its retrieval index), decode, refocus per scorer, close; then ingest local
vs S3 and the RSS child processes, which need no open session; last the flat cost of a chat
turn on its own trees of many segments (``--flat-only``: that section alone).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from bench._common import loadavg, machine_info, moto_s3
from bench.systems import footprint, plot, report
from bench.systems.decode import bench_decode
from bench.systems.flat import bench_flat
from bench.systems.ingest import bench_ingest
from bench.systems.plan import CACHE, FULL, MODELS, QUICK, RESULTS, Plan
from bench.systems.probe import Probe
from bench.systems.refocus import bench_refocus
from bench.systems.trees import (
    build_tree,
    fingerprint,
    forced_ids,
    fork_tree,
    load_model,
    session_for,
    source_ids,
)
from mcruntime.hooks import Timings


@contextlib.contextmanager
def _run_dir(plan: Plan, cache: Path):
    """One run's result dict (machine, plan, models; its duration and the load at its end
    added on exit) and its scratch folder with the pins its forks leave in cached trees, all
    removed on exit. -> (res, rundir, pins)."""
    torch.set_num_threads(1)
    t_run = time.perf_counter()
    res: dict = {"machine": machine_info(), "plan": asdict(plan), "models": {}}
    rundir = cache / f"run-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    rundir.mkdir(parents=True, exist_ok=True)
    pins: list[Path] = []
    try:
        yield res, rundir, pins
    finally:
        for p in pins:
            p.unlink(missing_ok=True)
        shutil.rmtree(rundir, ignore_errors=True)
    res["machine"]["loadavg_end"] = loadavg()
    res["seconds"] = time.perf_counter() - t_run


def run(plan: Plan, models=MODELS, *, cache: Path = CACHE, log=print) -> dict:
    """Every section for ``models``; the result dict that ``write`` saves."""
    with _run_dir(plan, cache) as (res, rundir, pins):
        s3ctx = moto_s3(own_process=True) if plan.s3 else contextlib.nullcontext(None)
        with s3ctx as s3so:
            for model in models:
                log(f"== {model}")
                res["models"][model] = run_model(model, plan, cache, rundir, s3so, pins, log)
    return res


def run_model(model: str, plan: Plan, cache: Path, rundir: Path, s3so, pins, log) -> dict:
    t0 = time.perf_counter()
    base, g = load_model(model)
    out: dict = {"base": base.name, "d_model": base.d_model, "load_s": time.perf_counter() - t0}
    src, note = source_ids(base)
    out["history_source"] = note
    out["gistnet"] = {"hash": fingerprint(g), "hidden": g.cfg.hidden, "layers": g.cfg.layers}
    hs = sorted(plan.histories.get(model, []))
    trees, builds = {}, {}
    for n in hs:
        log(f"  tree of {n:,} tokens")
        trees[n], builds[n] = build_tree(model, base, g, n, src, note, cache)
    out["builds"] = {str(n): b for n, b in builds.items()}

    # 4. bytes
    out.update(footprint.storage_vs_kv(base, trees))

    # sessions on forks of the cached trees, all open at once
    sessions, probes, opens, index_s, keys = {}, {}, {}, {}, {}
    forced = forced_ids(base)
    for n in hs:
        tree, pin = fork_tree(trees[n], rundir)
        pins.append(pin)
        t, opening = time.perf_counter(), Timings()
        s = session_for(tree, base, g, plan.window, hooks=opening)
        opens[n] = time.perf_counter() - t
        index_s[n] = opening.total("index_open")
        if s.index is not None:  # level-1 keys read from stored chunks / all of them
            keys[n] = {
                "stored": min(s.index.stored.values(), default=0),
                "total": s.index.indexed(),
            }
        sessions[n] = s
        probes[n] = Probe(s, forced)
    out["session_open_s"] = {str(n): v for n, v in opens.items()}
    out["session_open_index_s"] = {str(n): v for n, v in index_s.items()}
    out["session_open_index_keys"] = {str(n): v for n, v in keys.items()}
    cfg = next(iter(sessions.values())).config
    out["session_config"] = asdict(cfg)
    out["focus_config"] = asdict(next(iter(sessions.values())).focus.config)
    out["scorer"] = cfg.scorer or "recency"

    # 1. decode
    rounds = plan.rounds.get(model, 1)
    log(f"  decode: {rounds} turn(s) x {plan.new_tokens} tokens, interleaved over {hs}")
    dec = bench_decode(sessions, probes, plan, rounds)
    out["decode"] = {str(n): v for n, v in dec.items()}

    # 2. refocus per scorer
    log("  refocus per scorer")
    rf = bench_refocus(sessions, probes, plan.refocus_reps.get(model, {}))
    out["refocus"] = {sc: {str(n): v for n, v in per.items()} for sc, per in rf.items()}
    for s in sessions.values():
        s.close()
    sessions.clear()
    probes.clear()

    # 3. ingest
    if plan.ingest_tokens.get(model):
        log(f"  ingest {plan.ingest_tokens[model]:,} tokens, local vs S3")
        out["ingest"] = bench_ingest(
            base, g, src, plan.ingest_tokens[model], plan.ingest_chunk, rundir, s3so, plan.window
        )

    # 5. memory, one fresh process per history length
    if plan.rss:
        out["rss"] = {}
        for n in hs:
            log(f"  RSS during chat, {n:,} tokens (child process)")
            out["rss"][str(n)] = footprint.run_rss_child(
                model, trees[n], rundir, plan.window, plan.rss_tokens
            )

    # 6. flat cost: whole chat turns per token, small vs large history of many segments
    if plan.flat_histories.get(model):
        out["flat"] = run_flat(model, base, g, src, note, plan, cache, rundir, pins, log)
    return out


def run_flat(model, base, g, src, note, plan: Plan, cache, rundir, pins, log) -> dict:
    """Section 6 for one model: its trees (``plan.flat_segment`` tokens per append), one
    session per history on a fork, ``bench_flat``."""
    hs = sorted(plan.flat_histories[model])
    sessions, probes, builds, opens = {}, {}, {}, {}
    forced = forced_ids(base)
    try:
        for n in hs:
            log(f"  flat cost: tree of {n:,} tokens in {plan.flat_segment}-token segments")
            path, builds[n] = build_tree(
                model, base, g, n, src, note, cache, chunk=plan.flat_segment
            )
            tree, pin = fork_tree(path, rundir)
            pins.append(pin)
            t = time.perf_counter()
            sessions[n] = session_for(tree, base, g, plan.flat_window)
            opens[n] = time.perf_counter() - t
            probes[n] = Probe(sessions[n], forced)
        log(
            f"  flat cost: {plan.flat_turns} turns x {plan.flat_tokens} tokens, "
            f"alternating over {hs}, window {plan.flat_window}"
        )
        out = bench_flat(sessions, probes, plan)
    finally:
        for s in sessions.values():
            s.close()
    for n in hs:
        h = out["histories"][str(n)]
        h["build"], h["session_open_s"] = builds[n], opens[n]
        h["segments"] = builds[n].get("segments")
    return out


# -- files and the command line ------------------------------------------------------------------


def write(res: dict, out_dir: Path) -> dict[str, Path]:
    """``systems.json``, ``systems.md`` and ``systems_latency.png`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "systems.json",
        "md": out_dir / "systems.md",
        "png": out_dir / "systems_latency.png",
    }
    paths["json"].write_text(json.dumps(res, indent=2, default=_jsonable))
    paths["md"].write_text(report.markdown(res))
    plot.plot(res, paths["png"])
    return paths


def _jsonable(x):
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    raise TypeError(type(x))


def main(argv=None):
    import bench.systems

    ap = argparse.ArgumentParser(
        prog="python -m bench systems", description=bench.systems.__doc__.splitlines()[0]
    )
    ap.add_argument("--quick", action="store_true", help="smaller histories (a few minutes)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: smollm2,tiny")
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--cache", default=str(CACHE), help="where built trees are kept")
    ap.add_argument("--no-s3", action="store_true", help="skip the S3 (moto) ingest")
    ap.add_argument("--no-rss", action="store_true", help="skip the RSS child processes")
    ap.add_argument("--build-only", action="store_true", help="only build the cached trees")
    ap.add_argument(
        "--flat-only",
        action="store_true",
        help="only section 6, the flat cost of a chat turn (a few minutes); writes flat_cost.*",
    )
    ap.add_argument(
        "--report-only", action="store_true", help="redraw the .md and .png from the .json"
    )
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.rss_child:
        print(json.dumps(footprint.rss_child(json.loads(a.rss_child))))
        return
    if a.report_only and a.flat_only:
        res = json.loads((Path(a.out_dir) / "flat_cost.json").read_text())
        print(report.flat_tables(res))
        print("wrote " + ", ".join(str(p) for p in write_flat(res, Path(a.out_dir)).values()))
        return
    if a.report_only:
        res = json.loads((Path(a.out_dir) / "systems.json").read_text())
    else:
        plan = QUICK if a.quick else FULL
        plan = Plan(**{**asdict(plan), "s3": not a.no_s3, "rss": not a.no_rss})
        models = [m for m in a.models.split(",") if m]
        if a.build_only:
            build_only(plan, models, Path(a.cache))
            return
        if a.flat_only:
            res = run_flat_only(plan, models, cache=Path(a.cache))
            res["quick"] = a.quick
            print(report.flat_tables(res))
            paths = write_flat(res, Path(a.out_dir))
            print("wrote " + ", ".join(str(p) for p in paths.values()))
            return
        res = run(plan, models, cache=Path(a.cache))
        res["quick"] = a.quick
    print(report.tables(res))
    paths = write(res, Path(a.out_dir))
    print("wrote " + ", ".join(str(p) for p in paths.values()))


def build_only(plan: Plan, models: list[str], cache: Path) -> None:
    torch.set_num_threads(1)
    for model in models:
        base, g = load_model(model)
        src, note = source_ids(base)
        for n in sorted(plan.histories.get(model, [])):
            path, info = build_tree(model, base, g, n, src, note, cache)
            print(f"{model} {n:,}: {path} ({info['build_s']:.0f} s)")
        for n in sorted(plan.flat_histories.get(model, [])):
            path, info = build_tree(model, base, g, n, src, note, cache, chunk=plan.flat_segment)
            print(f"{model} {n:,} (flat cost): {path} ({info['build_s']:.0f} s)")


def run_flat_only(plan: Plan, models=MODELS, *, cache: Path = CACHE, log=print) -> dict:
    """Section 6 alone, for the models that have flat-cost histories in ``plan``."""
    with _run_dir(plan, cache) as (res, rundir, pins):
        for model in models:
            if not plan.flat_histories.get(model):
                continue
            log(f"== {model}")
            base, g = load_model(model)
            src, note = source_ids(base)
            out = {"base": base.name, "d_model": base.d_model, "history_source": note}
            out["flat"] = run_flat(model, base, g, src, note, plan, cache, rundir, pins, log)
            res["models"][model] = out
    return res


def write_flat(res: dict, out_dir: Path) -> dict[str, Path]:
    """``flat_cost.json`` and ``flat_cost.md`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "flat_cost.json", "md": out_dir / "flat_cost.md"}
    paths["json"].write_text(json.dumps(res, indent=2, default=_jsonable))
    paths["md"].write_text(report.flat_markdown(res))
    return paths
