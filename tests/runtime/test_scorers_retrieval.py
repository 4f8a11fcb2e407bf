"""Scorers give one finite signed score per entry; the retrieval index finds planted text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mcmodels
from mcruntime import Session, SessionConfig
from mcruntime.context import WorkingContext
from mcruntime.inherit import Inherited
from mcruntime.retrieval import Hit
from mcruntime.scorers import SCORERS, FocusView, LensScorer


@pytest.fixture(scope="module")
def sess(base):
    torch.manual_seed(0)
    g = mcmodels.GistNet.for_base(base)
    s = Session("memory://scorers.mc", model=base, gistnet=g, window=512)
    rng = np.random.default_rng(0)
    s.append_ids(rng.integers(32, 127, size=6000).tolist(), source="noise")
    return s


def view(s: Session, base) -> FocusView:
    q = base.embed(torch.tensor(base.tokenizer.encode("where is it?"))).float()
    return FocusView(
        s.focus.wc, s.entries_vectors(), q, base, s.window.vectors[: s.window.prefix_len]
    )


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_scorers_score_every_entry(sess, base, name):
    scores = SCORERS[name]()(view(sess, base))
    assert scores.shape == (sess.focus.wc.cost,)
    assert np.isfinite(scores).all()
    assert scores.max() > 0 > scores.min()  # signed: some want detail, some can give it up


def test_lensnet_scorer(sess, base):
    torch.manual_seed(0)
    lens = mcmodels.LensNet.for_base(base)
    torch.nn.init.normal_(lens.head.weight, std=0.1)
    scores = LensScorer(lens)(view(sess, base))
    assert scores.shape == (sess.focus.wc.cost,) and np.isfinite(scores).all()
    assert np.std(scores) > 0


def test_recency_prefers_new_entries(sess, base):
    scores = SCORERS["recency"]()(view(sess, base))
    assert scores[-1] > scores[0]


def test_inherited_scores_follow_ancestry():
    b = 4
    wc = WorkingContext.canonical(64, lambda lv: 64 // b**lv if lv else 64, block=b)
    scores = np.arange(wc.cost, dtype=float)
    inh = Inherited(wc.entries, scores, b)
    first = wc.entries[0]
    wc.expand(0)
    got = inh(wc.entries)
    assert (got[:b] == scores[0]).all()  # children inherit the parent's score
    assert (got[b:] == scores[1:]).all()
    # a parent never scored gets the mean of its scored descendants
    child_level = first[0] - 1
    assert inh([(first[0] + 1, 0)])[0] == pytest.approx(
        np.mean(scores[: b ** (first[0] + 1) // b ** first[0]])
    )
    assert child_level >= 0


def test_boosts_cover_the_hit_and_its_neighbours(sess):
    wc = sess.focus.wc
    hit = Hit(1, 40, 1.0)
    out = sess.index.boosts(wc, [hit])
    b = wc.block
    starts = np.asarray(wc.starts())
    touched = starts[out > 0]
    assert touched.min() < 41 * b and touched.max() < 42 * b + b
    assert (out >= 0).all() and out.max() == sess.index.boost


def test_session_with_every_scorer_answers(base):
    torch.manual_seed(0)
    g = mcmodels.GistNet.for_base(base)
    for name in (*SCORERS, "lensnet"):
        lens = mcmodels.LensNet.for_base(base) if name == "lensnet" else None
        s = Session(f"memory://every-{name}.mc", model=base, gistnet=g, lensnet=lens, window=512,
                    config=SessionConfig(scorer=name))  # fmt: skip
        s.append_ids(list(range(32, 120)) * 40, source="x")
        s.ask("hi?", max_new_tokens=2, remember=False)
        s.focus.wc.check(
            s.tree.num_nodes, budget=s.focus.config.budget, raw_recent=s.focus.config.raw_recent
        )


def test_index_is_stored_with_the_tree_and_reloaded(base, tmp_path):
    torch.manual_seed(0)
    g = mcmodels.GistNet.for_base(base)
    url = str(tmp_path / "idx.mc")
    rng = np.random.default_rng(3)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    s = Session(url, model=base, gistnet=g, window=512)
    for k in range(3):  # crosses two epochs of 8192 tokens
        text = " ".join(rng.choice(words, size=1200))
        if k == 1:
            text = text[:3000] + " the vault code is zulu7731 " + text[3000:]
        s.append_ids(base.tokenizer.encode(text), source="x")
    names = [n for n in s.tree.objects() if n.startswith("retrieval/")]
    per = s.tree.epoch // s.tree.block
    # a new tree keeps BM25 words and static meaning keys, one chunk per epoch of each
    assert len(names) == 4 and s.index.stored == {"bm25": 2 * per, s.index.dense_name: 2 * per}
    names = [n for n in names if n.startswith("retrieval/bm25/")]
    # a stored chunk holds exactly the terms of its blocks' tokens (kept from indexing, not
    # decoded again at persist)
    import io

    from mcruntime.lexical import EXTEND, BlockTerms, block_terms

    name = sorted(names)[1]
    with np.load(io.BytesIO(s.tree.read_object(name))) as z:
        stored = BlockTerms.from_arrays(z)
    ids = s.tree.tokens(per * 32, 2 * per * 32 + EXTEND)
    dec = lambda x: base.tokenizer.decode([int(i) for i in x], skip_special=True)  # noqa: E731
    fresh = block_terms(dec, ids[: per * 32], 32, following=ids[per * 32 :])
    for k, v in fresh.to_arrays().items():
        assert np.array_equal(stored.to_arrays()[k], v), k
    again = Session(url, model=base, gistnet=g, window=512, mode="r")
    assert again.index.stored == s.index.stored  # loaded, not recomputed
    assert len(again.index.lex) == len(s.index.lex) == s.index.ready()
    q = base.tokenizer.encode("what is the vault code?")
    hits = again.index.search(q, None, 3)
    assert [h.index for h in hits] == [h.index for h in s.index.search(q, None, 3)]
    text = base.tokenizer.decode(s.tree.tokens(hits[0].index * 32, hits[0].index * 32 + 40))
    assert "zulu7731" in text or "vault" in text


def test_a_query_word_in_the_source_name_counts_like_a_title(base, tmp_path):
    torch.manual_seed(0)
    g = mcmodels.GistNet.for_base(base)
    s = Session(str(tmp_path / "title.mc"), model=base, gistnet=g, window=512)
    filler = "river stone cloud amber quiet ledger violet harbor copper lantern " * 12
    s.append_ids(
        base.tokenizer.encode(filler + "the author is Ann. " + filler), source="docs/x.txt"
    )
    s.append_ids(
        base.tokenizer.encode(filler + "the author is Bob. " + filler), source="docs/argparse.py"
    )
    s.append_ids(base.tokenizer.encode(filler), source="docs/y.txt")
    (top, *_) = s.index.search(base.tokenizer.encode("Who is the author of argparse?"), None, 3)
    assert "Bob" in base.tokenizer.decode(s.tree.tokens(top.index * 32, top.index * 32 + 64))


def test_a_block_sharing_only_common_words_is_no_hit(base, tmp_path):
    torch.manual_seed(0)
    g = mcmodels.GistNet.for_base(base)
    for kind in ("bm25", "hybrid"):
        s = Session(str(tmp_path / f"cov-{kind}.mc"), model=base, gistnet=g, window=512,
                    config=SessionConfig(retrieval=kind))  # fmt: skip
        filler = "river stone cloud amber quiet ledger violet harbor copper lantern " * 12
        s.append_ids(base.tokenizer.encode(filler + "the project is late. " + filler), source="a")
        q = base.tokenizer.encode("Please remember this: my project codename is BLUEHERON.")
        # "project" alone is a small share of the statement's weight: no word hit (meaning
        # keys may still offer the nearest blocks)
        assert [h for h in s.search(q) if h.via != "meaning"] == []
        q = base.tokenizer.encode("Is the project late?")
        assert [h.via for h in s.search(q)][:1] in (["words"], ["both"])


def test_hybrid_keys_are_recorded_stored_and_picked_again(base, tmp_path):
    torch.manual_seed(0)
    g = mcmodels.GistNet.for_base(base)
    url = str(tmp_path / "hybrid.mc")
    rng = np.random.default_rng(5)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    s = Session(url, model=base, gistnet=g, window=512, config=SessionConfig(retrieval="hybrid"))
    for _ in range(2):
        s.append_ids(base.tokenizer.encode(" ".join(rng.choice(words, size=1500))), source="x")
    assert s.tree.binding["retrieval"]["kind"] == "hybrid"
    kinds = {n.split("/")[1] for n in s.tree.objects() if n.startswith("retrieval/")}
    assert kinds == {"bm25", s.index.dense_name}
    again = Session(url, model=base, gistnet=g, window=512, mode="r")  # "auto": the tree's kind
    assert again.index.kind == "hybrid" and again.index.stored == s.index.stored
    per = s.index.dense_spec.window // s.tree.block  # dense keys cover whole windows
    assert again.index.dense.count(1) == s.index.dense.count(1) == s.index.ready() // per * per
    q = base.tokenizer.encode("golf hotel echo?")
    assert [h.index for h in again.index.search(q, None, 4)] == [
        h.index for h in s.index.search(q, None, 4)
    ]


def test_inherited_scores_reach_every_level_the_tree_has():
    """A child inherits from an ancestor any number of levels up (the store allows 12), not
    only 7: score inheritance follows the tree's own depth."""
    b, top = 2, 11
    inh = Inherited([(10, 0), (0, 2**10)], np.array([0.7, -0.3]), b, top=top)
    assert inh([(0, 5)])[0] == pytest.approx(0.7)  # ten levels below its scored ancestor
    assert inh([(top, 0)])[0] == pytest.approx(0.2)  # the mean of its scored descendants
    assert inh([(0, 3 * 2**10)])[0] == 0.0  # nothing scored above or below it


