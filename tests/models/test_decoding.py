"""The decoding guards: no repeated n-gram, a repeated line ends the answer, trim."""

from __future__ import annotations

import torch

from mcmodels.decoding import DecodeConfig, Guard, trim


def test_a_repeated_ngram_is_banned():
    g = Guard(DecodeConfig(ngram=3))
    for t in (5, 6, 7, 5, 6):
        g.push(t)
    logits = torch.zeros(10)
    logits[7] = 5.0  # the model wants 5 6 7 again
    assert g.pick(logits) != 7
    logits[8] = 1.0
    assert g.pick(logits) == 8


def test_a_repeated_line_ends_the_answer_and_is_trimmed():
    g = Guard()
    assert not g.done("1.18.3-2: fixed\n")
    assert g.done("1.18.3-2: fixed\n1.18.3-2: fixed\n")
    assert trim("answer\nmore\nanswer\nanswer") == "answer\nmore"


def test_generate_never_loops():
    import mcmodels

    base = mcmodels.tiny_base(0)
    out = base.generate(base.tokenizer.encode("abc abc abc"), max_new_tokens=64)
    grams = [tuple(out[i : i + 4]) for i in range(len(out) - 3)]
    assert len(grams) == len(set(grams))


def test_an_answer_ends_where_the_model_starts_the_next_turn():
    g = Guard()
    text = "The default maxsize is 128.\n\nQuestion: What is"
    assert g.done(text)
    assert trim(text) == "The default maxsize is 128."


def test_a_line_that_may_start_the_next_turn_is_held_back():
    from mcmodels.decoding import visible

    assert visible("It is 128.\n\nQuest").strip() == "It is 128."
    assert visible("It is 128.\n\nQuestion: x") == "It is 128."
    assert visible("It is 128.\nThe end") == "It is 128.\nThe end"
