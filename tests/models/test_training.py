import json

import torch

import mcmodels
from mcmodels.evaluate import WindowEval, pick_windows, recovered
from mcmodels.train_gist import GistTrainConfig, train_gistnet
from mcmodels.train_lens import LensTrainConfig, expand_plan, sibling_groups, train_lensnet

SMALL = dict(span=1024, recent=32, horizon=32, hidden=32, layers=1, heads=2, eval_windows=4)


def _dev_kl(tiny, net, corpus):
    """Mean KL(teacher ‖ student) on fixed dev windows with level-1 gists."""
    from mcmodels import views

    docs = corpus.tokens(tiny.tokenizer, "train", min_tokens=1088)
    wins = pick_windows(docs, span=1024, recent=32, horizon=32, n_windows=4, seed=1)
    tok = torch.tensor([w[1].tolist() for w in wins])
    with torch.no_grad():
        emb = tiny.embed(tok)
        t = views.horizon_logprobs(tiny, emb, 32)
        g = views.make_gists(net, emb, 1024, 1)
        s = views.horizon_logprobs(
            tiny, views.assemble(views.plan_uniform(1024, 1), emb, g, 1024), 32
        )
    return float(views.kl(t, s).mean())


def test_gistnet_training_lowers_loss_and_resumes(tiny, toy_corpus, tmp_path):
    cfg = GistTrainConfig(
        steps=30, lr=3e-3, warmup=5, eval_every=15, ckpt_every=15, seed=0, **SMALL
    )
    torch.manual_seed(0)
    fresh = mcmodels.GistNet.for_base(tiny, hidden=32, layers=1, heads=2)
    res = train_gistnet(tiny, toy_corpus, tmp_path / "run", cfg, progress=False)
    assert res["steps"] == 30
    trained = mcmodels.load_gistnet(tmp_path / "run" / "last")
    assert not torch.equal(trained.inp.weight, fresh.inp.weight)
    assert _dev_kl(tiny, trained, toy_corpus) < _dev_kl(tiny, fresh, toy_corpus)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "dev" and "diversity_l1" in r for r in rows)
    rec = mcmodels.read_record(tmp_path / "run" / "best")
    assert rec["recipe"]["data_manifest_hash"] == toy_corpus.manifest_hash and rec["recipe"][
        "steps"
    ] in (15, 30)
    # resume: continue to 40 steps from the saved state; the first 30 are not redone
    cfg2 = GistTrainConfig(**{**cfg.__dict__, "steps": 40})
    train_gistnet(tiny, toy_corpus, tmp_path / "run", cfg2, resume=True, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, 41))
    assert mcmodels.read_record(tmp_path / "run" / "last")["recipe"]["steps"] == 40


def test_resume_reproduces_an_uninterrupted_run(tiny, toy_corpus, tmp_path):
    base_cfg = dict(lr=1e-3, warmup=2, eval_every=100, ckpt_every=3, seed=2, **SMALL)
    train_gistnet(
        tiny, toy_corpus, tmp_path / "a", GistTrainConfig(steps=6, **base_cfg), progress=False
    )
    train_gistnet(
        tiny, toy_corpus, tmp_path / "b", GistTrainConfig(steps=3, **base_cfg), progress=False
    )
    train_gistnet(
        tiny,
        toy_corpus,
        tmp_path / "b",
        GistTrainConfig(steps=6, **base_cfg),
        resume=True,
        progress=False,
    )
    a = mcmodels.load_gistnet(tmp_path / "a" / "last")
    b = mcmodels.load_gistnet(tmp_path / "b" / "last")
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], rtol=1e-5, atol=1e-6)


def test_softprompt_baseline_trains(tiny, toy_corpus, tmp_path):
    cfg = GistTrainConfig(
        steps=4, softprompt=True, eval_every=4, ckpt_every=4, lr=1e-2, warmup=1, **SMALL
    )
    train_gistnet(tiny, toy_corpus, tmp_path / "sp", cfg, progress=False)
    sp = mcmodels.load_softprompt(tmp_path / "sp" / "last")
    assert sp.prefix(2, 5).shape == (2, 5, 64)


