"""The index cost benchmark end to end on the tiny model (what it measures, not how fast)."""

import random

import torch

import mcmodels
from bench import index_cost


def test_index_cost_shape(tmp_path):
    torch.set_num_threads(1)
    rng = random.Random(0)
    words = "amber river quiet ledger copper lantern meadow tundra violet stone".split()
    texts = ["\n\n".join(" ".join(rng.choice(words) for _ in range(60)) for _ in range(60))]
    r = index_cost.run(20000, dense_tokens=512, commit_tokens=4096, base=mcmodels.tiny_base(0),
                       texts=texts, workdir=str(tmp_path))  # fmt: skip
    assert r["tokens"] == 20000
    assert r["bm25_tokens_stored"] == 2 * 8192  # the complete epochs
    assert 0 < r["bm25_bytes_per_token"] < 15
    assert r["open_index_s"]["median"] > 0 and r["search_ms"]["median"] > 0
    assert r["dense"]["bytes_per_token_fp16"] == mcmodels.tiny_base(0).d_model * 2 / 32
    assert "| BM25 index stored |" in index_cost.table(r)
