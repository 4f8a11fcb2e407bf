"""What a history costs to keep: bytes on storage vs the base model's full KV cache of the same
history, and the memory (RSS) of a fresh process that loads the model, opens the tree and chats.

Bytes come from the storage backend's own listing, so nothing the tree writes is missed. RSS is
measured in a child process (``python -m bench systems --rss-child``): this process holds every
history's session and model at once, so its RSS says nothing about one session's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from bench._common import ROOT
from bench.systems.plan import QUESTION
from bench.systems.probe import Probe
from bench.systems.trees import forced_ids, fork_tree, load_model, session_for

# -- storage -------------------------------------------------------------------------------------


# top-level folders of a tree (see mcstore's layout) -> what the report calls them
KINDS = {
    "log": "commit log",
    "tail": "tail deltas",
    "index": "retrieval index",  # committed objects: here only the index's stored chunks
    "meta": "binding + object maps",
    "refs": "refs",
    "telemetry": "telemetry",
}


def tree_bytes(url: str, storage_options=None) -> dict:
    """Bytes on storage, by kind of object, from the backend's own listing."""
    import mcstore

    t = mcstore.open(url, "r", storage_options=storage_options)
    groups: dict[str, int] = {}
    for rel, size, _ in t.backend.walk(""):
        parts = rel.replace("\\", "/").split("/")
        if parts[0] == "arrays" and len(parts) > 1:
            name = parts[1]
            kind = (
                "tokens"
                if name == "tokens"
                else "gists"
                if name.startswith("gist")
                else "segments"
                if name.startswith("seg")
                else "node metadata"
            )
        elif parts[0] in KINDS:
            kind = KINDS[parts[0]]
        else:
            kind = "other"
        groups[kind] = groups.get(kind, 0) + size
    total = sum(groups.values())
    return {"length": t.length, "total": total, "by_kind": groups}


def kv_bytes_per_token(base, bytes_per_elt: int) -> int:
    """Bytes of keys and values one token adds to the base model's KV cache."""
    cfg = base.model.config
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return int(cfg.num_hidden_layers) * 2 * int(kv) * int(hd) * bytes_per_elt


def storage_vs_kv(base, trees: dict[int, Path]) -> dict:
    """Bytes of every tree (by kind) next to the KV cache of the same history, fp16 and fp32."""
    kv16, kv32 = kv_bytes_per_token(base, 2), kv_bytes_per_token(base, 4)
    out: dict = {"kv_bytes_per_token": {"fp16/bf16": kv16, "fp32": kv32}, "bytes": {}}
    for n, path in trees.items():
        tb = tree_bytes(str(path))
        out["bytes"][str(n)] = {
            **tb,
            "bytes_per_million_tokens": tb["total"] / tb["length"] * 1e6,
            "bytes_per_token": tb["total"] / tb["length"],
            "kv_fp16_bytes": kv16 * tb["length"],
            "kv_over_tree_fp16": kv16 * tb["length"] / tb["total"],
            "kv_over_tree_fp32": kv32 * tb["length"] / tb["total"],
        }
    return out


# -- memory (child process) ----------------------------------------------------------------------


def proc_status() -> dict[str, float]:
    """VmRSS / VmHWM of this process in MiB (from /proc; ru_maxrss where /proc is missing)."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(val.split()[0]) / 1024
    except OSError:
        import resource

        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def rss_child(args: dict) -> dict:
    """In a fresh process: load the model, open (a fork of) the tree, chat; report RSS."""
    torch.set_num_threads(1)
    r0 = proc_status()
    base, g = load_model(args["model"])
    r1 = proc_status()
    rundir = Path(args["rundir"])
    tree, pin = fork_tree(Path(args["tree"]), rundir)
    s = session_for(tree, base, g, args["window"])
    r2 = proc_status()
    probe = Probe(s, forced_ids(base))
    during: list[float] = []
    for _ in s.chat_stream(QUESTION, max_new_tokens=args["tokens"]):
        during.append(proc_status().get("VmRSS", float("nan")))
    r3 = proc_status()
    pin.unlink(missing_ok=True)
    cache = s.tree.cache_stats()
    return {
        "store_cache_entries": cache.get("entries"),
        "store_cache_bytes": cache.get("bytes"),  # as the store's LRU accounts them
        "index_blocks": s.index.indexed() if s.index is not None else 0,
        "index_bytes": s.index.memory_bytes() if s.index is not None else 0,
        "rss_start_mib": r0.get("VmRSS"),
        "rss_model_mib": r1.get("VmRSS"),
        "rss_open_mib": r2.get("VmRSS"),
        "rss_chat_max_mib": max(during) if during else None,
        "rss_end_mib": r3.get("VmRSS"),
        "hwm_mib": r3.get("VmHWM"),
        "tokens": probe.k,
        "history": s.tree.length,
    }


def run_rss_child(model: str, tree: Path, rundir: Path, window: int, tokens: int) -> dict:
    """``rss_child`` in a fresh ``python -m bench systems --rss-child`` process."""
    args = {
        "model": model,
        "tree": str(tree),
        "rundir": str(rundir),
        "window": window,
        "tokens": tokens,
    }
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    p = subprocess.run(
        [sys.executable, "-m", "bench", "systems", "--rss-child", json.dumps(args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "failed"}
    return json.loads(p.stdout.strip().splitlines()[-1])


# -- standalone: storage by kind for one freshly built history ------------------------------------


def main(argv: list[str] | None = None) -> None:
    """``python -m bench footprint [--length N]``: build one SmolLM2 tree the way the
    systems benchmark does (retrieval index included) and report its bytes by kind, without the
    20 minutes of latency measurements around it."""
    import argparse
    import tempfile

    from bench._common import machine_info
    from bench.systems.plan import RESULTS
    from bench.systems.trees import build_tree, source_ids

    ap = argparse.ArgumentParser(prog="python -m bench footprint")
    ap.add_argument("--length", type=int, default=1 << 18)
    ap.add_argument("--out", default=str(RESULTS / "footprint.json"))
    args = ap.parse_args(argv)
    base, gistnet = load_model("smollm2")
    src, note = source_ids(base)
    with tempfile.TemporaryDirectory(prefix="mc-footprint-") as tmp:
        path, info = build_tree("smollm2", base, gistnet, args.length, src, note, Path(tmp))
        res = storage_vs_kv(base, {args.length: path})
    res.update(
        build=info,
        machine=machine_info(),
        command="python -m bench footprint " + " ".join(argv or sys.argv[1:]),
    )
    Path(args.out).write_text(json.dumps(res, indent=1))
    b = res["bytes"][str(args.length)]
    print(f"{b['length']:,} tokens: {b['total']:,} bytes, {b['bytes_per_token']:.1f} B/token")
    for kind, n in sorted(b["by_kind"].items(), key=lambda kv: -kv[1]):
        print(f"  {kind:>22}: {n:>12,}  {n / b['length'] * 1e6 / 2**20:6.2f} MiB per 1M tokens")
    print(f"KV cache fp16 / tree: {b['kv_over_tree_fp16']:.0f}x; wrote {args.out}")


if __name__ == "__main__":
    main()
