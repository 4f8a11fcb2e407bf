import pytest
import torch

import mcmodels


def test_tiny_shapes_and_identity(tiny):
    assert tiny.d_model == 64 and tiny.max_positions == 4096 and tiny.vocab_size == 261
    assert tiny.dtype == torch.float32 and tiny.device.type == "cpu"
    ids = torch.tensor([tiny.tokenizer.encode("hello")])
    e = tiny.embed(ids)
    assert e.shape == (1, 5, 64) and e.dtype == torch.float32
    out = tiny.forward(e, torch.arange(5)[None])
    assert out.logits.shape == (1, 5, 261)
    assert tiny.forward(e, torch.arange(5)[None], last_k=2).logits.shape == (1, 2, 261)
    b = tiny.binding()
    assert b["name"] == "tiny-llama-s0" and len(b["hash"]) == 64


def test_tiny_deterministic_by_seed():
    a, b, c = mcmodels.tiny_base(3), mcmodels.tiny_base(3), mcmodels.tiny_base(4)
    wa, wb, wc = (m.model.model.embed_tokens.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_embedding_path_equals_token_path(tiny):
    ids = torch.tensor([tiny.tokenizer.encode("The quick brown fox jumps.")])
    n = ids.shape[1]
    via_ids = tiny.model(input_ids=ids).logits
    via_emb = tiny.forward(tiny.embed(ids), torch.arange(n)[None]).logits
    torch.testing.assert_close(via_emb, via_ids, rtol=1e-5, atol=1e-5)


def test_kv_cache_incremental_equals_single_pass(tiny):
    ids = torch.tensor([tiny.tokenizer.encode("incremental decoding must match one pass")])
    n = ids.shape[1]
    full = tiny.forward(tiny.embed(ids), torch.arange(n)[None]).logits
    out = tiny.forward(tiny.embed(ids[:, :10]), torch.arange(10)[None])
    steps = [out.logits]
    cache = out.cache
    for t in range(10, n):
        o = tiny.forward(tiny.embed(ids[:, t : t + 1]), torch.tensor([[t]]), cache=cache)
        cache = o.cache
        steps.append(o.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-5)
    assert tiny.cache_length(cache) == n


def test_crop_then_continue_equals_recompute(tiny):
    a = tiny.tokenizer.encode("shared prefix then branch one")
    b = tiny.tokenizer.encode(" and a different branch two")
    keep = 13
    out = tiny.forward_ids(a)
    cache = tiny.crop_cache(out.cache, keep)
    assert tiny.cache_length(cache) == keep
    cont = tiny.forward_ids(b, cache=cache)
    ref = tiny.forward_ids(a[:keep] + b).logits[:, keep:]
    torch.testing.assert_close(cont.logits, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(mcmodels.ModelError):
        tiny.crop_cache(cache, 10_000)


def test_gist_like_positions_are_contiguous_over_entries(tiny):
    # a gist takes one position: any embedding at any allowed position runs
    e = torch.randn(2, 7, 64)
    out = tiny.forward(e, torch.arange(7)[None].expand(2, -1), use_cache=False)
    assert out.logits.shape == (2, 7, 261) and out.cache is None


def test_positions_past_trained_range_are_refused(tiny):
    e = tiny.embed(torch.tensor([[1, 2]]))
    with pytest.raises(mcmodels.PositionError):
        tiny.forward(e, torch.tensor([[4095, 4096]]))
    with pytest.raises(mcmodels.PositionError):
        tiny.forward(e, torch.tensor([[-1, 0]]))
    assert issubclass(mcmodels.PositionError, mcmodels.ModelError)
    assert mcmodels.ModelError.exit_code == 1


def test_byte_tokenizer_roundtrip_and_specials(tiny):
    tok = tiny.tokenizer
    s = "héllo <|im_start|>user\nwörld<|im_end|>"
    ids = tok.encode(s, special=True)
    assert tok.decode(ids) == s
    assert tok.eos_id in ids and tok.eos_id in tok.special_ids
    assert tok.bos_id is not None and tok.decode(ids, skip_special=True) == "héllo user\nwörld"
    # without special=True the markers are plain text: ingested documents cannot end a turn
    plain = tok.encode(s)
    assert not set(plain) & tok.special_ids and tok.decode(plain) == s


def test_chat_parts_rebuild_chat_ids(tiny):
    tok = tiny.tokenizer
    parts = tok.chat_parts(system="You remember.")
    q = tok.encode("What is the code?")
    built = parts.prefix + parts.before_user + q + parts.after_user
    ref = tok.chat_ids(
        [
            {"role": "system", "content": "You remember.\n"},
            {"role": "user", "content": "What is the code?"},
        ]
    )
    assert built == ref
    assert tok.decode(parts.after_user).endswith("<|im_start|>assistant\n")
    assert tok.eos_id in parts.end_ids


def test_generate_runs(tiny):
    out = tiny.generate(tiny.tokenizer.encode("abc"), max_new_tokens=5)
    assert len(out) <= 5


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(mcmodels.ModelNotFoundError):
        mcmodels.load_base(str(tmp_path / "nope"))
    with pytest.raises(mcmodels.ModelNotFoundError):
        mcmodels.load_base(str(tmp_path))  # a folder without config.json


def test_attentions_from_the_eager_kernel_and_back(tiny):
    x = tiny.embed(torch.randint(0, 255, (1, 12))).float()
    pos = torch.arange(12)[None]
    before = tiny.forward(x, pos, use_cache=False).logits
    att = tiny.attentions(x, pos)
    assert len(att) == tiny.n_layers and att[0].shape[-2:] == (12, 12)
    rows = att[0][0].sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)  # each query's weights
    assert torch.all(att[0][0].triu(1) == 0)  # causal
    assert tiny.attention == "sdpa"
    assert torch.allclose(tiny.forward(x, pos, use_cache=False).logits, before, atol=1e-5)


def test_weights_hash_tells_models_of_one_name_apart():
    a, b = mcmodels.tiny_base(0), mcmodels.tiny_base(1)
    assert a.weights_hash() == mcmodels.tiny_base(0).weights_hash()
    assert a.weights_hash() != b.weights_hash() and len(a.weights_hash()) == 64
