"""How fast an answer comes, against llama.cpp on the same GGUF and thread count, in one run.

Engines, side by side (interleaved per repetition, so load from neighbours hits all alike):

* ``llama.cpp``: the ``xllamacpp`` server on the GGUF alone: prefill of 1,024 tokens of
  held-out text, then greedy decoding (its own timings);
* ``mc keeper``: a MegaContext session over a tree of ``tree_tokens`` (the tree's own model
  reading its token/gist window in torch, fp16 projections: ``mcmodels.halfweights``): time
  to the first token of an answer, decode ms/token; ``mc keeper fp32``: the same in fp32,
  with how often the two write the same text;
* ``mc text reader``: the same session answering through a text reader (llama.cpp on the
  same GGUF, or the 1.5B reader where installed): recall + tail + question as text.

Ratios are what the issue's targets name: decode ms/token of an answer over llama.cpp's, and
time to an answer's first token over llama.cpp's time to prefill 1,024 tokens.

``mc keeper recompute`` is the keeper with ``shift_cache=False``: a refocus recomputes every
position after its first edit (and nothing is copied: copies need moved keys). ``mc keeper no
copy`` moves but computes a recalled passage again where the window already holds it
(``copy_cache=False``). The refocus section times the model step after one refocus step (a
query from a random place of the tree) in two keeper sessions that make the same edits, one
moving the unchanged positions (``shift_cache``, the default) and one recomputing them.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from bench._common import loadavg, machine_info


@dataclass
class SpeedConfig:
    tree_tokens: int = 73728
    threads: int = 1
    reps: int = 3
    decode_tokens: int = 48
    refocus_steps: int = 12  # refocus steps timed with and without moved positions
    prefill_tokens: int = 1024
    agreement_prompts: int = 12  # held-out passages continued by both fp16 and fp32
    agreement_tokens: int = 32
    readers: tuple[str, ...] = ("smollm2-135m-instruct", "qwen2.5-coder-1.5b-instruct")
    split: str = "test"
    out: str = "bench/results/speed.json"
    workdir: str = "bench/results/tmp/speed"


def _llama_raw(server, text: str, n_decode: int) -> dict:
    """llama.cpp's own prefill and decode timings for one completion (prompt cache off)."""
    got: dict = {}

    def on(chunk):
        if isinstance(chunk, str):
            chunk = json.loads(chunk)
        if chunk.get("timings"):
            got.update(chunk["timings"])

    server.handle_completions(
        {
            "prompt": text,
            "n_predict": n_decode,
            "temperature": 0.0,
            "stream": True,
            "cache_prompt": False,
            "ignore_eos": True,
        },
        on,
    )
    return {
        "prefill_s": got["prompt_ms"] / 1000,
        "prompt_n": got["prompt_n"],
        "decode_ms": got["predicted_per_token_ms"],
    }


