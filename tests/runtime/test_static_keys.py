"""Static meaning keys (mcruntime/static_keys.py), their fusion with BM25, and what a reader is
shown: on the tiny test model, so these test the machinery, not the meaning (the probe does)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mcmodels
from mcruntime import Session, SessionConfig, static_keys
from mcruntime.binding import NEW_TREE_RETRIEVAL
from mcruntime.dense import DenseSpec
from mcruntime.reading import Passage, choose
from mcruntime.retrieval import interleave
from mcruntime.static_keys import StaticSpec, spec_from_id


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MC_CACHE", str(tmp_path / "cache"))


def test_keys_are_unit_norm_per_block_and_need_no_context(base):
    ids = np.random.default_rng(0).integers(32, 127, size=1000)
    spec = StaticSpec()
    keys = spec.keys(base, ids)
    assert keys.shape == (1000 // 32, base.d_model) and keys.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(keys, axis=1), 1.0, atol=1e-5)
    # a pure function of each block's tokens: cut anywhere on a block boundary, same keys
    parts = np.concatenate([spec.keys(base, ids[:96]), spec.keys(base, ids[96:992])])
    np.testing.assert_array_equal(parts, keys)
    assert spec.keys(base, ids[:31]).shape == (0, base.d_model)
    # a question made of one block's tokens is closest to that block
    q = spec.query(base, ids[5 * 32 : 6 * 32])
    assert int(np.argmax(keys @ q)) == 5
    with pytest.raises(ValueError):
        spec.query(base, [])


def test_the_table_is_cached_checked_and_rebuilt_when_damaged(base, tmp_path):
    spec = StaticSpec(layer=1)
    path = static_keys.table_path(base, spec)
    assert str(path).startswith(str(tmp_path / "cache"))
    rows = static_keys.load_or_build(base, spec)
    assert path.exists() and rows.shape == (base.vocab_size, base.d_model)
    np.testing.assert_array_equal(static_keys.load_or_build(base, spec), rows)  # read back
    raw = bytearray(path.read_bytes())
    raw[-7] ^= 0xFF  # a flipped bit in the rows: the sha256 no longer checks
    path.write_bytes(bytes(raw))
    np.testing.assert_array_equal(static_keys.load_or_build(base, spec), rows)
    path.write_bytes(b"not a safetensors file")
    np.testing.assert_array_equal(static_keys.load_or_build(base, spec), rows)


def test_a_spec_is_found_again_from_the_id_a_tree_records(base):
    for spec in (StaticSpec(), StaticSpec(layer=1, a=3e-5)):
        again = spec_from_id(spec.id(base))
        assert isinstance(again, StaticSpec) and again.id(base) == spec.id(base)
    dense = DenseSpec(layer=1, context=64, window=128)
    again = spec_from_id(dense.id(base))
    assert isinstance(again, DenseSpec) and again.id(base) == dense.id(base)
    assert spec_from_id(None) == StaticSpec()
    with pytest.raises(ValueError):
        spec_from_id("gist-something")


def test_interleave_takes_the_best_of_each_list_in_turn():
    words = [(7, 9.0), (3, 5.0), (4, 1.0)]
    meaning = [(1, 0.5), (7, 0.4), (8, 0.3)]
    out = interleave(words, meaning)
    assert [i for i, _, _ in out] == [7, 1, 3, 4, 8]
    assert [v for _, _, v in out] == ["both", "meaning", "words", "words", "meaning"]
    scores = [s for _, s, _ in out]
    assert scores == sorted(scores, reverse=True)
    assert interleave([], []) == [] and [i for i, _, _ in interleave([], meaning)] == [1, 7, 8]


def test_a_passage_found_by_meaning_is_not_dropped_for_lacking_the_questions_words():
    def p(start, text, via="words"):
        return Passage(start, start + 10, 1.0, "doc", text, via=via)

    strong = p(0, "The vault code is zulu7731.")
    weak = p(10, "Nothing here about it.")
    meant = p(20, "The safe opens with the number written on the card.", via="meaning")

    def weigh(text):
        return 3.0 if "vault" in text else 0.5 if "about" in text else 0.0

    chosen = choose([weak, meant, strong], weigh, k=3, keep_ratio=0.75)
    # the weak word match falls below the ratio; the meaning hit stays, the best goes last
    assert [c.start for c in chosen] == [20, 0]
    assert chosen[0].report()["via"] == "meaning"


def test_a_new_tree_gets_meaning_keys_and_an_old_one_keeps_its_kind(base, tmp_path):
    torch.manual_seed(0)
    g = mcmodels.GistNet.for_base(base)
    rng = np.random.default_rng(1)
    words = ["kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo"]
    text = " ".join(rng.choice(words, size=1500))
    s = Session(str(tmp_path / "new.mc"), model=base, gistnet=g, window=512)
    s.append_ids(base.tokenizer.encode(text), source="x")
    assert s.tree.binding["retrieval"]["kind"] == NEW_TREE_RETRIEVAL == "hybrid"
    assert s.tree.binding["retrieval"]["dense"] == StaticSpec().id(base)
    assert s.index.dense.count(1) == s.index.ready()  # every indexed block has its key
    hits = s.search(base.tokenizer.encode("papa quebec?"))
    assert hits and {h.via for h in hits} <= {"words", "meaning", "both"}
    old = Session(
        str(tmp_path / "old.mc"), model=base, gistnet=g, window=512,
        config=SessionConfig(retrieval="bm25"),
    )  # fmt: skip
    old.append_ids(base.tokenizer.encode(text), source="x")
    again = Session(str(tmp_path / "old.mc"), model=base, gistnet=g, window=512)
    assert again.index.kind == "bm25" and again.tree.binding["retrieval"]["kind"] == "bm25"


def test_install_builds_the_table_once_for_a_model(capsys):
    assert static_keys.main(["tiny"]) == 0
    out = capsys.readouterr().out
    assert "meaning-key table" in out and "ready" in out
    path = out.split("meaning-key table ")[1].split(" ready")[0]
    assert path.endswith(".safetensors") and "tiny" in path
