"""Benchmark of the tree store, local disk and S3 (moto server on 127.0.0.1) side by side.

    python -m bench.store_bench [--quick] [--epochs 4096,8192,32768]

Measures append throughput (tokens/s, gist rows/s) for 64-token and 64k-token appends, bytes
written per raw byte appended (counted at the storage layer: every PUT's body), commit record
size, single-node read latency (cold, warm shard index, cached) with GET counts, and open
latency and requests after many small commits (tail checkpoints bound them), and what a
chat-like tree keeps on storage before and after gc with snapshot expiry. Prints a table;
writes bench/results/store.json and store.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

import mcstore
from bench._common import moto_s3
from mcstore import format as F

DIM = 576
RESULTS = Path(__file__).resolve().parent / "results" / "store.json"


def make_gister(seed=0):
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal((4096, DIM)).astype(np.float16)

    def gister(level, children):
        k = children.shape[0]
        idx = rng.integers(0, len(pool), k)
        return pool[idx]

    return gister


def raw_bytes(t, old_state, new_state) -> int:
    """Bytes of the rows an append added, over every array (tokens, gists, metadata, segments)."""
    geo = t.geo
    total = 0
    for name in new_state.arrays(geo.block):
        spec = geo.spec(name)
        total += (geo.rows(name, new_state) - geo.rows(name, old_state)) * spec.itemsize
    return total


def state(t):
    return t.snapshot.extent


def bench_appends(url, so, n_tokens, n_appends, epoch):
    t = mcstore.create(url, dim=DIM, block=32, epoch=epoch, storage_options=so)
    g = make_gister()
    rng = np.random.default_rng(1)
    st0 = t.io_stats
    raw = 0
    rows = 0
    t0 = time.perf_counter()
    for _ in range(n_appends):
        before = state(t)
        lv1 = t.num_nodes(1)
        t.append(rng.integers(0, 49152, n_tokens), gister=g, source="bench")
        raw += raw_bytes(t, before, state(t))
        rows += sum(t.num_nodes(lv) for lv in range(1, t.num_levels)) - lv1 * 0
    dt = time.perf_counter() - t0
    st1 = t.io_stats
    written = st1["put_bytes"] - st0["put_bytes"]
    gist_rows = sum(t.num_nodes(lv) for lv in range(1, t.num_levels))
    rec_sizes = [len(t.backend.read(F.log_key(v))) for v in range(2, t.version + 1)]
    return t, {
        "tokens": n_tokens * n_appends,
        "appends": n_appends,
        "seconds": dt,
        "tokens_per_s": n_tokens * n_appends / dt,
        "gist_rows_per_s": gist_rows / dt,
        "raw_bytes": raw,
        "bytes_written": written,
        "write_amplification": written / raw,
        "puts": st1["puts"] - st0["puts"],
        "commit_record_bytes_mean": statistics.mean(rec_sizes),
        "commit_record_bytes_max": max(rec_sizes),
    }


def bench_node_reads(url, so, samples=40):
    t = mcstore.open(url, storage_options=so)
    n1 = t.num_nodes(1)
    S = t.geo.level_shard_rows(1)
    full = (n1 // S) * S
    rng = np.random.default_rng(2)
    shards = rng.choice(full // S, size=min(samples, full // S), replace=False)
    cold, warm, cached, g_cold, g_warm, g_cached = [], [], [], [], [], []
    for k in shards:
        i, j = int(k * S + 1), int(k * S + S - 2)
        for lst, glst, node in ((cold, g_cold, i), (warm, g_warm, j), (cached, g_cached, j)):
            s0 = t.io_stats["gets"]
            t0 = time.perf_counter()
            t.gists(1, node, node + 1)
            lst.append(time.perf_counter() - t0)
            glst.append(t.io_stats["gets"] - s0)
    # one token block (32 tokens) from a full shard, warm index
    E = t.epoch
    t.tokens(0, 32)
    s0 = t.io_stats["gets"]
    t0 = time.perf_counter()
    t.tokens(E // 2, E // 2 + 32)
    tok_ms = (time.perf_counter() - t0) * 1e3
    tok_gets = t.io_stats["gets"] - s0
    med = statistics.median
    return {
        "cold_ms": med(cold) * 1e3,
        "warm_index_ms": med(warm) * 1e3,
        "cached_ms": med(cached) * 1e3,
        "gets_cold": med(g_cold),
        "gets_warm_index": med(g_warm),
        "gets_cached": med(g_cached),
        "token_block_ms": tok_ms,
        "token_block_gets": tok_gets,
        "samples": len(shards),
    }


def bench_open(url, so, epoch, n_small):
    """Open + read the tail after many small commits: latency, and requests (GET, HEAD,
    LIST) at each of the next commits up to the chain bound, so every length is seen."""

    t = mcstore.create(url, dim=DIM, block=32, epoch=epoch, storage_options=so)
    g = make_gister()
    rng = np.random.default_rng(3)
    t.append(rng.integers(0, 49152, epoch * 2), gister=g, source="base")
    for _ in range(n_small):
        t.append(rng.integers(0, 49152, 64), gister=g, source="small")
    chain = len(t.snapshot.rec["chain"])
    times, first = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        r = mcstore.open(url, storage_options=so)
        t1 = time.perf_counter()
        r.tokens(r.length - 10, r.length)
        t2 = time.perf_counter()
        times.append(t1 - t0)
        first.append(t2 - t0)
    requests = []
    for _ in range(min(t.tail_chain, 8)):
        t.append(rng.integers(0, 49152, 64), gister=g, source="small")
        r = mcstore.open(url, storage_options=so)
        r.tokens(r.length - 10, r.length)
        st = r.io_stats
        requests.append(st["gets"] + st["heads"] + st["lists"])
    return {
        "commits": t.version,
        "tail_chain": chain,
        "open_ms": statistics.median(times) * 1e3,
        "open_and_read_tail_ms": statistics.median(first) * 1e3,
        "requests_open_and_tail": max(requests),
        "requests_by_chain_position": requests,
    }


def stored_bytes(t) -> int:
    return sum(size for _, size, _ in t.backend.walk(""))


def bench_retention(url, so, epoch, n_appends):
    """A chat-like tree (64-token appends): bytes on storage over raw bytes (tokens, gists,
    node metadata and segments at the head), before gc, after a default gc, and after
    gc(keep_last=1); every kept version is read back."""
    t = mcstore.create(url, dim=DIM, block=32, epoch=epoch, storage_options=so)
    g = make_gister()
    rng = np.random.default_rng(5)
    for _ in range(n_appends):
        t.append(rng.integers(0, 49152, 64), gister=g, source="chat:user")
    raw = raw_bytes(t, F.Extent(0, 0, 0, t.snapshot.gset), state(t))
    out = {"appends": n_appends, "raw_bytes": raw, "before_gc": stored_bytes(t) / raw}
    mcstore.gc(url, storage_options=so, grace=0, no_live_writers=True)
    out["after_gc"] = stored_bytes(t) / raw
    rep = mcstore.gc(url, storage_options=so, grace=0, no_live_writers=True, keep_last=1)
    out["after_gc_keep_last_1"] = stored_bytes(t) / raw
    out["expired_versions"] = len(rep.expired)
    mcstore.verify(url, storage_options=so)
    r = mcstore.open(url, storage_options=so)
    assert r.tokens().size == r.length
    return out


def run(quick: bool, epochs: list[int]):
    with moto_s3(own_process=False) as s3so:
        return _run(quick, epochs, s3so)


def _run(quick: bool, epochs: list[int], s3so: dict):
    tmp = tempfile.mkdtemp(prefix="mcbench-")
    out: dict = {"dim": DIM, "dtype": "float16", "block": 32, "quick": quick, "runs": []}
    large_n = 2 if quick else 4
    try:
        for epoch in epochs:
            for backend in ("local", "s3"):
                so = s3so if backend == "s3" else None

                def url(name, backend=backend, epoch=epoch):
                    if backend == "s3":
                        return f"s3://bench/{uuid.uuid4().hex[:8]}/{name}-{epoch}"
                    return f"{tmp}/{name}-{epoch}-{uuid.uuid4().hex[:6]}"

                run_ = {"epoch": epoch, "backend": backend}
                # enough 64-token appends to close shards: 1.5 (quick) or 3 epochs
                small_n = (epoch * 3 // 2 if quick else epoch * 3) // 64
                _, run_["small"] = bench_appends(url("small"), so, 64, small_n, epoch)
                lt, run_["large"] = bench_appends(url("large"), so, 65536, large_n, epoch)
                run_["read"] = bench_node_reads(lt.url, so)
                run_["open"] = bench_open(url("open"), so, epoch, min(epoch // 64 - 1, 127))
                n_ret = (epoch * 3 // 2 if quick else epoch * 3) // 64 + 37
                run_["retention"] = bench_retention(url("ret"), so, epoch, n_ret)
                out["runs"].append(run_)
                print(f"  done epoch={epoch} {backend}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for epoch in epochs:
        loc = next(r for r in out["runs"] if r["epoch"] == epoch and r["backend"] == "local")
        s3 = next(r for r in out["runs"] if r["epoch"] == epoch and r["backend"] == "s3")
        out.setdefault("ratios_s3_over_local", {})[str(epoch)] = {
            "large_tokens_per_s": s3["large"]["tokens_per_s"] / loc["large"]["tokens_per_s"],
            "small_tokens_per_s": s3["small"]["tokens_per_s"] / loc["small"]["tokens_per_s"],
        }
    return out


def table(res) -> str:
    rows = [
        ("small append tok/s", lambda r: f"{r['small']['tokens_per_s']:,.0f}"),
        ("small append gist rows/s", lambda r: f"{r['small']['gist_rows_per_s']:,.0f}"),
        ("small write amplification", lambda r: f"{r['small']['write_amplification']:.2f}x"),
        ("large append tok/s", lambda r: f"{r['large']['tokens_per_s']:,.0f}"),
        ("large append gist rows/s", lambda r: f"{r['large']['gist_rows_per_s']:,.0f}"),
        ("large write amplification", lambda r: f"{r['large']['write_amplification']:.3f}x"),
        (
            "commit record bytes (mean/max)",
            lambda r: (
                f"{r['small']['commit_record_bytes_mean']:.0f}/{r['small']['commit_record_bytes_max']}"
            ),
        ),
        (
            "node read cold ms (GETs)",
            lambda r: f"{r['read']['cold_ms']:.2f} ({r['read']['gets_cold']:g})",
        ),
        (
            "node read warm-index ms (GETs)",
            lambda r: f"{r['read']['warm_index_ms']:.2f} ({r['read']['gets_warm_index']:g})",
        ),
        (
            "node read cached ms (GETs)",
            lambda r: f"{r['read']['cached_ms']:.3f} ({r['read']['gets_cached']:g})",
        ),
        (
            "token block read ms (GETs)",
            lambda r: f"{r['read']['token_block_ms']:.2f} ({r['read']['token_block_gets']})",
        ),
        (
            "open ms (tail chain)",
            lambda r: f"{r['open']['open_ms']:.1f} ({r['open']['tail_chain']})",
        ),
        (
            "stored / raw bytes, chat tree",
            lambda r: f"{r['retention']['before_gc']:.2f}x",
        ),
        (
            "  after gc",
            lambda r: f"{r['retention']['after_gc']:.2f}x",
        ),
        (
            "  after gc --keep-last 1",
            lambda r: f"{r['retention']['after_gc_keep_last_1']:.2f}x",
        ),
        (
            "open + tail read ms (requests)",
            lambda r: (
                f"{r['open']['open_and_read_tail_ms']:.1f} ({r['open']['requests_open_and_tail']})"
            ),
        ),
    ]
    runs = res["runs"]
    heads = [f"{r['backend']} E={r['epoch']}" for r in runs]
    w0 = max(len(n) for n, _ in rows) + 2
    lines = ["".ljust(w0) + "".join(h.rjust(20) for h in heads)]
    for name, f in rows:
        lines.append(name.ljust(w0) + "".join(f(r).rjust(20) for r in runs))
    for e, rat in res.get("ratios_s3_over_local", {}).items():
        lines.append(
            f"S3/local throughput E={e}: large {rat['large_tokens_per_s']:.2f}, "
            f"small {rat['small_tokens_per_s']:.2f}"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer appends (a minute or so)")
    ap.add_argument(
        "--epochs",
        default=str(mcstore.entry.DEFAULT_EPOCH),
        help="comma-separated epoch sizes (tokens per shard) to compare",
    )
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args(argv)
    res = run(a.quick, [int(x) for x in a.epochs.split(",")])
    print(table(res))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    Path(a.out).with_suffix(".txt").write_text(table(res) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