def run(cfg: SpeedConfig, progress=print) -> dict:
    import numpy as np
    import xllamacpp

    import mcmodels
    from bench import needles as N
    from bench.harness import haystack_texts
    from bench.memory import build_tree
    from bench.tasks import Haystack
    from mcmodels import readers as R
    from mcruntime import Session, SessionConfig

    base = mcmodels.load_base(mcmodels.DEFAULT_MODEL)
    gguf = R.locate(R.SMOLLM2_TEXT)
    texts, _ = haystack_texts(split=cfg.split)
    hay = Haystack(texts, base.tokenizer.encode)
    work = Path(cfg.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tree = work / f"speed-{cfg.tree_tokens}.mc"
    inst = N.documents(hay, cfg.tree_tokens, 11)
    if not tree.exists():
        build_tree(tree, base, mcmodels.default_gistnet(base), inst)
    # 1,024 tokens of the same kind of text for llama.cpp's prefill
    ids = np.asarray(inst.ids[: cfg.prefill_tokens * 2])
    prefill_text = base.tokenizer.decode(ids[: cfg.prefill_tokens].tolist(), skip_special=True)

    import torch

    torch.set_num_threads(cfg.threads)
    p = xllamacpp.CommonParams()
    p.model.path = str(gguf)
    p.n_ctx = 4096
    p.cpuparams.n_threads = cfg.threads
    p.cpuparams_batch.n_threads = cfg.threads
    p.warmup = False
    p.verbosity = -1
    raw = xllamacpp.Server(p)
    engines = list(KEEPERS)
    engines += [name for name in cfg.readers if R.reader_available(name)]
    agreement = _greedy_agreement(base, inst.ids, cfg)
    progress(f"fp16 vs fp32 greedy continuations: {agreement}")
    questions = [pr.question for pr in inst.probes]
    rows: list[dict] = []
    for rep in range(cfg.reps):
        r = _llama_raw(raw, prefill_text, cfg.decode_tokens)
        rows.append({"engine": "llama.cpp", "rep": rep, **r})
        progress(f"rep {rep} llama.cpp: prefill {r['prefill_s']:.2f}s decode {r['decode_ms']:.1f}")
        for name in engines:
            # a text reader loaded afresh each repetition: llama.cpp's prompt cache would
            # otherwise answer a question a previous repetition asked without computing it
            reader = None if name.startswith("keeper") else mcmodels.load_reader(
                name, threads=cfg.threads
            )  # fmt: skip
            sc = SessionConfig(**KEEPERS.get(name, {}))
            with Session(
                str(tree), model=base, mode="r", reader=reader or "keeper", config=sc
            ) as s:
                # the session's first question also fills the window's cache (cold); the
                # second costs its recall and question only (warm: what a conversation pays)
                first = s.ask(questions[(2 * rep + 1) % len(questions)], max_new_tokens=4,
                              remember=False)  # fmt: skip
                cold = first.answer.timings["first_token_s"]
                turn = s.ask(questions[2 * rep % len(questions)], max_new_tokens=cfg.decode_tokens,
                             remember=False)  # fmt: skip
                t = turn.answer.timings
                # after the first token (decode_s also holds the first token's prefill); a
                # text reader's own figure is llama.cpp's, like the raw engine's
                dec = t["per_token_ms"]
                if reader is not None:
                    dec = t["reader_timings"].get("predicted_per_token_ms")
                row = {
                    "engine": f"mc {name}",
                    "rep": rep,
                    "first_token_s": t["first_token_s"],
                    "cold_first_token_s": cold,
                    "decode_ms": dec,
                    "tokens": t["tokens"],
                    "answer": turn.text,
                }
                rows.append(row)
                if reader is not None:
                    reader.close()
                progress(
                    f"rep {rep} mc {name}: first {t['first_token_s']:.2f}s (cold {cold:.2f}s) "
                    f"decode {dec}"
                )
    keep = {r["rep"]: r["answer"] for r in rows if r["engine"] == "mc keeper"}
    ref = {r["rep"]: r["answer"] for r in rows if r["engine"] == "mc keeper fp32"}
    agreement["same_session_answers"] = sum(keep[k] == ref.get(k) for k in keep)
    agreement["session_answers"] = len(keep)
    refocus = refocus_cost(tree, base, inst.ids, cfg, progress)
    return {
        "config": asdict(cfg),
        "machine": {**machine_info(), "loadavg_end": loadavg()},
        "rows": rows,
        "summary": summarise(rows),
        "fp16_agreement": agreement,
        "refocus": refocus,
    }


# the keeper's engines: the session's defaults (fp16 projections, moved and copied positions),
# fp32 weights, no copies, and a refocus that recomputes everything after its first edit
KEEPERS = {"keeper": {}, "keeper fp32": {"answer_weights": "fp32"},
           "keeper no copy": {"copy_cache": False},
           "keeper recompute": {"shift_cache": False}}  # fmt: skip


def refocus_cost(tree, base, ids, cfg: SpeedConfig, progress) -> dict:
    """The model step after one refocus step, in two sessions making the same edits: one
    moving unchanged positions, one recomputing all after the first edit; interleaved."""
    import time

    import numpy as np

    from mcruntime import Session, SessionConfig

    rng = np.random.default_rng(7)
    arms = {"moved": True, "recompute": False}
    sess = {a: Session(str(tree), model=base, mode="r", config=SessionConfig(shift_cache=on))
            for a, on in arms.items()}  # fmt: skip
    rows = []
    try:
        for step in range(cfg.refocus_steps):
            at = int(rng.integers(0, len(ids) - 16))
            query = [int(i) for i in ids[at : at + 16]]
            row = {"step": step}
            for arm, s in sess.items():
                s.sync()
                s.window.logits()  # a clean cache before the step, as during decoding
                before = s.window.recomputed
                row[f"{arm}_edits"] = s.refocus(query, rounds=1)
                first = s.window.cached
                t0 = time.perf_counter()
                s.window.logits()
                row[f"{arm}_s"] = time.perf_counter() - t0
                row[f"{arm}_positions"] = s.window.recomputed - before
                row[f"{arm}_first_edit"] = first
                row[f"{arm}_length"] = s.window.length
            rows.append(row)
            progress(
                f"refocus {step}: edits {row['moved_edits']}, moved {row['moved_s']:.2f}s "
                f"({row['moved_positions']} positions), recompute {row['recompute_s']:.2f}s "
                f"({row['recompute_positions']})"
            )
    finally:
        for s in sess.values():
            s.close()
    edited = [r for r in rows if r["recompute_edits"]]
    med = lambda k: statistics.median(r[k] for r in edited) if edited else None  # noqa: E731
    return {
        "rows": rows,
        "same_edits": all(r["moved_edits"] == r["recompute_edits"] for r in rows),
        "edited_steps": len(edited),
        "moved_s": med("moved_s"),
        "recompute_s": med("recompute_s"),
        "moved_positions": med("moved_positions"),
        "recompute_positions": med("recompute_positions"),
        "ratio": med("moved_s") / med("recompute_s") if edited else None,
    }


def _greedy_agreement(base, ids, cfg: SpeedConfig) -> dict:
    """How often the fp16 answering copy writes exactly what fp32 writes: greedy
    continuations of ``cfg.agreement_prompts`` held-out passages (256 tokens each)."""
    out = {"same_continuations": 0, "continuations": cfg.agreement_prompts}
    for k in range(cfg.agreement_prompts):
        prompt = [int(i) for i in ids[k * 997 : k * 997 + 256]]
        a = base.generate(prompt, cfg.agreement_tokens, weights="fp32")
        b = base.generate(prompt, cfg.agreement_tokens, weights="fp16")
        out["same_continuations"] += a == b
    return out


def summarise(rows: list[dict]) -> dict:
    med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    raw = [r for r in rows if r["engine"] == "llama.cpp"]
    pre, dec = med([r["prefill_s"] for r in raw]), med([r["decode_ms"] for r in raw])
    out = {"llama.cpp": {"prefill_1024_s": pre, "decode_ms": dec}}
    for eng in sorted({r["engine"] for r in rows} - {"llama.cpp"}):
        rs = [r for r in rows if r["engine"] == eng]
        first = med([r["first_token_s"] for r in rs])
        cold = med([r["cold_first_token_s"] for r in rs])
        d = med([r["decode_ms"] for r in rs if r["decode_ms"]])
        out[eng] = {
            "first_token_s": first,
            "cold_first_token_s": cold,
            "decode_ms": d,
            "first_vs_prefill": first / pre if first and pre else None,
            "decode_vs_llama": d / dec if d and dec else None,
        }
    return out


def table(result: dict) -> str:
    s = result["summary"]
    ll = s["llama.cpp"]
    lines = [
        f"threads {result['config']['threads']}, tree {result['config']['tree_tokens']} tokens, "
        f"{result['config']['reps']} reps (medians)",
        "",
        "| engine | first token s | session's first question s | decode ms/token | "
        "first / llama.cpp prefill 1024 | decode / llama.cpp |",
        "|---|---|---|---|---|---|",
        f"| llama.cpp (raw GGUF) | prefill 1024: {ll['prefill_1024_s']:.2f} | – | "
        f"{ll['decode_ms']:.1f} | 1 | 1 |",
    ]
    for eng, v in s.items():
        if eng == "llama.cpp":
            continue
        f = lambda x, fmt: "–" if x is None else format(x, fmt)  # noqa: E731
        lines.append(
            f"| {eng} | {f(v['first_token_s'], '.2f')} | {f(v['cold_first_token_s'], '.2f')} | "
            f"{f(v['decode_ms'], '.1f')} | "
            f"{f(v['first_vs_prefill'], '.2f')} | {f(v['decode_vs_llama'], '.2f')} |"
        )
    lines += [
        "",
        "first token: a question asked in a session that already answered one (the window's "
        "cache is filled; the turn costs its recall and question); the session's first "
        "question also fills that cache. decode: ms per token after the first.",
    ]
    a = result.get("fp16_agreement")
    if a:
        lines += [
            "",
            "mc keeper answers with fp16 projections (`mc keeper fp32`: the same, all fp32); "
            f"they wrote what fp32 writes in {a['same_continuations']}/{a['continuations']} "
            f"greedy continuations of held-out text and {a['same_session_answers']}/"
            f"{a['session_answers']} session answers",
        ]
    rf = result.get("refocus")
    if rf and rf["edited_steps"]:
        lines += [
            "",
            f"A refocus step that edited the working context ({rf['edited_steps']} of "
            f"{len(rf['rows'])} steps, medians): moving unchanged positions "
            f"{rf['moved_s']:.2f} s ({rf['moved_positions']:.0f} positions computed) against "
            f"recomputing from the first edit {rf['recompute_s']:.2f} s "
            f"({rf['recompute_positions']:.0f}): **{rf['ratio']:.2f}x**"
            + ("" if rf["same_edits"] else " (the two sessions' edits differed)"),
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench speed", description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tree-tokens", type=int, default=73728)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    cfg = SpeedConfig(threads=args.threads, reps=args.reps, tree_tokens=args.tree_tokens)
    if args.out:
        cfg.out = args.out
    result = run(cfg)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(table(result) + "\n")
    print(table(result))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
