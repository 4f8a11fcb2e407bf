"""The speed benchmark's refocus section at toy size on the tiny model: both sessions make the
same edits, moving unchanged positions computes fewer of them, and the table says so. No
timing is asserted."""

from __future__ import annotations

from bench import speed
from mcruntime import Session, SessionConfig
from tests.runtime.text import prose


def testrefocus_cost_compares_the_same_edits(tiny, tmp_path):
    import mcmodels

    gistnet = mcmodels.GistNet.for_base(tiny).eval()
    tree = tmp_path / "t.mc"
    with Session(str(tree), model=tiny, gistnet=gistnet, config=SessionConfig(window=512)) as s:
        for i in range(4):
            s.ingest(prose(2500, i), f"doc{i}.md")
        ids = s.tree.tokens(0, s.tree.length)
    cfg = speed.SpeedConfig(refocus_steps=4)
    rf = speed.refocus_cost(tree, tiny, ids, cfg, progress=lambda *_: None)
    assert rf["same_edits"] and len(rf["rows"]) == 4 and rf["edited_steps"] >= 1
    edited = [r for r in rf["rows"] if r["recompute_edits"]]
    assert all(r["moved_positions"] <= r["recompute_positions"] for r in edited)
    assert any(r["moved_positions"] < r["recompute_positions"] for r in edited)
    lines = speed.table({"config": {"threads": 1, "tree_tokens": 1, "reps": 1},
                         "summary": {"llama.cpp": {"prefill_1024_s": 1.0, "decode_ms": 1.0}},
                         "refocus": rf}).splitlines()  # fmt: skip
    assert any("moving unchanged positions" in ln and "x**" in ln for ln in lines)
