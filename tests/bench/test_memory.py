"""The memory benchmark end to end on the tiny model (what it measures, not how well)."""

import json
import random

import numpy as np
import pytest
import torch

import mcmodels
from bench import memory, needles
from bench.memory import MemoryConfig
from bench.tasks import Haystack


@pytest.fixture(scope="module")
def texts():
    rng = random.Random(0)
    words = "amber river quiet ledger copper lantern meadow tundra violet stone".split()
    return ["\n\n".join(" ".join(rng.choice(words) for _ in range(40)) for _ in range(30))]


@pytest.fixture(scope="module")
def result(tmp_path_factory, texts):
    torch.set_num_threads(1)
    cfg = MemoryConfig(
        lengths=(1500,),
        chat_lengths=(1500,),
        oneform_lengths=(1500,),
        seeds=1,
        window=512,
        max_new_tokens=4,
        systems=memory.SYSTEMS,
        workdir=str(tmp_path_factory.mktemp("trees")),
    )
    return memory.run(cfg, base=mcmodels.tiny_base(0), texts=texts, progress=lambda s: None)


def test_needles_know_where_they_are(texts):
    base = mcmodels.tiny_base(0)
    hay = Haystack(texts, base.tokenizer.encode)
    inst = needles.documents(hay, 3000, seed=5)
    assert [p.task for p in inst.probes] == ["passkey", "facts", "paraphrase"]
    for p in inst.probes:
        s, e = p.span
        assert p.answer in base.tokenizer.decode(inst.ids[s:e])
    chat = needles.conversation(hay, 3000, seed=5)
    assert [src for src, _, _ in chat.segments[:2]] == ["chat:user", "chat:assistant"]
    assert chat.segments[-1][2] == len(chat.ids)
    for p in chat.probes:
        assert p.answer in base.tokenizer.decode(chat.ids[p.span[0] : p.span[1]])


def test_every_system_answers_every_probe(result):
    rows = result["rows"]
    assert {r["system"] for r in rows} == set(memory.SYSTEMS)
    for system in memory.SYSTEMS:
        got = sorted(r["task"] for r in rows if r["system"] == system)
        assert got == sorted(["passkey", "facts", "paraphrase", "chat", "chat", "oneform"])
    # the oracle is shown the answer by construction; the RAG baseline's BM25 finds the
    # passkey sentence in a 1.5k history of ten filler words
    assert all(r["found"] for r in rows if r["system"] == "oracle")
    assert all(r["found"] for r in rows if r["system"] in ("rag", "mc") and r["task"] == "passkey")


def test_a_text_reader_answers_for_every_system_that_has_a_text_form(tmp_path, texts):
    """rag, oracle, trunc and mc through one text reader (the tiny model stands in)."""
    cfg = MemoryConfig(
        lengths=(1500,),
        chat_lengths=(1500,),
        oneform_lengths=(),
        seeds=1,
        window=512,
        max_new_tokens=4,
        systems=("trunc", "rag", "mc", "oracle"),
        workdir=str(tmp_path),
        reader="tiny",
    )
    res = memory.run(cfg, base=mcmodels.tiny_base(0), texts=texts, progress=lambda s: None)
    assert res["reader"] == "tiny"
    rows = res["rows"]
    assert {r["system"] for r in rows} == {"trunc", "rag", "mc", "oracle"}
    assert all(r["found"] for r in rows if r["system"] == "oracle")
    assert all(r["found"] for r in rows if r["system"] in ("rag", "mc") and r["task"] == "passkey")


def test_oneform_facts_differ_in_one_word(texts):
    base = mcmodels.tiny_base(0)
    hay = Haystack(texts, base.tokenizer.encode)
    for seed in (4, 5):
        inst = needles.oneform(hay, 4000, seed)
        (p,) = inst.probes
        assert p.task == "oneform" and p.answer in base.tokenizer.decode(
            inst.ids[p.span[0] : p.span[1]]
        )
        text = base.tokenizer.decode(inst.ids)
        form = needles.ONE_FORM[seed % len(needles.ONE_FORM)][0].split("{w}")[0]
        assert text.count(form) == (3 if seed % 2 == 0 else 5)


def test_summary_and_table(result, tmp_path):
    out = tmp_path / "m.json"
    memory.save(result, str(out))
    back = json.loads(out.read_text())
    cell = back["summary"]["chat"]["rag"]["1500"]
    assert cell["n"] == 2 and 0 <= cell["correct"] <= 2
    md = out.with_suffix(".md").read_text()
    assert "| mc |" in md and "paraphrase" in md
    assert "| chat | mc | **" in memory.compact(result) and "| facts | oracle | " in memory.compact(
        result
    )


def test_raw_index_ranks_the_planted_chunk_first():
    base = mcmodels.tiny_base(0)
    text = "stone river " * 200 + "the harbour code is 4711. " + "meadow lantern " * 200
    ids = np.asarray(base.tokenizer.encode(text))
    idx = memory.RawIndex(base, ids)
    top = idx.ranked("What is the harbour code?", 1)[0]
    assert "harbour" in base.tokenizer.decode(ids[top * 32 : top * 32 + 40])
