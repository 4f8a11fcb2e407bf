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
    for kind in ("bm25", "hybrid"):
        assert r[kind]["tokens_stored"] == 2 * 8192  # the complete epochs
        assert r[kind]["open_s"] > 0 and r[kind]["search_ms_median"] > 0
    assert 0 < r["bm25"]["bytes_per_token"] < 15
    # meaning keys add d fp16 values per 32-token block (less after compression)
    d = mcmodels.tiny_base(0).d_model
    assert r["bm25"]["bytes_per_token"] < r["hybrid"]["bytes_per_token"]
    assert r["hybrid"]["bytes_per_token"] < r["bm25"]["bytes_per_token"] + d * 2 / 32 + 1
    assert r["ingest_tokens_per_s"]["hybrid"] > 0
    assert r["dense"]["bytes_per_token_fp16"] == d * 2 / 32
    assert "| index stored |" in index_cost.table(r)