def test_lensnet_targets_and_training(tiny, toy_corpus, tmp_path):
    torch.manual_seed(0)
    gist = mcmodels.GistNet.for_base(tiny, hidden=32, layers=1, heads=2)
    cfg = LensTrainConfig(
        samples=10,
        span=1024,
        recent=32,
        horizon=32,
        query=16,
        max_actions=6,
        steps=40,
        batch=4,
        lr=3e-3,
        warmup=4,
        eval_every=20,
        hidden=32,
        layers=1,
        heads=2,
        dev_frac=0.2,
    )
    res = train_lensnet(tiny, gist, toy_corpus, tmp_path / "lens", cfg, progress=False)
    assert res["targets"] == 10
    rows = torch.load(tmp_path / "lens" / "targets.pt", weights_only=False)
    r = rows[0]
    lv = r["levels"]
    # masking: raw tail never a target; level-0 entries have no expand gain measured
    assert not r["tmask"][-32:].any()
    assert r["tmask"].any()
    lens = mcmodels.load_lensnet(tmp_path / "lens" / "last")
    fresh = mcmodels.LensNet.for_base(tiny, hidden=32, layers=1, heads=2)
    assert not torch.equal(lens.entry_in.weight, fresh.entry_in.weight)
    metrics = [
        json.loads(x) for x in (tmp_path / "lens" / "metrics.jsonl").read_text().splitlines()
    ]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert sum(losses[-10:]) < sum(losses[:10])
    assert lv.shape[0] == r["entries"].shape[0]
    # resume runs to the new step count
    cfg2 = LensTrainConfig(**{**cfg.__dict__, "steps": 50})
    train_lensnet(tiny, gist, toy_corpus, tmp_path / "lens", cfg2, resume=True, progress=False)
    assert mcmodels.read_record(tmp_path / "lens" / "last")["recipe"]["steps"] == 50


def test_expand_and_collapse_helpers():
    plan = [(2, 0)] + [(1, 1024 + 32 * i) for i in range(32)] + [(0, 2048 + i) for i in range(5)]
    e = expand_plan(plan, 0)
    assert len(e) == len(plan) + 31 and e[:2] == [(1, 0), (1, 32)]
    groups = sibling_groups(plan, top=2)
    assert groups == [(1, 1)]
    assert sibling_groups(plan, top=1) == []


def test_recovered_report_structure(tiny, toy_corpus):
    torch.manual_seed(0)
    gist = mcmodels.GistNet.for_base(tiny, hidden=32, layers=1, heads=2)
    docs = toy_corpus.tokens(tiny.tokenizer, "train", min_tokens=1088)
    wins = pick_windows(docs, span=1024, recent=32, horizon=32, n_windows=3, seed=0)
    res = recovered(tiny, gist, wins, span=1024, recent=32, horizon=32, batch=2)
    assert res["n_windows"] == 3 and set(res["levels"]) == {"l1", "l2"}  # mixed needs span ≥ 2048
    l1 = res["levels"]["l1"]
    assert l1["n_gists"] == 32 and l1["budget"] == 64
    for m in ("trained", "untrained", "mean", "control"):
        row = l1[m]
        expect = (l1["nll_trunc"] - row["nll"]) / (l1["nll_trunc"] - res["nll_full"])
        assert abs(row["recovered"] - expect) < 1e-9
        plain = (res["nll_trunc_plain"] - row["nll"]) / (res["nll_trunc_plain"] - res["nll_full"])
        assert abs(row["recovered_vs_plain"] - plain) < 1e-9
    assert "trained_minus_control" in l1
    assert l1["control_minus_trained_nll"]["n_windows"] == 3
    we = WindowEval(tiny, wins, span=1024, recent=32, horizon=32)
    assert we.full().shape == (3, 32)
