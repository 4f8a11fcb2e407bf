"""The explorer's first view of a 1M-token memory: time to interactive in headless Chromium.

A memory of about 1M tokens is built once (documents of 32,768 tokens and a few hundred chat
turns, ~40 commits; the tiny test model by default, whose byte tokenizer makes building fast:
the explorer's first view reads no model, only the tree), served by ``mc serve``'s app on
127.0.0.1, and opened in Debian's ``chromium`` (Playwright) in a fresh browser context per
run. Measured per run: the page's own ready mark (``window.mcReadyAt``: ms from navigation
start until the memory's view is drawn: overview, LOD strips, segments in view, commits), and a
drill from level 2 to raw text (click to text shown, as the test does). The median and the
worst of the runs are reported; the first run is the cold one (the server's first open).

    python -m bench explorer [--tokens 1048576] [--runs 5] [--model tiny] [--tree DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench._common import ROOT, loadavg, machine_info

RESULTS = ROOT / "bench" / "results" / "explorer"
NAME = "big"
WORDS = "station journal river pump valve generator crew supply radio storm antenna".split()


def text(seed: int, n: int) -> str:
    r = random.Random(seed)
    return " ".join(r.choice(WORDS) for _ in range(n // 6))[:n]


def build(url: str, tokens: int, base) -> float:
    """A memory of about ``tokens`` tokens; -> seconds it took."""
    from mcruntime import Session

    t0 = time.perf_counter()
    with Session(url, model=base, window=512) as s:
        i = 0
        while s.tree.length < tokens * 0.92:
            s.ingest(text(i, 32_700), source=f"logs/day-{i:03d}.txt")
            i += 1
        while s.tree.length < tokens:  # chat turns, 100 a commit
            turns = [(role, text(i * 1000 + k, 150)) for k in range(50)
                     for role in ("user", "assistant")]  # fmt: skip
            s.remember_turns(turns)
            i += 1
    return time.perf_counter() - t0


def measure(url: str, runs: int, length: int) -> list[dict]:
    import shutil as sh

    from playwright.sync_api import expect, sync_playwright

    out = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=sh.which("chromium"), args=["--no-sandbox"])
        for _ in range(runs):
            ctx = browser.new_context(viewport={"width": 1280, "height": 860})
            pg = ctx.new_page()
            t0 = time.perf_counter()
            pg.goto(f"{url}/#/m/{NAME}")
            pg.locator("body[data-ready]").wait_for(timeout=60_000)
            wall = time.perf_counter() - t0
            ready = pg.evaluate("window.mcReadyAt")
            expect(pg.locator("#summary")).to_contain_text(f"{length:,} tokens")
            c = pg.locator('#strips canvas[data-level="2"]')
            t1 = time.perf_counter()
            c.click(position={"x": c.bounding_box()["width"] * 0.4, "y": 5})
            expect(pg.locator("#drill")).to_contain_text("level 2 gist")
            expect(pg.locator("#text")).not_to_be_empty()
            drill = time.perf_counter() - t1
            out.append({"ready_ms": round(ready, 1), "goto_to_ready_s": round(wall, 3),
                        "drill_s": round(drill, 3)})  # fmt: skip
            ctx.close()
        browser.close()
    return out


def report(res: dict) -> str:
    rows = res["runs"]
    ready = [r["ready_ms"] for r in rows]
    drill = [r["drill_s"] * 1000 for r in rows]
    return "\n".join([
        f"# Explorer: first view of a {res['tokens']:,}-token memory",
        "",
        f"{res['segments']} segments, {res['commits']} commits, {res['levels']} levels; "
        f"model {res['model']}; local disk; headless Chromium {res['browser']}; "
        f"{res['machine']['cores']} cores, load {res['machine']['loadavg_start']}.",
        "",
        "| measure | cold (run 1) | median | worst |",
        "|---|---:|---:|---:|",
        f"| time to interactive, first view (ms) | {ready[0]:.0f} | "
        f"{statistics.median(ready):.0f} | {max(ready):.0f} |",
        f"| drill level 2 -> raw text (ms) | {drill[0]:.0f} | {statistics.median(drill):.0f} "
        f"| {max(drill):.0f} |",
        "",
        f"Rule: interactive within 2 s -> {'met' if max(ready) < 2000 else 'NOT met'} "
        f"(worst of {len(rows)} runs).",
        "",
    ])  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench explorer", description=__doc__)
    ap.add_argument("--tokens", type=int, default=1 << 20)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--tree", default=None, help="keep the built memory in this folder")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if shutil.which("chromium") is None:
        print("no chromium: apt-get install chromium")
        return 2
    import torch

    import mcmodels
    import mcstore
    from mcruntime.serve import Memories, ServeConfig, create_app, running

    torch.set_num_threads(1)
    base = mcmodels.tiny_base(0) if args.model == "tiny" else mcmodels.load_base(args.model)
    root = Path(args.tree or tempfile.mkdtemp(prefix="mc-explorer-"))
    url = str(root / f"{NAME}.mc")
    built = None
    if not (root / f"{NAME}.mc").exists():
        built = build(url, args.tokens, base)
        print(f"built {url} in {built:.0f}s")
    t = mcstore.open(url)
    machine = machine_info()
    cfg = ServeConfig(root=str(root), model=args.model, window=512)
    with running(create_app(cfg, Memories(cfg, base=base))) as server:
        runs = measure(server, args.runs, t.length)
    import subprocess

    version = subprocess.run(["chromium", "--version"], capture_output=True, text=True).stdout
    res = {
        "tokens": t.length, "segments": len(t.segments()), "commits": t.version,
        "levels": t.num_levels, "model": base.name, "build_s": built,
        "browser": version.strip(), "runs": runs, "machine": machine,
        "loadavg_end": loadavg(),
    }  # fmt: skip
    md = report(res)
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(md)
    if args.tree is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0
