"""Probe: training-free dense block keys (mcruntime/dense.py) on paraphrase questions.

``python -m bench.dense_probe`` (about 3.5 minutes on 2 quiet CPU cores) measures

1. ingest cost: tokens/s of ``block_keys`` for the default model and spec, and bytes per token of
   the keys stored at fp16;
2. retrieval: facts planted at random paragraph boundaries of ~16k tokens of dev-split held-out
   text, asked with paraphrased questions. ``entity`` facts share exactly one content word with
   their question (an invented name such as "frobnicator"); ``paraphrase`` facts share none. The
   rank of the block holding the fact (the best of the blocks the fact's tokens overlap) is
   reported as MRR and recall@1/5/10 for the dense keys of several layers, a plain BM25 over the
   words of each block (local to this probe), and reciprocal-rank fusion of the two (top 100 of
   each, k=60), plus ablations: the query wrapping, the centring mean, the pooling.

Writes bench/results/dense_probe.json and dense_probe.md. Dev text only: the default layer and
query form are picked here, so the test split stays unseen.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"

# (fact, question). ``entity``: the question shares only the invented key word with the fact.
ENTITY_FACTS = [
    ("The maintainer of the frobnicator service is Alice Moreau.", "Who looks after frobnicator?"),
    ("The vantrous library requires at least eight gigabytes of memory.", "How much RAM does vantrous need?"),
    ("Klemptor's configuration file is kept in a hidden folder under the home directory.", "Where are klemptor settings stored?"),
    ("The quellmark daemon was originally developed at a university in Oslo.", "Which city did quellmark come from?"),
    ("A yearly licence for ostrelin costs forty dollars.", "What is the annual price of ostrelin?"),
    ("The dravonel scheduler crashes whenever the disk is full.", "What causes dravonel to break down?"),
    ("Traffic to the melquist server is encrypted with a rotating key.", "Is communication with melquist secured?"),
    ("The yestral project moved its source code to a mirror in Finland.", "In which country is yestral's repository hosted now?"),
    ("The tellurin parser is three times faster than its predecessor.", "How quick is tellurin compared with the older version?"),
    ("The brovatic compiler was named after the founder's grandmother.", "Where does the brovatic title come from?"),
    ("Nightly backups of the zintaro cluster are written to tape in the basement.", "Where does zintaro keep copies of its data?"),
    ("Only administrators may delete records in the pelvaris registry.", "Who is allowed to remove entries from pelvaris?"),
]  # fmt: skip

# ``paraphrase``: no content word in common at all (BM25 can only match by accident).
PARAPHRASE_FACTS = [
    ("Our head chef, Marta Ilves, bakes rye bread every Tuesday.", "Which cook makes loaves once a week?"),
    ("The lighthouse keeper rowed out to rescue two stranded fishermen.", "Who saved the trapped sailors?"),
    ("Grandfather planted an orchard of apple trees behind the barn in 1952.", "When did the old man start growing fruit near the stable?"),
    ("The violinist broke a string halfway through the concerto but kept playing.", "What happened to the musician during the performance?"),
    ("A swarm of bees settled in the chimney of the school last spring.", "Where did the insects make their nest?"),
    ("The mayor resigned after the bridge collapsed during the flood.", "Why did the town's leader quit?"),
    ("My sister adopted a three-legged dog from the shelter.", "Which pet did my sibling take home?"),
    ("The surgeon operated for eleven hours to repair the patient's heart.", "How long did the doctor spend fixing the cardiac problem?"),
    ("Heavy snow closed the mountain pass, so the hikers spent the night in a hut.", "Where did walkers sleep when a winter storm blocked their route?"),
    ("The baker's daughter won the national chess championship at fourteen.", "Which girl became her country's best player of that board game?"),
]  # fmt: skip

STOP = set(
    """a an the of to in on at for by with from and or but is are was were be been being it its
    this that these those who whom whose which what when where why how do does did done has have
    had will would can could may might shall should must not no yes as if then than so such into
    out up down over under again there here their they them he she his her him we our us you your
    i me my one s t""".split()
)


def words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOP]


class BM25:
    """Okapi BM25 over the words of each block (for this comparison only)."""

    def __init__(self, docs: list[str], k1: float = 1.2, b: float = 0.75):
        self.tf = [Counter(words(d)) for d in docs]
        self.len = np.array([sum(c.values()) for c in self.tf], dtype=np.float64)
        self.avg = float(self.len.mean()) or 1.0
        df = Counter(w for c in self.tf for w in c)
        n = len(docs)
        self.idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in df.items()}
        self.k1, self.b = k1, b

    def scores(self, query: str) -> np.ndarray:
        s = np.zeros(len(self.tf))
        norm = self.k1 * (1 - self.b + self.b * self.len / self.avg)
        for w in set(words(query)):
            if w not in self.idf:
                continue
            tf = np.array([c.get(w, 0) for c in self.tf], dtype=np.float64)
            s += self.idf[w] * tf * (self.k1 + 1) / (tf + norm)
        return s


def rank_of(scores: np.ndarray, targets: list[int]) -> float:
    """The best rank (1-based) of any target; ties count half (a block tied with the target
    is as likely above it as below)."""
    best = math.inf
    for t in targets:
        greater = int((scores > scores[t]).sum())
        ties = int((scores == scores[t]).sum()) - 1
        best = min(best, 1 + greater + ties / 2)
    return best


def rrf(*score_lists: np.ndarray, k: int = 60, top: int = 100) -> np.ndarray:
    """Reciprocal-rank fusion of the top ``top`` of each list (zero scores are not hits)."""
    out = np.zeros(len(score_lists[0]))
    for s in score_lists:
        order = np.argsort(-s, kind="stable")[:top]
        for r, i in enumerate(order):
            if s[i] > 0 or s.min() < 0:  # BM25 misses (0) are not ranked
                out[i] += 1.0 / (k + r + 1)
    return out


def metrics(ranks: list[float]) -> dict:
    r = np.array(ranks, dtype=np.float64)
    return {
        "n": len(r),
        "mrr": round(float((1 / r).mean()), 3),
        "r@1": round(float((r <= 1).mean()), 3),
        "r@5": round(float((r <= 5).mean()), 3),
        "r@10": round(float((r <= 10).mean()), 3),
        "median_rank": float(np.median(r)),
    }


# -- the haystack ----------------------------------------------------------------------------------


def paragraphs(texts: list[str]) -> list[str]:
    out = []
    for t in texts:
        for p in re.split(r"\n\s*\n", t):
            p = p.strip()
            if 40 <= len(p) <= 1500:
                out.append(p)
    return out


def build_haystack(base, paras: list[str], facts: list[str], n_tokens: int, seed: int):
    """Token ids of shuffled dev paragraphs with ``facts`` at random boundaries, and each fact's
    token span. Pieces are tokenised separately, so spans are exact."""
    rng = random.Random(seed)
    enc = base.tokenizer.encode
    order = list(range(len(paras)))
    rng.shuffle(order)
    chosen, total = [], 0
    for k in order:
        ids = enc(paras[k] + "\n\n")
        chosen.append(ids)
        total += len(ids)
        if total >= n_tokens:
            break
    slots = sorted(rng.sample(range(1, len(chosen)), len(facts)))
    fact_at = dict(zip(slots, rng.sample(range(len(facts)), len(facts)), strict=True))
    ids, spans = [], [None] * len(facts)
    for i, piece in enumerate(chosen):
        if i in fact_at:
            f = fact_at[i]
            fid = enc(facts[f] + "\n\n")
            spans[f] = (len(ids), len(ids) + len(fid) - 1)  # without the trailing newlines
            ids.extend(fid)
        ids.extend(piece)
    return np.array(ids, dtype=np.int64), spans


def blocks_of(span: tuple[int, int], block: int = 32) -> list[int]:
    a, b = span
    return list(range(a // block, (b - 1) // block + 1))


# -- the probe -------------------------------------------------------------------------------------


def ingest_cost(base, spec, n_tokens: int, threads: int, reps: int = 2) -> dict:
    """tokens/s of ``block_keys`` (best of ``reps``: the machine is shared, so the best run is
    the least disturbed) and the fp16 bytes per token of its keys."""
    import torch

    from bench._common import loadavg
    from mcruntime import dense

    torch.set_num_threads(threads)
    ids = np.random.default_rng(0).integers(1000, base.vocab_size - 1000, n_tokens)
    t = time.perf_counter()
    dense.block_keys(base, ids[:64], spec)  # warm up; computes and caches the centring stats
    first = time.perf_counter() - t
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        keys = dense.block_keys(base, ids, spec)
        times.append(time.perf_counter() - t)
    return {
        "spec": spec.id(base),
        "tokens": n_tokens,
        "threads": threads,
        "seconds": [round(x, 2) for x in times],
        "tokens_per_s": round(n_tokens / min(times), 1),
        "tokens_per_s_median": round(n_tokens / float(np.median(times)), 1),
        "first_call_s": round(first, 2),
        "loadavg": loadavg(),
        "bytes_per_token_fp16": keys.shape[1] * 2 / 32,
        "d": int(keys.shape[1]),
    }


def static_ingest_cost(base, spec, n_tokens: int) -> dict:
    """tokens/s of static keys (the table built or read before timing), best of 3."""
    ids = np.random.default_rng(0).integers(1000, base.vocab_size - 1000, n_tokens)
    t = time.perf_counter()
    spec.keys(base, ids[:64])
    first = time.perf_counter() - t
    times = []
    for _ in range(3):
        t = time.perf_counter()
        spec.keys(base, ids)
        times.append(time.perf_counter() - t)
    return {"spec": spec.id(base), "tokens": n_tokens, "tokens_per_s": round(n_tokens / min(times)),
            "table_first_call_s": round(first, 2)}  # fmt: skip


def interleave_rank(lexical: np.ndarray, dense: np.ndarray, targets: list[int]) -> float:
    """Rank of the first target when the two score lists are merged best of each in turn
    (``mcruntime.retrieval.interleave``)."""
    from mcruntime.retrieval import interleave

    top = lambda sc: [(int(i), float(sc[i])) for i in np.argsort(-sc, kind="stable")[:100]]  # noqa: E731
    order = [i for i, _, _ in interleave(top(lexical), top(dense))]
    return float(next((r + 1 for r, i in enumerate(order) if i in targets), len(lexical)))


def chunk_agreement(base, spec, ids: np.ndarray, chunk: int) -> dict:
    """Keys ingested in chunks of ``chunk`` tokens (each with the previous tokens as
    start_context) against keys of one call: min and mean cosine per block."""
    from mcruntime import dense

    whole = dense.block_keys(base, ids, spec)
    parts = [
        dense.block_keys(base, ids[s : s + chunk], spec, start_context=ids[max(0, s - 512) : s])
        for s in range(0, len(ids), chunk)
    ]
    cos = (whole * np.concatenate(parts)).sum(1)
    return {
        "chunk": chunk,
        "min_cos": round(float(cos.min()), 4),
        "mean_cos": round(float(cos.mean()), 4),
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="base model (default: mcmodels.DEFAULT_MODEL)")
    ap.add_argument("--tokens", type=int, default=16384, help="haystack tokens per seed")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", default="", help="comma list; default n//3, n//2, 2n//3")
    ap.add_argument("--out", default=str(RESULTS / "dense_probe"))
    args = ap.parse_args(argv)

    import torch

    import mcmodels
    from bench._common import loadavg, machine_info
    from bench.harness import haystack_texts
    from mcruntime import dense

    torch.set_num_threads(args.threads)
    t0 = time.time()
    base = mcmodels.load_base(args.model or mcmodels.DEFAULT_MODEL)
    n = base.n_layers
    layers = (
        [int(x) for x in args.layers.split(",")]
        if args.layers
        else sorted({n // 3, n // 2, 2 * n // 3})
    )
    default = dense.DenseSpec()
    cost = ingest_cost(base, default, 4096, args.threads)
    print("ingest", cost, flush=True)

    texts, manifest = haystack_texts(split="dev")
    paras = paragraphs(texts)
    facts = [("entity", f, q) for f, q in ENTITY_FACTS] + [
        ("paraphrase", f, q) for f, q in PARAPHRASE_FACTS
    ]
    form0 = dense.DEFAULT_QUERY_FORM
    # name -> (layer, pool, query form, query context, centring)
    variants = {f"L{L}": (L, "mean", form0, True, "neutral") for L in layers}
    for L in layers:
        for form in dense.QUERY_FORMS:
            if form != form0:
                variants[f"L{L}/query={form}"] = (L, "mean", form, True, "neutral")
        variants[f"L{L}/query without context"] = (L, "mean", form0, False, "neutral")
        variants[f"L{L}/centre=mean only"] = (L, "mean", form0, True, "neutral-mean")
        variants[f"L{L}/centre=haystack stats"] = (L, "mean", form0, True, "haystack")
        variants[f"L{L}/centre=none"] = (L, "mean", form0, True, "none")
        variants[f"L{L}/pool=rms"] = (L, "rms", form0, True, "neutral")
    from mcruntime.static_keys import StaticSpec

    sdefault = StaticSpec()
    statics = {
        f"static L{L}" + ("" if a == sdefault.a else f"/a={a:g}"): StaticSpec(layer=L, a=a)
        for L in (6, 8, 10, 12)
        for a in (sdefault.a, 1e-5)
        if n > L
    }
    static_cost = static_ingest_cost(base, sdefault, 1 << 18)
    fact_cos: list[float] = []  # default static keys: the fact's block, per question
    other_cos: list[float] = []  # and the best block the fact is not in
    print("static ingest", static_cost, flush=True)
    ranks: dict[str, dict[str, list[float]]] = {}  # method -> kind -> ranks
    among: dict[str, list[float]] = {}  # method -> ranks among the fact blocks only
    rows = []
    agreement = None
    qraw = {}  # (question, pool, form, context) -> {layer: raw pooled state}
    for _, _, q in facts:
        qids = base.tokenizer.encode(q)
        for pool, form, ctx in {(p, f, c) for _, p, f, c, _ in variants.values()}:
            spec = dense.DenseSpec(pool=pool)
            qraw[q, pool, form, ctx] = dense.pooled_query(
                base, qids, spec, form=form, context=ctx, layers=layers
            )
    for seed in range(args.seeds):
        ids, spans = build_haystack(base, paras, [f for _, f, _ in facts], args.tokens, seed)
        nb = len(ids) // 32
        ids = ids[: nb * 32]
        docs = [base.tokenizer.decode(ids[i * 32 : (i + 1) * 32].tolist()) for i in range(nb)]
        bm = BM25(docs)
        t = time.time()
        raw = dense.pooled_layers(base, ids, default, 32, None, layers, dense.POOLS, 4)
        print(
            f"seed {seed}: {len(ids)} tokens, {nb} blocks, dense pass {time.time() - t:.0f}s",
            flush=True,
        )
        targets = [blocks_of(sp) for sp in spans]
        bm25 = {q: bm.scores(q) for _, _, q in facts}
        for (kind, _f, q), tg in zip(facts, targets, strict=True):
            ranks.setdefault("bm25", {}).setdefault(kind, []).append(rank_of(bm25[q], tg))
        for name, (L, pool, form, ctx, centring) in variants.items():
            spec = dense.DenseSpec(layer=L, pool=pool)
            kb = raw[L, pool]
            if centring == "neutral":
                mean, scale = dense.neutral_stats(base, spec)
            elif centring == "neutral-mean":
                mean, scale = dense.neutral_stats(base, spec)[0], None
            elif centring == "haystack":
                mean, scale = dense.block_stats(kb)
            else:
                mean, scale = np.zeros(kb.shape[1], np.float32), None
            keys = dense.centre(kb, mean, scale)
            for i, ((kind, _f, q), tg) in enumerate(zip(facts, targets, strict=True)):
                sd = keys @ dense.centre(qraw[q, pool, form, ctx][L], mean, scale)
                r = rank_of(sd, tg)
                ranks.setdefault(name, {}).setdefault(kind, []).append(r)
                per_fact = np.array([sd[b].max() for b in targets])
                among.setdefault(name, []).append(rank_of(per_fact, [i]))
                if "/" in name:
                    continue
                fused = rank_of(rrf(sd, bm25[q]), tg)  # main rows: RRF beside each layer
                ranks.setdefault(f"rrf(L{L}+bm25)", {}).setdefault(kind, []).append(fused)
                rows.append(
                    {"seed": seed, "kind": kind, "question": q, "layer": L, "blocks": tg,
                     "dense_rank": r, "bm25_rank": rank_of(bm25[q], tg), "rrf_rank": fused}
                )  # fmt: skip
        for name, sspec in statics.items():  # static meaning keys (mcruntime.static_keys)
            keys = sspec.keys(base, ids)
            for i, ((kind, _f, q), tg) in enumerate(zip(facts, targets, strict=True)):
                sd = keys @ sspec.query(base, base.tokenizer.encode(q))
                ranks.setdefault(name, {}).setdefault(kind, []).append(rank_of(sd, tg))
                among.setdefault(name, []).append(
                    rank_of(np.array([sd[b].max() for b in targets]), [i])
                )
                if name != f"static L{sdefault.resolved_layer(base)}":
                    continue
                # how close the fact's block is, against the closest unrelated block: whether a
                # similarity floor could tell "not in memory" (``indexing.MIN_SIMILARITY``)
                fact_cos.append(float(max(sd[b] for b in tg)))
                others = np.delete(sd, [b for b in tg if b < len(sd)])
                other_cos.append(float(others.max()))
                fused = rank_of(rrf(sd, bm25[q]), tg)
                ranks.setdefault(f"rrf({name}+bm25)", {}).setdefault(kind, []).append(fused)
                woven = interleave_rank(bm25[q], sd, tg)
                ranks.setdefault(f"interleave({name}+bm25)", {}).setdefault(kind, []).append(woven)
        if seed == 0:
            agreement = chunk_agreement(base, default, ids[:4096], 992)
            print("chunked ingest vs one call", agreement, flush=True)

    table = {}
    for m, by in ranks.items():
        table[m] = {k: metrics(v) for k, v in sorted(by.items())}
        table[m]["all"] = metrics([x for v in by.values() for x in v])
        if m in among:
            table[m]["all"]["mrr_among_facts"] = metrics(among[m])["mrr"]
    result = {
        "probe": "dense_probe",
        "machine": machine_info(),
        "loadavg_end": loadavg(),
        "model": base.name,
        "n_layers": n,
        "layers": layers,
        "default_spec": default.id(base),
        "default_query_form": form0,
        "ingest": cost,
        "static_ingest": static_cost,
        "static_similarity": {
            "fact_block_p5_p25_p50": [
                round(float(x), 3) for x in np.percentile(fact_cos, [5, 25, 50])
            ],
            "best_other_block_p50_p90": [
                round(float(x), 3) for x in np.percentile(other_cos, [50, 90])
            ],
        },
        "chunked_ingest": agreement,
        "haystack": {
            "split": "dev",
            "manifest_hash": manifest,
            "tokens_per_seed": args.tokens,
            "seeds": args.seeds,
            "facts": len(facts),
        },
        "facts": [{"kind": k, "fact": f, "question": q} for k, f, q in facts],
        "metrics": table,
        "rows": rows,
        "wall_s": round(time.time() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(render(result))
    print(render(result))
    return result


def render(r: dict) -> str:
    c = r["ingest"]
    lines = [
        f"# Dense block keys probe ({r['model']})",
        "",
        "Training-free dense keys (`mcruntime/dense.py`): mean-pooled hidden states of one decoder",
        "layer over each 32-token block (after 128 tokens of left context), standardised by fixed",
        "statistics of a built-in neutral text, unit norm; the question is pooled the same way after",
        "the neutral text's last 128 tokens. Generated by `python -m bench.dense_probe` "
        f"({r['wall_s']} s); full record in `dense_probe.json`.",
        "",
        f"* Ingest (`{c['spec']}`): **{c['tokens_per_s']} tokens/s** on {c['threads']} CPU threads "
        f"(best of {len(c['seconds'])} runs of {c['tokens']} tokens: {c['seconds']} s; load "
        f"average {c['loadavg']} on a shared machine). First call adds {c['first_call_s']} s "
        f"(the centring statistics). Keys at fp16: **{c['bytes_per_token_fp16']} bytes/token** "
        f"(d = {c['d']} per 32 tokens).",
    ]
    if r.get("chunked_ingest"):
        a = r["chunked_ingest"]
        lines.append(
            f"* Ingesting in chunks of {a['chunk']} tokens (start_context = the previous tokens) vs "
            f"one call: block cosine min {a['min_cos']}, mean {a['mean_cos']} (window starts move, "
            "so some blocks see a different amount of left context; identical when chunks are "
            "multiples of the 512-token window)."
        )
    if r.get("static_ingest"):
        st = r["static_ingest"]
        lines.append(
            f"* Static meaning keys (`mcruntime/static_keys.py`, `{st['spec']}`, rows `static L*`): "
            f"one vector per vocabulary entry from layer L, read alone; a block's key is their "
            f"weighted mean. Keys: **{st['tokens_per_s']:,} tokens/s** (best of 3 over "
            f"{st['tokens']:,} tokens); the table takes {st['table_first_call_s']} s the first "
            "time on a machine (then read from `$MC_CACHE/keys`). *interleave*: BM25's and the "
            "keys' lists merged best of each in turn, as the runtime does."
        )
    if r.get("static_similarity"):
        sim = r["static_similarity"]
        lines.append(
            f"* Static keys' cosine to the question: the fact's block at the 5th/25th/50th "
            f"percentile {sim['fact_block_p5_p25_p50']}; the best block the fact is not in, "
            f"median and 90th percentile {sim['best_other_block_p50_p90']}. A floor cannot "
            'tell "not in memory" apart (`mcruntime.indexing.MIN_SIMILARITY`).'
        )
    h = r["haystack"]
    lines += [
        f"* Retrieval: {h['facts']} facts planted at random paragraph boundaries of "
        f"{h['tokens_per_seed']} tokens of dev-split text (~{h['tokens_per_seed'] // 32} blocks), "
        f"{h['seeds']} seeds ({h['seeds'] * h['facts']} questions). *entity*: the question shares "
        "only an invented key word with the fact (`Who looks after frobnicator?`); *paraphrase*: "
        "no content word in common. Rank = best rank of a block the fact overlaps (ties count "
        "half). RRF: top 100 of each list, k = 60. *among facts*: MRR when only the planted facts "
        "compete (does the key tell facts apart, beyond finding prose in code and docs?).",
        "",
        "| method | kind | MRR | R@1 | R@5 | R@10 | median rank | MRR among facts |",
        "|---|---|---|---|---|---|---|---|",
    ]
    main = [m for m in r["metrics"] if "/" not in m]
    abl = [m for m in r["metrics"] if "/" in m]
    for m in main:
        for kind, v in r["metrics"][m].items():
            lines.append(
                f"| {m} | {kind} | {v['mrr']} | {v['r@1']} | {v['r@5']} | {v['r@10']} "
                f"| {v['median_rank']} | {v.get('mrr_among_facts', '')} |"
            )
    lines += [
        "",
        "Ablations (all questions; the default is the `L<n>` row above): query wrapping, the query "
        "read without left context, centring by the neutral mean only / by the haystack's own "
        "statistics / not at all, and RMS-normalising each token before pooling.",
        "",
        "| variant | MRR | R@1 | R@5 | R@10 | median rank | MRR among facts |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in abl:
        v = r["metrics"][m]["all"]
        lines.append(
            f"| {m} | {v['mrr']} | {v['r@1']} | {v['r@5']} | {v['r@10']} | {v['median_rank']} "
            f"| {v.get('mrr_among_facts', '')} |"
        )
    met = r["metrics"]
    dense_rows = {m: met[m]["all"]["mrr"] for m in met if m.startswith("L") and "/" not in m}
    best = max(dense_rows, key=dense_rows.get)
    default_layer = r["default_spec"].split("-L")[1].split("-")[0]
    lines += [
        "",
        "Reading:",
        "",
        f"* Best layer by dense MRR (all questions): {best} ({dense_rows[best]}); the default "
        f"spec uses L{default_layer} (`n_layers // 2`).",
        "* BM25 wins when the question names the fact's key word and is blind to paraphrases; "
        "dense keys find both, but less sharply when a key word is shared. Plain RRF lifts the "
        "entity questions above either alone, yet halves the dense MRR on paraphrase questions: "
        "BM25's chance matches on common words rank unrelated blocks high, so a caller may want "
        "to give BM25 less weight when no rare query word matches.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
