"""LoCoMo turn rankings: how much evidence BM25 over whole turns shows in N turns, when each
turn is indexed with its own words or also with the words of the turn it answers.

Of the dev evidence turns mc never shows, most are replies whose own words share nothing with
the question ("What does Melanie say running has been great for?" against "This has been
great for my mental health"): the words asked for are in the turn they answer. This measures,
without a reader or a tree (seconds), whether indexing a turn with its predecessor's words
finds them, before the tree's block index is changed to do it (docs/memory.md). A turn counts
once however it is reached; showing a turn "and its reply" or "and the one before" fills the
N turns in rank order.

    python -m bench locomo-turns --split dev
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench import locomo as L
from bench._common import machine_info

# (name, each turn's document, what a ranked turn shows): "own" its words, "before" its words
# and those of the turn before it in the same session
RANKINGS = (
    ("own words, the turn", "own", "turn"),
    ("own words, the turn and its reply", "own", "next"),
    ("with the turn before, the turn", "before", "turn"),
    ("with the turn before, the turn and the one before", "before", "prev"),
)
TURNS = (6, 8, 10)
POOL = 40  # ranked turns looked at (more than the largest N needs)


def with_before(conv: L.Conversation) -> L.Conversation:
    """``conv`` whose turns' texts also hold the text of the turn before them in the same
    session (what ``L.TurnIndex`` indexes); everything else shared."""
    ts = conv.turns
    turns = [
        dataclasses.replace(t, text=ts[i - 1].text + t.text)
        if i and ts[i - 1].session == t.session
        else t
        for i, t in enumerate(ts)
    ]
    return dataclasses.replace(conv, turns=turns)


def shown(ranked: list[int], how: str, n: int, count: int) -> set[int]:
    """The first ``n`` distinct turns that ``ranked`` shows, each with its reply (``next``) or
    the turn before it (``prev``) or alone (``turn``), within the conversation's ``count``."""
    out: list[int] = []
    for i in ranked:
        for t in {"turn": (i,), "next": (i, i + 1), "prev": (i - 1, i)}[how]:
            if 0 <= t < count and t not in out:
                out.append(t)
    return set(out[:n])


def run(cfg: L.LocomoConfig, *, tokenizer=None, data=None, progress=print) -> dict:
    """Every question of categories 1-4 with evidence in the chosen conversations."""
    if tokenizer is None:
        import mcmodels

        tokenizer = mcmodels.load_base(cfg.model).tokenizer
    data = data if data is not None else L.load(L.data_path(cfg.data))
    t0 = time.perf_counter()
    found: dict[str, dict[int, list[float]]] = {
        name: {n: [] for n in TURNS} for name, *_ in RANKINGS
    }
    questions = 0
    for cid in list(cfg.conversations) or L.split_ids(data, cfg.split):
        conv = L.Conversation.of(cid, data[cid], tokenizer)
        index = {"own": L.TurnIndex(conv), "before": L.TurnIndex(with_before(conv))}
        for qi in L.pick(conv.qa, cfg.limit, cfg.first):
            qa = conv.qa[qi]
            ev = set(conv.evidence(qa))
            if not ev or int(qa["category"]) == L.ADVERSARIAL:
                continue
            questions += 1
            ranked = {k: ix.ranked(qa["question"], POOL) for k, ix in index.items()}
            for name, doc, how in RANKINGS:
                for n in TURNS:
                    got = shown(ranked[doc], how, n, len(conv.turns))
                    found[name][n].append(len(ev & got) / len(ev))
        progress(f"conversation {cid}: {questions} questions so far")
    return {
        "config": asdict(cfg),
        "machine": machine_info(),
        "seconds": time.perf_counter() - t0,
        "questions": questions,
        "found": {
            name: {str(n): float(np.mean(v)) for n, v in by.items()} for name, by in found.items()
        },
    }


def table(result: dict) -> str:
    lines = [
        "| ranking, shown | " + " | ".join(f"{n} turns" for n in TURNS) + " |",
        "|" + "---|" * (len(TURNS) + 1),
    ]
    for name, by in result["found"].items():
        lines.append(f"| {name} | " + " | ".join(f"{by[str(n)]:.3f}" for n in TURNS) + " |")
    return "\n".join(lines)


def save(result: dict, out: str) -> None:
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(result, indent=1))
    cfg = result["config"]
    p.with_suffix(".md").write_text(
        f"LoCoMo turn rankings, {cfg['split']} split, {result['questions']} questions of "
        f"categories 1-4 with evidence; share of each question's evidence turns shown "
        f"({result['seconds']:.1f} s)\n\n{table(result)}\n"
    )


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench locomo-turns",
                                 description=__doc__.split("\n")[0])  # fmt: skip
    ap.add_argument("--split", default="dev", choices=["test", "dev"], help="dev: for tuning")
    ap.add_argument("--data", default=None, help="locomo10.zip (default ../shared/locomo/)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    cfg = L.LocomoConfig(split=args.split, data=args.data)
    cfg.out = args.out or f"bench/results/locomo_turns_{cfg.split}.json"
    result = run(cfg)
    save(result, cfg.out)
    print(table(result))
    print(f"wrote {cfg.out} ({result['seconds']:.1f}s)")


if __name__ == "__main__":
    main()
