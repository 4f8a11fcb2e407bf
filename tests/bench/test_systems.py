"""The systems benchmark at toy sizes on the tiny model: every code path runs, the JSON has the
documented shape and is consistent with itself. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json

import pytest

import mcstore
from bench.systems import decode, flat, footprint, report, runner
from bench.systems.plan import SCORERS, TARGET_RATIO, Plan
from bench.systems.trees import build_tree, history, load_model, source_ids
from mcruntime.lexical import EXTEND

HIST = [3000, 20000]
NEW = 40  # one refocus (after token 32) inside the measured steps


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    plan = Plan(
        histories={"tiny": HIST},
        window=512,
        rounds={"tiny": 1},
        new_tokens=NEW,
        warmup=2,
        refocus_reps={"tiny": {"recency": 1, "similarity": 1, "attention": 1}},
        ingest_tokens={"tiny": 8192},
        ingest_chunk=4096,
        rss=False,  # one child process below instead of one per history: seconds matter here
        s3=importlib.util.find_spec("moto") is not None,
    )
    res = runner.run(plan, ["tiny"], cache=cache, log=lambda *_: None)
    out = tmp_path_factory.mktemp("out")
    paths = runner.write(res, out)
    return res, paths, cache, plan


def test_files_and_machine(result):
    res, paths, _, _ = result
    on_disk = json.loads(paths["json"].read_text())
    assert on_disk["models"].keys() == {"tiny"}
    m = on_disk["machine"]
    assert m["torch_threads"] == 1 and m["cores"] >= 1 and m["cpu"] and m["date"]
    assert len(m["git_commit"]) in (40, len("unknown"))
    md = paths["md"].read_text()
    assert "decode ms/token" in md and "KV / tree" in md
    assert ("S3 / local" in md) == res["plan"]["s3"]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_decode_shape_and_kv_reuse(result):
    res, _, _, plan = result
    r = res["models"]["tiny"]
    assert list(r["decode"]) == [str(n) for n in HIST]
    for n, d in r["decode"].items():
        assert d["history"] > int(n)  # the turn was appended to the tree
        rows = d["trace"]["rows"]
        kinds = [row[2] for row in rows]
        assert kinds[0] == "first" and kinds[-1] == "end" and len(rows) == NEW + 1
        assert kinds.count("refocus") == 1 and kinds.index("refocus") == 32
        # while decoding, only strong wants edit the focus
        assert d["refocus_tau_expand"] == [r["session_config"]["decode_tau"]]
        # every measured token is counted once: pure steps + refocus steps
        assert d["tokens_measured"] == NEW - 1 - plan.warmup
        assert d["decode"]["n"] + d["refocus_step"]["n"] == d["tokens_measured"]
        assert d["decode_positions_max"] == 1  # a pure decode step computes one position
        lo, hi = d["window_positions"]
        assert 0 < lo <= hi <= 512  # the KV cache never holds more than the window
        assert d["decode"]["median_ms"] <= d["decode"]["p90_ms"] <= d["decode"]["max_ms"]
        assert d["decode_cpu"]["n"] == d["decode"]["n"]
        ratio = d["ratio_vs_smallest"]["decode_median"]
        ref = r["decode"][str(HIST[0])]["decode"]["median_ms"]
        assert ratio == pytest.approx(d["decode"]["median_ms"] / ref)
    assert r["decode"][str(HIST[0])]["ratio_vs_smallest"]["amortized"] == 1.0
    for n in HIST:
        assert 0 < r["session_open_index_s"][str(n)] <= r["session_open_s"][str(n)]
        # the built trees store their retrieval index: open loads every complete epoch of it
        keys = r["session_open_index_keys"][str(n)]
        epochs = n // mcstore.entry.DEFAULT_EPOCH
        assert keys["stored"] == epochs * mcstore.entry.DEFAULT_EPOCH // 32
        assert keys["total"] == (n - EXTEND) // 32  # a block waits for the tokens after it
        assert (r["bytes"][str(n)]["by_kind"].get("retrieval index", 0) > 0) == (epochs > 0)


def test_refocus_per_scorer(result):
    res, _, _, _ = result
    rf = res["models"]["tiny"]["refocus"]
    assert set(rf) == set(SCORERS)
    for per in rf.values():
        assert list(per) == [str(n) for n in HIST]
        for v in per.values():
            assert v["reps"] == 1 and v["total_ms"]["n"] == 1
            assert all(p >= 1 for p in v["positions_recomputed"])
            assert "recompute_ms_per_position" in v
            parts = sum(
                v[k]["median_ms"]
                for k in ("score_ms", "retrieval_ms", "allocate_read_ms", "recompute_ms")
            )
            assert parts == pytest.approx(v["total_ms"]["median_ms"], rel=1e-6)


def test_ingest_bytes_and_memory(result):
    res, _, _, plan = result
    r = res["models"]["tiny"]
    ing = r["ingest"]
    backends = ["local", "s3"] if plan.s3 else ["local"]
    for b in backends:
        v = ing[b]
        assert v["tokens"] == 8192 and v["tokens_per_s"] > 0 and v["gist_s"] > 0
        assert v["store_s"] > 0 and v["puts"] > 0
    if plan.s3:
        # the same format on both backends: the same bytes, give or take commit timestamps
        assert ing["s3"]["bytes_stored"] == pytest.approx(ing["local"]["bytes_stored"], rel=0.01)
        assert "s3_over_local" in ing
    kv = r["kv_bytes_per_token"]
    assert kv["fp32"] == 2 * kv["fp16/bf16"] > 0
    for n, v in r["bytes"].items():
        assert v["length"] == int(n)
        assert v["total"] == sum(v["by_kind"].values())
        if int(n) >= 8192:  # at least one whole shard (epoch): arrays, not only tail deltas
            assert v["by_kind"]["tokens"] > 0 and v["by_kind"]["gists"] > 0
        assert v["kv_over_tree_fp16"] == pytest.approx(kv["fp16/bf16"] * int(n) / v["total"])


def test_rss_child(result, tmp_path):
    _, _, cache, _ = result
    tree = next(cache.glob("tiny-3000-*.mc"))
    v = footprint.run_rss_child("tiny", tree, tmp_path, 512, 8)
    assert "error" not in v, v
    assert 0 < v["rss_start_mib"] <= v["rss_model_mib"] <= v["hwm_mib"]
    assert v["rss_chat_max_mib"] >= v["rss_open_mib"] > 0
    assert v["tokens"] == 8 and v["history"] > 3000
    assert v["index_blocks"] >= 3000 // 32 - 1 and v["store_cache_entries"] >= 0
    assert mcstore.open(str(tree), "r").length == 3000


def test_cached_trees_are_untouched_and_reused(result):
    res, _, cache, _ = result
    r = res["models"]["tiny"]
    trees = sorted(p for p in cache.glob("tiny-*.mc"))
    assert len(trees) == len(HIST)
    for p in trees:
        t = mcstore.open(str(p), "r")
        assert t.length in HIST  # the benchmark chatted on forks, never on the cache
        assert not list((p / "refs" / "forks").glob("*.json"))  # fork pins removed
    assert not list(cache.glob("run-*"))  # the run folder is cleaned up
    assert all(not b["cached"] for b in r["builds"].values())
    base, g = load_model("tiny")
    src, note = source_ids(base)
    _, info = build_tree("tiny", base, g, HIST[0], src, note, cache)
    assert info["cached"]


def test_summarise_steps_classifies():
    def step(i, s, events, done=False):
        return {"round": 0, "i": i, "s": s, "cpu": s / 2, "done": done, "events": events}

    lg = {"kind": "logits", "s": 0.0, "positions": 1}
    steps = [step(0, 5.0, [{**lg, "positions": 100}])]
    steps += [step(i, 0.010, [lg]) for i in range(1, 6)]
    steps.append(
        step(6, 0.500, [{"kind": "refocus", "s": 0.3, "edits": 3}, {**lg, "positions": 80}])
    )
    steps.append(step(7, 0.040, [lg, lg]))  # two tokens in one resume
    steps.append(step(8, 1.0, [], done=True))
    d = decode.summarise_steps(steps, Plan(histories={}, warmup=2))
    assert d["first_token"]["n"] == 1 and d["end_of_turn"]["n"] == 1
    assert d["decode"]["n"] == 4  # steps 3, 4, 5 and the doubled step 7
    assert d["decode"]["median_ms"] == pytest.approx(10.0)
    assert d["refocus_step"]["n"] == 1 and d["refocus_edits"] == [3]
    assert d["refocus_recomputed_positions"] == [80]
    assert d["tokens_measured"] == 6
    assert d["amortized_ms_per_token"] == pytest.approx((0.03 + 0.5 + 0.04) / 6 * 1e3)
    assert d["multi_token_steps"] == 1


def test_summary_and_report_only(result, capsys):
    res, paths, _, _ = result
    lines = report.summary(res)
    d = res["models"]["tiny"]["decode"][str(HIST[-1])]["ratio_vs_smallest"]
    verdict = "met" if max(d["decode_median"], d["decode_cpu_median"]) <= TARGET_RATIO else "NOT"
    assert f"{d['decode_median']:.3f}x wall median" in lines[0] and f": {verdict}" in lines[0]
    md = paths["md"].read_text()
    assert "## Summary" in md and lines[0] in md
    paths["md"].unlink()
    paths["png"].unlink()
    runner.main(["--report-only", "--out-dir", str(paths["json"].parent)])
    assert paths["md"].read_text() == md and paths["png"].is_file()


def test_source_ids_without_a_corpus(monkeypatch, tmp_path):
    import mcmodels
    import mcmodels.corpus

    monkeypatch.setattr(mcmodels.corpus, "default_corpus_dir", lambda: tmp_path / "none")
    base = mcmodels.tiny_base(0)
    a, note = source_ids(base, 4096)
    b, _ = source_ids(base, 4096)
    assert "pseudo-random" in note and (a == b).all() and len(a) == 4096
    assert a.min() >= 0 and a.max() < 256
    assert (history(a, 4000, 4200) == a[[i % 4096 for i in range(4000, 4200)]]).all()


def test_flat_cost_section(tmp_path):
    """Section 6 alone (``--flat-only``): its trees have one segment per ``flat_segment``
    tokens, every turn is a remembered ``Session.ask``, ratios are largest over smallest."""
    plan = Plan(
        histories={},
        flat_histories={"tiny": [3072, 12288]},
        flat_window=512,
        flat_tokens=NEW,
        flat_turns=3,
        flat_segment=1024,
    )
    res = runner.run_flat_only(plan, ["tiny"], cache=tmp_path / "cache", log=lambda *_: None)
    f = res["models"]["tiny"]["flat"]
    assert list(f["histories"]) == ["3072", "12288"]
    assert f["window"] == 512 and f["turns"] == 3 and f["segment_tokens"] == 1024
    for n, h in f["histories"].items():
        assert h["segments"] == int(n) // 1024 and h["history_start"] == int(n)
        assert len(h["turns"]) == 3 and h["turns_measured"] == 3 - plan.flat_warmup
        hist = [t["history"] for t in h["turns"]]
        assert hist == sorted(set(hist))  # every turn was remembered: the history grew
        for t in h["turns"]:
            assert 0 < t["tokens"] <= NEW and t["model_s"] <= t["ask_s"]
            assert t["refocus_calls"] >= 1  # the question's refocus, then one per 32 tokens
        for m in flat.METRICS:
            assert h[f"{m}_ms_per_token"] > 0
    for m in flat.METRICS:
        lo, hi = (f["histories"][n][f"{m}_ms_per_token"] for n in ("3072", "12288"))
        assert f["ratio"][m] == pytest.approx(hi / lo)
    assert not list((tmp_path / "cache").glob("run-*"))
    assert sorted(p.name.split("-")[2] for p in (tmp_path / "cache").glob("tiny-*.mc")) == [
        "seg1024",
        "seg1024",
    ]
    out = tmp_path / "out"
    paths = runner.write_flat(res, out)
    md = paths["md"].read_text()
    assert report.flat_summary(f) in md and "runtime (turn - model)" in md
    paths["md"].unlink()
    runner.main(["--report-only", "--flat-only", "--out-dir", str(out)])
    assert paths["md"].read_text() == md
