import torch

import mcmodels
from mcmodels import views


def test_gistnet_shapes_levels_and_scale(tiny):
    torch.manual_seed(0)
    g = mcmodels.GistNet.for_base(tiny)
    x = tiny.embed(torch.randint(0, 256, (3, 32)))
    out = g(x, 1)
    assert out.shape == (3, 64) and out.dtype == torch.float32
    assert g(x, torch.tensor([1, 2, 1])).shape == (3, 64)
    assert not torch.allclose(g(x, 1), g(x, 2))  # told the level
    st = tiny.embedding_stats()
    dev = (out - st["mean"]).norm(dim=-1)
    # the scale of a token's deviation from the mean embedding, not of a mean of 32 tokens
    assert ((dev / st["dev_rms"]) > 0.3).all() and ((dev / st["dev_rms"]) < 3).all()


def test_gistnet_is_bidirectional(tiny):
    torch.manual_seed(0)
    g = mcmodels.GistNet.for_base(tiny)
    x = tiny.embed(torch.randint(0, 256, (1, 32)))
    y = x.clone()
    y[0, 0] = tiny.embed(torch.tensor([7]))[0]
    z = x.clone()
    z[0, 31] = tiny.embed(torch.tensor([7]))[0]
    assert not torch.allclose(g(x, 1), g(y, 1)) and not torch.allclose(g(x, 1), g(z, 1))


def test_two_levels_end_to_end_gradients(tiny):
    g = mcmodels.GistNet.for_base(tiny)
    emb = tiny.embed(torch.randint(0, 256, (2, 2048)))
    g1, g2 = views.make_gists(g, emb, 2048, 2)
    assert g1.shape == (2, 64, 64) and g2.shape == (2, 2, 64)
    g2.sum().backward()
    assert g.inp.weight.grad is not None and g.inp.weight.grad.abs().sum() > 0


def test_gist_diversity_detects_collapse():
    same = torch.randn(1, 16).expand(10, -1)
    assert mcmodels.gist_diversity(same) > 0.999
    assert abs(mcmodels.gist_diversity(torch.randn(50, 64))) < 0.2


def test_lensnet_shapes_mask_and_features(tiny):
    torch.manual_seed(0)
    lens = mcmodels.LensNet.for_base(tiny)
    torch.nn.init.normal_(lens.head.weight)  # zero-initialised head: make scores non-trivial
    levels = torch.tensor([[2, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    starts = torch.tensor([[0, 1024, 1056, 1088, 1089, 1090], [0, 32, 64, 65, 66, 67]])
    feats = mcmodels.entry_features(levels, starts, torch.tensor([1091, 68]))
    assert feats.shape == (2, 6, 4)
    assert feats[0, 0, 3] == 0 and feats[0, 3, 3] == 1
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    s = lens(torch.randn(2, 6, 64), levels, feats, torch.randn(2, 4, 64), mask)
    assert s.shape == (2, 6) and (s[1, 4:] == 0).all() and torch.isfinite(s).all()
    assert s[0].abs().sum() > 0
    # non-causal: the last entry changes the first entry's score
    e = torch.randn(1, 6, 64)
    e2 = e.clone()
    e2[0, 5] += 1
    a = lens(e, levels[:1], feats[:1], torch.randn(1, 4, 64).expand(1, -1, -1))
    torch.manual_seed(1)
    q = torch.randn(1, 4, 64)
    a, b = lens(e, levels[:1], feats[:1], q), lens(e2, levels[:1], feats[:1], q)
    assert not torch.allclose(a[0, 0], b[0, 0])


def test_views_plans_tile_the_span():
    import random

    rng = random.Random(0)
    for _ in range(20):
        plan = views.plan_mixed(2048 + 96, rng, top=2, p_expand=0.5, p_raw=0.3)
        pos = 0
        for lv, s in plan:
            assert s == pos and s % 32**lv == 0
            pos += 32**lv
        assert pos == 2048 + 96
    assert len(views.plan_coarse_old(2048, 1)) == 33


def test_seeded_gistnet_is_fixed_and_leaves_the_global_rng_alone(tiny):
    state = torch.random.get_rng_state()
    a = mcmodels.GistNet.for_base(tiny, seed=0)
    assert torch.equal(state, torch.random.get_rng_state())
    b = mcmodels.GistNet.for_base(tiny, seed=0)
    c = mcmodels.GistNet.for_base(tiny, seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["inp.weight"], sc["inp.weight"])
    # every layer of the encoder drawn on its own (not copies of one), at PyTorch's scales
    enc = a.encoder.layers
    assert not torch.equal(enc[0].linear1.weight, enc[1].linear1.weight)
    assert a.inp.weight.abs().max() <= 1 / tiny.d_model**0.5 + 1e-6
    x = tiny.embed(torch.randint(0, 255, (2, 32))).float()
    assert torch.isfinite(a(x, 1)).all()
