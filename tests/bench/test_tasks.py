"""The generated tasks: deterministic, at the requested size and depth, answerable, varied."""

import random

import pytest

from bench import tasks


def encode(text: str) -> list[int]:  # a byte tokenizer is enough to measure sizes here
    return list(text.encode())


def _paragraph(rng: random.Random) -> str:
    return " ".join(rng.choice(tasks.WORDS) for _ in range(30))


_rng = random.Random(0)
TEXTS = ["\n\n".join(_paragraph(_rng) for _ in range(8)) for _ in range(6)]


@pytest.fixture(scope="module")
def hay():
    return tasks.Haystack(TEXTS, encode)


@pytest.mark.parametrize("kind", sorted(tasks.GENERATORS))
def test_tasks_are_deterministic_and_sized(hay, kind):
    gen = tasks.GENERATORS[kind]
    a, b = gen(hay, 4000, 7), gen(hay, 4000, 7)
    assert (a.history, a.question, a.answers) == (b.history, b.question, b.answers)
    assert gen(hay, 4000, 8).history != a.history
    assert 4000 * 0.9 <= a.n_tokens <= 4000 * 1.25
    assert a.n_tokens == len(encode(a.history))
    for ans in a.answers:
        assert ans in a.history
    assert a.score(" ".join(a.answers)) == 1.0
    assert a.score("nothing useful") == 0.0


def test_passkey_depth_is_where_asked(hay):
    for depth in (0.0, 0.3, 0.7, 1.0):
        t = tasks.passkey(hay, 20000, depth, seed=3)
        at = t.history.index("The pass key is")
        assert abs(at / len(t.history) - depth) < 0.05
        assert abs(t.depths[0] - depth) < 0.05


def test_haystack_is_varied(hay):
    t = tasks.passkey(hay, 8000, 0.5, seed=1)
    data = t.history.encode()
    blocks = [data[i : i + 32] for i in range(0, len(data) - 32, 32)]
    assert len(set(blocks)) > 0.9 * len(blocks)


def test_world_answer_is_the_last_move(hay):
    t = tasks.world(hay, 6000, seed=5)
    person = t.meta["person"]
    moves = [s for s in t.history.split("\n\n") if s.startswith(person + " ")]
    assert moves and moves[-1].rstrip(".").endswith(t.answers[0])


def test_partial_credit_for_several_answers(hay):
    t = tasks.multivalue(hay, 3000, seed=2)
    assert t.score(t.answers[0]) == pytest.approx(1 / len(t.answers))
