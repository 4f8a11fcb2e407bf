"""Training-free dense block keys (mcruntime/dense.py) on the tiny test model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mcmodels
from mcruntime import dense
from mcruntime.dense import DenseSpec, block_keys, centre, pooled_blocks, query_key

SPEC = DenseSpec(context=64, window=128)  # small windows: several rows and batches per call


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(0).integers(32, 127, size=1000)


def test_shapes_and_norms(base, ids):
    keys = block_keys(base, ids, SPEC)
    assert keys.shape == (1000 // 32, base.d_model)  # the trailing partial block is ignored
    assert keys.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(keys, axis=1), 1.0, atol=1e-5)
    assert block_keys(base, ids[:31], SPEC).shape == (0, base.d_model)
    assert block_keys(base, ids[:64]).shape == (2, base.d_model)  # default spec


def test_deterministic_and_batch_independent(base, ids):
    a = block_keys(base, ids, SPEC, batch=4)
    b = block_keys(base, ids, SPEC, batch=4)
    c = block_keys(base, ids, SPEC, batch=1)  # no padding at all
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-5)


def test_incremental_equals_one_call(base, ids):
    whole = block_keys(base, ids, SPEC)
    cut = 3 * SPEC.window  # parts that are multiples of the window give the same windows
    first = block_keys(base, ids[:cut], SPEC)
    second = block_keys(base, ids[cut:], SPEC, start_context=ids[:cut])
    np.testing.assert_allclose(np.concatenate([first, second]), whole, atol=1e-5)
    # only the last spec.context tokens of start_context matter
    again = block_keys(base, ids[cut:], SPEC, start_context=ids[cut - SPEC.context : cut])
    np.testing.assert_allclose(again, second, atol=1e-6)
    # a cut elsewhere still gives one key per block
    odd = (
        block_keys(base, ids[:320], SPEC),
        block_keys(base, ids[320:], SPEC, start_context=ids[:320]),
    )
    assert sum(len(k) for k in odd) == len(whole)


def test_matches_the_models_own_forward(base, ids):
    """One window without context: the pooled states equal HF's hidden states after the sink."""
    spec = DenseSpec(layer=1, context=0, window=128)
    raw = pooled_blocks(base, ids[:128], spec)[1]
    row = torch.tensor([[base.tokenizer.sep_id, *ids[:128].tolist()]])
    with torch.no_grad():
        hs = base.model(input_ids=row, output_hidden_states=True).hidden_states
    want = hs[1][0, 1:].reshape(4, 32, -1).mean(1).numpy()
    np.testing.assert_allclose(raw, want, atol=1e-4)


def test_eager_attention_matches_sdpa(ids):
    eager = mcmodels.tiny_base(0)
    eager.model.set_attn_implementation("eager")
    sdpa = mcmodels.tiny_base(0)
    a = pooled_blocks(sdpa, ids[:500], SPEC)[1]
    b = pooled_blocks(eager, ids[:500], SPEC)[1]
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_runs_only_the_first_layers(base, ids):
    calls = {i: 0 for i in range(base.n_layers)}
    other = {"norm": 0, "lm_head": 0}
    hooks = [
        layer.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
        for i, layer in enumerate(base.model.model.layers)
    ]
    hooks.append(
        base.model.model.norm.register_forward_hook(lambda *_: other.__setitem__("norm", 1))
    )
    hooks.append(
        base.model.lm_head.register_forward_hook(lambda *_: other.__setitem__("lm_head", 1))
    )
    try:
        dense.neutral_stats(base, DenseSpec(layer=1, context=64, window=128))  # cached first
        calls.update({i: 0 for i in calls})
        block_keys(base, ids[:512], DenseSpec(layer=1, context=64, window=128), batch=4)
        query_key(base, base.tokenizer.encode("who looks after it?"), DenseSpec(layer=1))
    finally:
        for h in hooks:
            h.remove()
    assert calls[0] >= 2 and calls[1] == 0
    assert other == {"norm": 0, "lm_head": 0}


def test_layer_zero_is_the_embeddings(base, ids):
    raw = pooled_blocks(base, ids[:64], DenseSpec(layer=0, context=0, window=64))[0]
    emb = base.embed(torch.as_tensor(ids[:64])).reshape(2, 32, -1).mean(1).numpy()
    np.testing.assert_allclose(raw, emb, atol=1e-6)


def test_query_key(base):
    q = base.tokenizer.encode("Who looks after the frobnicator?")
    k = query_key(base, q, SPEC)
    assert k.shape == (base.d_model,) and k.dtype == np.float32
    assert abs(float(np.linalg.norm(k)) - 1.0) < 1e-5
    np.testing.assert_array_equal(k, query_key(base, q, SPEC))
    for form in dense.QUERY_FORMS:
        assert query_key(base, q, SPEC, form=form).shape == (base.d_model,)
    with pytest.raises(ValueError):
        query_key(base, [], SPEC)


def test_centre_and_stats(base):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 8)).astype(np.float32) + 10.0
    mean, scale = dense.block_stats(x)
    c = centre(x, mean, scale)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)
    assert abs(float((c @ c.T).mean())) < 0.1  # the common direction is gone
    assert (scale >= np.median(x.std(0)) - 1e-6).all()
    assert not np.isnan(centre(mean[None], mean)).any()  # a zero row stays zero
    m1, s1 = dense.neutral_stats(base, SPEC)
    m2, _ = dense.neutral_stats(base, SPEC)
    assert m1 is m2 and m1.shape == s1.shape == (base.d_model,)
    assert (s1 > 0).all()


def test_spec_id_and_checks(base):
    a = DenseSpec().id(base)
    assert a == DenseSpec(layer=base.n_layers // 2).id(base)
    assert base.name in a and "L1" in a
    assert len({a, DenseSpec(layer=2).id(base), DenseSpec(context=0).id(base)}) == 3
    assert DenseSpec(pool="rms").id(base) != a
    for bad in (DenseSpec(layer=9), DenseSpec(window=100), DenseSpec(pool="max")):
        with pytest.raises(ValueError):
            bad.check(base)
