"""BM25 block index: words, incremental equals one-shot, exact hits, stored form."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mcmodels.tokenizer import ByteTokenizer
from mcruntime.lexical import (
    BlockTerms,
    LexicalIndex,
    QueryTerms,
    block_terms,
    forms,
    query_terms,
    stem,
    term_ids,
    words,
)
from mcruntime.retrieval import rrf

TOK = ByteTokenizer()


def dec(ids):
    return TOK.decode([int(i) for i in ids], skip_special=True)


def test_words_normalise_and_split_identifiers():
    assert words("The MAX_new_tokens default is 256, v1.18.3-2!") == [
        "the", "max_new_tokens", "max", "new", "tokens", "default", "is", "256", "v1", "18", "3", "2",
    ]  # fmt: skip
    # stop words never make a query on their own
    assert len(query_terms("What is the code that I told you?")) == 1  # "code"


def test_a_question_word_matches_the_forms_that_share_its_stem():
    assert {"researching", "researched", "researcher"} <= set(forms("research"))
    assert {"painted", "paints", "paint"} <= set(forms("painting"))
    assert {"stopped", "stopping"} <= set(forms("stop")) and "study" in forms("studies")
    assert all(stem(f) == stem("painting") for f in forms("painting"))
    assert forms("2023") == ("2023",) and forms("max_new") == ("max_new",)
    assert forms("run") == ("run",)  # three letters or fewer: the word alone
    blocks = ["she was researching adoption agencies".ljust(32)[:32],
              "the research group met on friday".ljust(32)[:32],
              "nothing of interest was said here".ljust(32)[:32]]  # fmt: skip
    ids = np.concatenate([np.asarray(TOK.encode(b)) for b in blocks])
    idx = LexicalIndex()
    idx.add(block_terms(dec, ids, 32))
    got = dict(idx.search(query_terms("What did she research?"), 3))
    assert set(got) == {0, 1}
    plain = dict(idx.search(QueryTerms.of(["research"], conflate=False), 3))
    assert set(plain) == {1}
    # a block holding two forms of one word counts the word once, with their counts added
    both = LexicalIndex()
    both.add(
        block_terms(dec, np.asarray(TOK.encode("paint painted other words here".ljust(32))), 32)
    )
    assert both.idf(query_terms("painting")).shape == (1,)
    ((_, s2),) = both.search(query_terms("painting"), 1)
    ((_, s1),) = both.search(QueryTerms.of(["paint"], conflate=False), 1)
    assert s2 > s1


def test_a_word_cut_by_the_block_end_is_completed_from_the_next_block():
    text = "x" * 28 + " BLUEHERON flies"
    ids = np.asarray(TOK.encode(text))
    bt = block_terms(dec, ids[:32], 32, following=ids[32:])
    got = set(bt.terms[bt.offsets[0] : bt.offsets[1]].tolist())
    assert int(term_ids(["blueheron"])[0]) in got


def test_finds_the_planted_block_among_near_misses():
    rng = np.random.default_rng(0)
    filler = ["code", "vault", "the", "door", "is", "open", "red", "blue"]
    blocks = [" ".join(rng.choice(filler, size=6)) for _ in range(300)]
    blocks[137] = "the vault code is zq4471 now"
    ids = np.concatenate([np.asarray(TOK.encode(b.ljust(32)[:32])) for b in blocks])
    idx = LexicalIndex()
    idx.add(block_terms(dec, ids, 32))
    (top, score), *_ = idx.search(query_terms("What is the vault code zq4471?"), 3)
    assert top == 137 and score > 0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.integers(0, 10_000))
def test_incremental_adds_equal_one_build(cuts, seed):
    rng = np.random.default_rng(seed)
    vocab = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "7", "42"]
    n_blocks = sum(cuts)
    text = " ".join(rng.choice(vocab, size=n_blocks * 8))
    ids = np.asarray(TOK.encode(text))[: n_blocks * 32 + 8]
    n_blocks = (len(ids) - 8) // 32
    whole = LexicalIndex()
    whole.add(block_terms(dec, ids[: n_blocks * 32], 32, following=ids[n_blocks * 32 :]))
    parts = LexicalIndex()
    s = 0
    for c in cuts:
        e = min(n_blocks, s + c)
        if e > s:
            chunk = block_terms(dec, ids[s * 32 : e * 32], 32, following=ids[e * 32 :])
            parts.add(BlockTerms.from_arrays(chunk.to_arrays()))  # through the stored form
        s = e
    q = query_terms("bee fox 42")
    b1, s1 = whole.scores(q)
    b2, s2 = parts.scores(q)
    assert np.array_equal(b1, b2)
    np.testing.assert_allclose(s1, s2, rtol=1e-6)


def test_rrf_prefers_what_both_rankings_agree_on():
    fused = rrf([(1, 9.0), (2, 8.0), (3, 7.0)], [(3, 0.9), (1, 0.8), (4, 0.7)])
    assert [i for i, _ in fused][:2] == [1, 3]
