"""The answering model's fast parts: a KV cache that grows in place, and fp16 projections."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from mcmodels.errors import ModelError
from mcmodels.halfweights import HalfHead, HalfLinear
from mcmodels.kvcache import MIN_ROOM, GrowingCache, GrowingLayer


def _steps(base, cache, ids, start):
    """Logits of feeding ``ids`` one position at a time from position ``start``."""
    out = []
    for k, i in enumerate(ids):
        pos = torch.tensor([[start + k]])
        o = base.forward(base.embed(torch.tensor([[i]])), pos, cache=cache, last_k=1)
        out.append(o.logits[0, -1])
    return torch.stack(out)


def test_growing_cache_matches_transformers_cache_through_growth_and_crops(tiny):
    """Past the first buffer (MIN_ROOM) and after crops that the next steps overwrite, every
    logit equals what transformers' own DynamicCache gives."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 250, (MIN_ROOM + 40,), generator=g).tolist()
    caches = [GrowingCache(config=tiny.model.config), DynamicCache(config=tiny.model.config)]
    assert all(isinstance(la, GrowingLayer) for la in caches[0].layers)
    got = []
    with torch.no_grad():
        for cache in caches:
            first = tiny.forward(tiny.embed(torch.tensor([ids[:200]])), torch.arange(200)[None],
                                 cache=cache, last_k=1).logits[0, -1]  # fmt: skip
            a = _steps(tiny, cache, ids[200:], 200)  # grows past MIN_ROOM
            tiny.crop_cache(cache, 150)  # a refocus drops the tail ...
            b = _steps(tiny, cache, ids[::-1][:30], 150)  # ... and new positions overwrite it
            tiny.crop_cache(cache, 100)
            c = _steps(tiny, cache, ids[:5], 100)
            got.append((first, a, b, c, tiny.cache_length(cache)))
    for mine, theirs in zip(got[0], got[1], strict=True):
        if isinstance(mine, int):
            assert mine == theirs == 105
        else:
            assert torch.allclose(mine, theirs, atol=1e-5)


def test_growing_cache_batch_reshuffles_move_the_buffers_with_the_views(tiny):
    """After a batch select, the next step writes where the kept rows' keys are."""
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(3, 250, (2, 20), generator=g)
    mine, theirs = GrowingCache(config=tiny.model.config), DynamicCache(config=tiny.model.config)
    with torch.no_grad():
        for cache in (mine, theirs):
            tiny.forward(tiny.embed(ids), torch.arange(20)[None].expand(2, -1), cache=cache)
            cache.batch_repeat_interleave(2)  # 4 rows
            cache.batch_select_indices(torch.tensor([3, 0]))
            cache.reorder_cache(torch.tensor([0, 1]))  # rows now (b, a): not the start order
        nxt = tiny.embed(torch.tensor([[5], [6]]))
        pos = torch.tensor([[20], [20]])
        a = tiny.forward(nxt, pos, cache=mine, last_k=1).logits
        b = tiny.forward(nxt, pos, cache=theirs, last_k=1).logits
    assert torch.allclose(a, b, atol=1e-5) and mine.get_seq_length() == 21


def test_growing_cache_refuses_a_positive_crop(tiny):
    cache = GrowingCache(config=tiny.model.config)
    tiny.forward_ids([5, 6, 7], cache=cache)
    with pytest.raises(ValueError):
        cache.crop(2)


def test_fp16_answering_copy_leaves_the_model_alone_and_answers_close_to_it(tiny):
    half = tiny.answering("fp16")
    assert tiny.answering("fp16") is half and tiny.answering("fp32") is tiny
    assert half.answering("fp32") is tiny
    # the original keeps fp32 nn.Linear projections (training and dense keys read it)
    assert all(p.dtype == torch.float32 for p in tiny.model.parameters())
    kinds = {n: type(m) for n, m in half.model.named_modules()}
    assert kinds["lm_head"] is HalfHead
    assert sum(k is HalfLinear for k in kinds.values()) == 7 * tiny.n_layers
    ids = list(range(10, 90))
    with torch.no_grad():
        a = tiny.forward_ids(ids).logits
        b = half.forward_ids(ids).logits
        assert torch.allclose(a, b, atol=2e-3)
        assert not torch.equal(a, b)  # it does round (the tiny model's weights are not fp16)
        # a decode step: one position, the fp16 matrix-vector path
        one = tiny.forward_ids(ids[:40], last_k=1)
        two = half.forward_ids(ids[:40], last_k=1)
        for k in range(40, 60):
            pos = torch.tensor([[k]])
            one = tiny.forward_ids([ids[k]], pos, cache=one.cache, last_k=1)
            two = half.forward_ids([ids[k]], pos, cache=two.cache, last_k=1)
            assert torch.allclose(one.logits, two.logits, atol=2e-3)
    assert half.binding() == tiny.binding()  # the same model, as far as a tree is concerned


def test_half_head_gives_the_highest_logits_exactly():
    """The logits a greedy choice reads are fp32's; the rest are fp16 approximations."""
    g = torch.Generator().manual_seed(1)
    lin = torch.nn.Linear(64, 1000, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(1000, 64, generator=g))
    head = HalfHead(lin, exact=16)
    x = torch.randn(1, 1, 64, generator=g)
    with torch.no_grad():
        want, got = lin(x).reshape(-1), head(x).reshape(-1)
    top = want.topk(16).indices
    assert torch.equal(got[top], want[top])
    assert int(got.argmax()) == int(want.argmax())
    assert torch.allclose(got, want, atol=0.05) and not torch.equal(got, want)


def test_answering_refuses_an_unknown_kind(tiny):
    with pytest.raises(ModelError, match="fp16"):
        tiny.answering("int4")
