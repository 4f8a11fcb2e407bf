"""LoCoMo focus recall alone: which evidence turns mc and BM25 show a text reader, no answers.

An answer from the 1.5B reader costs 6-8 s here, so a full split of answers takes hours; what
recall finds takes about 0.1 s a question. This mode is the dev loop for recall and the figure
that sits beside every answer score: for each question, the share of its evidence turns that are
in what the reader would be shown (``mcruntime.Session.read_prompt``: the chosen passages and the
recent conversation; BM25's best turns within the same token budget, ``bench.locomo.rag_turns``),
and how many tokens that is. A turn counts as shown when at least half of its tokens are.

    python -m bench locomo-recall --split dev --reader qwen2.5-coder-1.5b-instruct
    python -m bench locomo-recall --split dev --set read_tokens=768   # a bigger budget

The reader is loaded because a question whose words find nothing is reworded by it, as in an
answer; nothing else asks it. Rows name questions by conversation and index only.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench import locomo as L
from bench._common import machine_info

SYSTEMS = ("mc", "rag")


@dataclass
class Shown:
    conv: str
    q: int
    category: int
    system: str
    evidence: list[str]  # dia_ids
    shown: list[str]  # dia_ids of the turns shown
    found: float  # share of the evidence turns shown
    tokens: int  # keeper tokens shown
    reworded: bool = False


def _share(ev: list[int], shown: list[int]) -> float:
    return len(set(ev) & set(shown)) / len(ev)


def _tokens(spans) -> int:
    covered: set[int] = set()
    for s, e in spans:
        covered.update(range(s, e))
    return len(covered)


def run(cfg: L.LocomoConfig, *, base=None, data=None, progress=print) -> dict:
    """Every question with evidence of the chosen conversations; returns rows and summary."""
    import mcmodels
    from mcmodels.readers import resolve_reader
    from mcruntime import Session, SessionConfig

    if resolve_reader(cfg.reader) == mcmodels.KEEPER:
        raise ValueError("focus recall is measured for a text reader: pass --reader NAME")
    data = data if data is not None else L.load(L.data_path(cfg.data))
    cids = list(cfg.conversations) or L.split_ids(data, cfg.split)
    base = base or mcmodels.load_base(cfg.model)
    reader = mcmodels.load_reader(cfg.reader)
    gistnet = mcmodels.pick_gistnet(base, None, untrained_ok=True)
    lensnet = mcmodels.default_lensnet(base)
    t0 = time.perf_counter()
    rows: list[Shown] = []
    for cid in cids:
        conv = L.Conversation.of(cid, data[cid], base.tokenizer)
        L.build_tree(conv, Path(cfg.workdir), base, gistnet, lensnet)
        index = L.TurnIndex(conv)
        sc = SessionConfig(window=cfg.window, **cfg.session)
        with Session(str(conv.tree), model=base, gistnet=gistnet, lensnet=lensnet, config=sc,
                     mode="r", reader=reader) as sess:  # fmt: skip
            for qi in L.pick(conv.qa, cfg.limit, cfg.first):
                qa = conv.qa[qi]
                ev = conv.evidence(qa)
                if not ev:
                    continue
                got = sess.read_prompt(qa["question"])
                spans = [(p.start, p.stop) for p in got.passages] + got.recent
                mc = conv.turns_in(spans)
                rag = L.rag_turns(conv, index.ranked(qa["question"], L.rag_k(cfg)), cfg)
                ids = [conv.turns[i].dia_id for i in ev]
                cat = int(qa["category"])
                rows.append(Shown(cid, qi, cat, "mc", ids, [conv.turns[i].dia_id for i in mc],
                                  _share(ev, mc), _tokens(spans), bool(got.reworded)))  # fmt: skip
                rows.append(Shown(cid, qi, cat, "rag", ids, [conv.turns[i].dia_id for i in rag],
                                  _share(ev, rag), sum(len(conv.ids[i]) for i in rag)))  # fmt: skip
        done = [r for r in rows if r.conv == cid]
        progress(
            f"conversation {cid}: "
            + ", ".join(
                f"{s} {np.mean([r.found for r in done if r.system == s]):.3f}" for s in SYSTEMS
            )
            + f" over {len(done) // 2} questions"
        )
    out = {
        "config": asdict(cfg),
        "model": base.name,
        "reader": cfg.reader,
        "machine": machine_info(),
        "seconds": time.perf_counter() - t0,
        "rows": [asdict(r) for r in rows],
    }
    out["summary"] = summarise(out["rows"])
    return out


def summarise(rows: list[dict]) -> dict:
    """Per system and category (by name), categories 1-4 and all: questions, mean share of the
    evidence shown, share of questions with all of it shown, mean tokens shown."""
    out: dict = {}
    for system in SYSTEMS:
        rs = [r for r in rows if r["system"] == system]
        groups = {L.CATEGORIES[c]: [r for r in rs if r["category"] == c] for c in L.CATEGORIES}
        groups["1-4"] = [r for r in rs if r["category"] != L.ADVERSARIAL]
        groups["all"] = rs
        out[system] = {
            name: {
                "n": len(g),
                "found": float(np.mean([r["found"] for r in g])),
                "all_found": float(np.mean([r["found"] == 1.0 for r in g])),
                "tokens": float(np.mean([r["tokens"] for r in g])),
            }
            for name, g in groups.items()
            if g
        }
    return out


def table(result: dict) -> str:
    summ = result["summary"]
    cols = [c for c in [*L.CATEGORIES.values(), "1-4", "all"] if c in summ["mc"]]
    lines = [
        "| system | " + " | ".join(f"{c} (n={summ['mc'][c]['n']})" for c in cols) + " | tokens |",
        "|" + "---|" * (len(cols) + 2),
    ]
    for s in SYSTEMS:
        cells = [f"{summ[s][c]['found']:.3f}" for c in cols]
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {summ[s]['all']['tokens']:.0f} |")
    return "\n".join(lines)


def save(result: dict, out: str) -> None:
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    head = json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1)
    rows = ",\n".join(json.dumps(r, separators=(",", ":")) for r in result["rows"])
    p.write_text(f'{head[:-2]},\n "rows": [\n{rows}\n ]\n}}\n')  # a row a line: small diffs
    cfg = result["config"]
    over = ", ".join(f"{k}={v}" for k, v in cfg["session"].items()) or "defaults"
    p.with_suffix(".md").write_text(
        f"LoCoMo focus recall, {cfg['split']} split, reader {result['reader']}, "
        f"SessionConfig {over}; share of each question's evidence turns shown "
        f"({result['seconds']:.0f} s)\n\n{table(result)}\n"
    )


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench locomo-recall",
                                 description=__doc__.split("\n")[0])  # fmt: skip
    ap.add_argument("--split", default="dev", choices=["test", "dev"])
    ap.add_argument("--conversations", default=None, help="comma-separated, e.g. 26,30")
    ap.add_argument("--limit", type=int, default=None, help="N questions per conversation")
    ap.add_argument("--reader", default=None, help="a text reader's name (default: the default)")
    ap.add_argument("--data", default=None, help="locomo10.zip (default ../shared/locomo/)")
    ap.add_argument("--workdir", default=None, help="trees (git-ignored)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="SessionConfig override for mc, e.g. read_tokens=768")  # fmt: skip
    args = ap.parse_args(argv)
    from mcmodels.defaults import DEFAULT_READER
    from mcmodels.readers import resolve_reader

    kw: dict = {"split": args.split, "reader": resolve_reader(args.reader or DEFAULT_READER)}
    for name in ("limit", "data", "workdir"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.conversations:
        kw["conversations"] = tuple(args.conversations.split(","))
    kw["session"] = {k: json.loads(v) for k, v in (x.split("=", 1) for x in args.set)}
    cfg = L.LocomoConfig(**kw)
    cfg.out = args.out or f"bench/results/locomo_recall_{cfg.split}.json"
    result = run(cfg)
    save(result, cfg.out)
    print(table(result))
    print(f"wrote {cfg.out} ({result['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