def test_index_keys_are_a_function_of_the_committed_tokens(base, tmp_path):
    """However the same tokens were appended (one append, many small ones, a resume after a
    crash between a commit and its index commit), the stored keys are bit for bit the same."""
    rng = np.random.default_rng(9)
    words = ["kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo"]
    ids = base.tokenizer.encode(" ".join(rng.choice(words, size=3000)))
    cfg = SessionConfig(retrieval="hybrid")

    def stored(url):
        t = mcmodels_free_open(url)
        return {n: t.read_object(n) for n in t.objects() if n.startswith("retrieval/")}

    def build(url, cuts):
        g = mcmodels.GistNet.for_base(base, seed=0)
        s = Session(url, model=base, gistnet=g, window=512, config=cfg)
        for a, b in zip([0, *cuts], [*cuts, len(ids)], strict=True):
            s.append_ids(ids[a:b], source="x")
        return s

    one = build(str(tmp_path / "one.mc"), [])
    many = build(str(tmp_path / "many.mc"), [100, 333, 1000, 1017, 2048, 2500])
    assert stored(one.tree.url) and stored(one.tree.url) == stored(many.tree.url)
    n = one.index.dense.count(1)
    assert n == many.index.dense.count(1)
    assert np.array_equal(one.index.dense.keys(1, 0, n), many.index.dense.keys(1, 0, n))


def mcmodels_free_open(url):
    import mcstore

    return mcstore.open(url)
