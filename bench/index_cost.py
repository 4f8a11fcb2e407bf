"""What the retrieval index costs: ingest rate beside plain ingest, bytes stored, open, search.

One history of held-out text (default model, tokens ids appended as large commits), built
side by side, twice each: without an index, with the BM25 index alone (``bm25``, the kind of
trees made before meaning keys) and with BM25 plus static meaning keys (``hybrid``, what a new
tree gets); then each tree is opened again (the stored chunks are read, nothing is recomputed)
and a set of questions is searched. Contextual dense keys (``mcruntime.dense``) are measured
apart on a slice of the same text: they cost a partial base-model forward per token.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._common import loadavg, machine_info

QUESTIONS = [
    "What is the default value of the timeout?", "Who maintains this package?",
    "Which licence covers the documentation?", "What does the flag --force do?",
    "When was version 2.1 released?", "What is the pass key?",
    "How many retries are allowed before the job fails?", "Where is the configuration file?",
]  # fmt: skip


def _tree_bytes(path: Path, prefix: str) -> int:
    import mcstore

    t = mcstore.open(str(path))
    return sum(len(t.read_object(n)) for n in t.objects() if n.startswith(prefix))


def run(
    n_tokens: int,
    *,
    dense_tokens: int = 4096,
    commit_tokens: int = 32768,
    base=None,
    texts: list[str] | None = None,
    workdir: str | None = None,
) -> dict:
    import mcmodels
    from bench.harness import haystack_texts

    gistnet = None
    from bench.tasks import Haystack
    from mcruntime import Session, SessionConfig
    from mcruntime.dense import DenseSpec, block_keys

    base = base or mcmodels.load_base()
    manifest = None
    if texts is None:
        texts, manifest = haystack_texts(split="test")
    hay = Haystack(texts, base.tokenizer.encode)
    rng = np.random.default_rng(0)
    ids: list[int] = []
    for k in rng.permutation(len(hay.paragraphs)).tolist() * 50:
        ids += hay.encode(hay.paragraphs[k] + "\n\n")
        if len(ids) >= n_tokens:
            break
    ids = ids[:n_tokens]
    work = Path(workdir or tempfile.mkdtemp(prefix="mc-index-cost-"))
    out: dict = {
        "tokens": len(ids),
        "model": base.name,
        "machine": machine_info(),
        "corpus_manifest": manifest,
    }
    from mcruntime.static_keys import StaticSpec

    StaticSpec().keys(base, np.asarray(ids[:64]))  # the table: built or read once, not timed
    times: dict[str, list[float]] = {"none": [], "bm25": [], "hybrid": []}
    for kind in ("none", "bm25", "hybrid") * 2:  # interleaved: the machine is shared
        path = work / f"{kind}.mc"
        shutil.rmtree(path, ignore_errors=True)
        cfg = SessionConfig(retrieval=None if kind == "none" else kind)
        t0 = time.perf_counter()
        with Session(str(path), model=base, gistnet=gistnet, config=cfg) as s:
            for a in range(0, len(ids), commit_tokens):
                s.append_ids(ids[a : a + commit_tokens], source="haystack")
        times[kind].append(time.perf_counter() - t0)
    out["ingest_tokens_per_s"] = {k: len(ids) / min(v) for k, v in times.items()}
    out["ingest_ratio_bm25_vs_none"] = min(times["none"]) / min(times["bm25"])
    out["ingest_ratio_hybrid_vs_none"] = min(times["none"]) / min(times["hybrid"])
    for kind in ("bm25", "hybrid"):
        import mcstore
        from mcruntime.indexing import NodeIndex

        path = work / f"{kind}.mc"
        opens, searches = [], []
        for _ in range(3):
            t = mcstore.open(str(path))
            t0 = time.perf_counter()
            idx = NodeIndex(t, base, kind=kind, min_coverage=SessionConfig().hit_coverage)
            opens.append(time.perf_counter() - t0)
            for q in QUESTIONS:
                qi = base.tokenizer.encode(q)
                t0 = time.perf_counter()
                idx.search(qi, None, 8)
                searches.append(time.perf_counter() - t0)
        stored = idx.stored["bm25"] * t.block  # complete epochs only
        out[kind] = {
            "bytes_per_token": _tree_bytes(path, "retrieval/") / max(1, stored),
            "open_s": float(np.median(opens)),
            "search_ms_median": 1e3 * float(np.median(searches)),
            "search_ms_p90": 1e3 * float(np.quantile(searches, 0.9)),
            "memory_bytes": idx.memory_bytes(),
            "tokens_stored": stored,
        }
    spec = DenseSpec()
    block_keys(base, np.asarray(ids[:1024]), spec)  # warm-up (centring statistics)
    t0 = time.perf_counter()
    keys = block_keys(base, np.asarray(ids[:dense_tokens]), spec)
    dt = time.perf_counter() - t0
    out["dense"] = {
        "id": spec.id(base),
        "tokens": dense_tokens,
        "tokens_per_s": dense_tokens / dt,
        "bytes_per_token_fp16": keys.shape[1] * 2 / 32,
    }
    out["loadavg_end"] = loadavg()
    shutil.rmtree(work, ignore_errors=True)
    return out


def table(r: dict) -> str:
    i = r["ingest_tokens_per_s"]
    b, h = r["bm25"], r["hybrid"]
    return "\n".join([
        f"Retrieval index cost, {r['tokens']:,} tokens of held-out text, {r.get('model')}, "
        "2 CPU cores, built side by side (best of 2 each)",
        "",
        "| what | bm25 | hybrid (bm25 + static meaning keys) |",
        "|---|---|---|",
        f"| ingest (no index: {i['none']:,.0f} tokens/s) | {i['bm25']:,.0f} tokens/s "
        f"({r['ingest_ratio_bm25_vs_none']:.2f}x) | {i['hybrid']:,.0f} tokens/s "
        f"({r['ingest_ratio_hybrid_vs_none']:.2f}x) |",
        f"| index stored | {b['bytes_per_token']:.2f} bytes/token | "
        f"{h['bytes_per_token']:.2f} bytes/token |",
        f"| open (read every stored chunk) | {b['open_s']:.2f} s | {h['open_s']:.2f} s |",
        f"| search (median / p90) | {b['search_ms_median']:.1f} / {b['search_ms_p90']:.1f} ms "
        f"| {h['search_ms_median']:.1f} / {h['search_ms_p90']:.1f} ms |",
        f"| index in memory | {b['memory_bytes'] / 2**20:.1f} MiB | "
        f"{h['memory_bytes'] / 2**20:.1f} MiB |",
        "",
        f"Contextual dense keys (`mcruntime.dense`, not the default): "
        f"{r['dense']['tokens_per_s']:,.0f} tokens/s of extra ingest, "
        f"{r['dense']['bytes_per_token_fp16']:.1f} bytes/token.",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench index", description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=1 << 20)
    ap.add_argument("--out", default="bench/results/index_cost.json")
    args = ap.parse_args(argv)
    r = run(args.tokens)
    Path(args.out).write_text(json.dumps(r, indent=1))
    Path(args.out).with_suffix(".md").write_text(table(r) + "\n")
    print(table(r))


if __name__ == "__main__":
    main()
