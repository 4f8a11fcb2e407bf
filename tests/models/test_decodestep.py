"""The lean decode step computes what transformers' general forward computes."""

from __future__ import annotations

import copy

import pytest
import torch

from mcmodels.base import BaseLM, ByteTokenizer
from mcmodels.decodestep import DecodeStep
from mcmodels.halfweights import HalfLinear
from mcmodels.kvcache import GrowingCache


def _general(base: BaseLM, embed, pos: int, cache):
    """One position through transformers' own forward (the path the step replaces)."""
    out = base.model(
        inputs_embeds=embed,
        position_ids=torch.tensor([[pos]]),
        past_key_values=cache,
        use_cache=True,
        cache_position=torch.tensor([pos]),
        logits_to_keep=1,
    )
    return out.logits


def _prefilled(base: BaseLM, n: int, seed: int = 0) -> tuple[GrowingCache, list[int]]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 250, (n,), generator=g).tolist()
    cache = GrowingCache(config=base.model.config)
    with torch.no_grad():
        base.forward(base.embed(torch.tensor([ids])), torch.arange(n)[None], cache=cache)
    return cache, ids


def _compare_steps(base: BaseLM, n_prefill: int = 40, n_steps: int = 12, atol: float = 1e-5):
    """Decode ``n_steps`` greedy positions both ways from one prefilled cache; every logit and
    every cached key and value agree."""
    step = DecodeStep.of(base.model)
    assert step is not None
    cache, ids = _prefilled(base, n_prefill)
    mine, theirs = cache, copy.deepcopy(cache)
    tok = ids[-1]
    with torch.no_grad():
        for k in range(n_steps):
            pos = n_prefill + k
            e = base.embed(torch.tensor([[tok]]))
            a = step(e, pos, mine)
            b = _general(base, e, pos, theirs)
            assert a.shape == b.shape == (1, 1, base.vocab_size)
            assert torch.allclose(a, b, atol=atol), (k, (a - b).abs().max())
            tok = int(b[0, -1].argmax())
    for la, lb in zip(mine.layers, theirs.layers, strict=True):
        assert la.keys.shape == lb.keys.shape
        assert torch.allclose(la.keys, lb.keys, atol=atol)
        assert torch.allclose(la.values, lb.values, atol=atol)


def test_step_equals_general_forward_fp32(tiny):
    _compare_steps(tiny)


def test_step_equals_general_forward_with_fp16_projections(tiny):
    """The answering copy: joined fp16 projections give what separate ones give; the original
    modules' weights become views of the joined matrix, so their values are unchanged and a
    prefill (several positions, through the modules) still computes the same."""
    half = tiny.answering("fp16")
    _, ids = _prefilled(half, 30)
    before = half.model.model.layers[0].self_attn.k_proj.weight16.clone()
    with torch.no_grad():
        ref = half.model(inputs_embeds=half.embed(torch.tensor([ids])), use_cache=False).logits
    _compare_steps(half, atol=1e-4)
    k_proj = half.model.model.layers[0].self_attn.k_proj
    assert isinstance(k_proj, HalfLinear)
    assert k_proj.weight16.data_ptr() != before.data_ptr()  # a view into the joined matrix ...
    assert torch.equal(k_proj.weight16, before)  # ... holding the same values
    with torch.no_grad():
        again = half.model(inputs_embeds=half.embed(torch.tensor([ids])), use_cache=False).logits
    assert torch.equal(ref, again)


def test_forward_takes_the_step_for_one_position_and_agrees_through_crops(tiny):
    """BaseLM.forward of one position into a GrowingCache uses the step; after a crop (a
    refocus) the step writes over the cropped positions exactly as the general forward does."""
    cache, ids = _prefilled(tiny, 50, seed=3)
    other = copy.deepcopy(cache)
    with torch.no_grad():
        for c in (cache, other):
            tiny.crop_cache(c, 35)
        for k, tok in enumerate(ids[:6]):
            e = tiny.embed(torch.tensor([[tok]]))
            a = tiny.forward(e, torch.tensor([[35 + k]]), cache=cache, last_k=1).logits
            b = _general(tiny, e, 35 + k, other)
            assert torch.allclose(a, b, atol=1e-5)
    assert tiny.cache_length(cache) == tiny.cache_length(other) == 41


def test_generate_writes_what_the_general_forward_writes(tiny):
    """Greedy decoding with the runtime's guards: the same tokens through either path."""
    from mcmodels.decoding import Guard

    seq = [tiny.tokenizer.bos_id, *b"remember the number 4821 and "]
    got = tiny.generate(seq, max_new_tokens=24, weights="fp32", stop_ids=[])
    guard = Guard()
    with torch.no_grad():
        out = tiny.model(input_ids=torch.tensor([seq]), use_cache=True)
        for _ in range(24):
            guard.push(nxt := guard.pick(out.logits[0, -1]))
            if guard.done(tiny.tokenizer.decode(guard.out, skip_special=True)):
                break
            out = tiny.model(input_ids=torch.tensor([[nxt]]), past_key_values=out.past_key_values,
                             use_cache=True)  # fmt: skip
    assert len(got) > 4
    assert got == guard.out


def _qwen_shaped(seed: int = 0) -> BaseLM:
    """A tiny Qwen2 model: biases on the query, key and value projections."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = ByteTokenizer()
    cfg = Qwen2Config(
        vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=False, attn_implementation="sdpa",
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(cfg)
        for layer in model.model.layers:  # random init leaves biases zero: make them count
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                torch.nn.init.normal_(proj.bias, std=0.5)
    return BaseLM(model, tok, name="tiny-qwen2", device=torch.device("cpu"), dtype=torch.float32)


@pytest.mark.parametrize("weights", ["fp32", "fp16"])
def test_step_with_projection_biases(weights):
    base = _qwen_shaped().answering(weights)
    _compare_steps(base, atol=1e-4)


def test_step_refuses_what_it_would_not_compute(tiny):
    scaled = copy.deepcopy(tiny.model)
    scaled.model.rotary_emb.rope_type = "dynamic"  # length-dependent frequencies
    assert DecodeStep.of(scaled) is None
    gelu = copy.deepcopy(tiny.model)
    gelu.config.hidden_act = "gelu"
    assert DecodeStep.of(gelu) is None
    windowed = copy.deepcopy(tiny.model)
    windowed.config.sliding_window = 16
    assert DecodeStep.of(windowed) is None
    assert DecodeStep.of(torch.nn.Linear(2, 2)) is None
