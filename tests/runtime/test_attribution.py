"""Who said it: a question about one named speaker that only another's words answer."""

from __future__ import annotations

import pytest

from mcmodels import readers as R
from mcruntime import Session, SessionConfig
from mcruntime import reading as RD
from mcruntime.attribution import RATIO, Said, check, named, speaker_of, weigh_turns
from tests.runtime.text import prose

PEOPLE = {"Caroline", "Melanie"}


def test_speakers_are_named_chat_sources_not_roles_or_documents():
    assert speaker_of("chat:Melanie") == "Melanie"
    assert speaker_of("chat:user") is None and speaker_of("chat:assistant") is None
    assert speaker_of("notes.txt") is None
    assert named("What did Melanie's grandma give her?", PEOPLE) == ["Melanie"]
    assert named("Did Mel go?", PEOPLE) == []  # whole words only


def test_check_speaks_only_when_the_named_person_says_nothing_that_matches():
    race = Said("Melanie", "Melanie: I ran a charity race last Saturday.", 9.0)
    q = "What did Caroline realize after her charity race?"
    got = check(q, [race, Said("Caroline", "Caroline: Hi!", 0.5)], PEOPLE)
    assert got is not None and (got.person, got.speaker) == ("Caroline", "Melanie")
    assert "holds nothing about that for Caroline" in got.answer()
    assert "charity race" in got.answer()
    # her own turn that matches half as well as the best: she may have said it
    assert check(q, [race, Said("Caroline", "Caroline: the race", RATIO * 9.0)], PEOPLE) is None
    # a turn that names her counts as hers ("Thanks, Caroline!")
    assert check(q, [race, Said("Melanie", "Caroline, you ran the race", 8.0)], PEOPLE) is None
    # the question names both, or neither, or the best match is hers or a document's
    assert check("Did Caroline see Melanie's race?", [race], PEOPLE) is None
    assert check("Who ran a charity race?", [race], PEOPLE) is None
    assert check("What did Melanie realize after her race?", [race], PEOPLE) is None
    assert check(q, [Said(None, "The charity race results", 9.0)], PEOPLE) is None
    assert check(q, [Said("Melanie", "nothing", 0.0)], PEOPLE) is None


def test_a_reply_to_a_question_is_weighed_with_it():
    """The other person asks in the question's words; the named person's reply answers: no
    misattribution (LoCoMo test: "How long did Calvin plan to stay in Japan?")."""

    def weigh(text):
        return sum(w in text for w in ("long", "stay", "Japan"))

    q = "How long did Calvin plan to stay in Japan?"
    people = {"Calvin", "Dave"}
    asked = [("Dave", "Dave: How long are you planning to stay in Japan?"),
             ("Calvin", "Calvin: A few months.")]  # fmt: skip
    said = weigh_turns(asked, weigh)
    assert [s.weight for s in said] == [3, 3]
    assert check(q, said, people) is None
    told = [("Dave", "Dave: I will stay in Japan for long."), ("Calvin", "Calvin: Nice.")]
    said = weigh_turns(told, weigh)  # a statement, not a question: the reply gains nothing
    assert [s.weight for s in said] == [3, 0]
    assert check(q, said, people).speaker == "Dave"


@pytest.fixture
def reader(base):
    return R.BaseLMReader(base)


def _chat(base, s):
    turns = [
        ("Melanie", "I ran a charity race for mental health last Saturday. It made me realize "
                    "that self-care is important."),
        ("Caroline", "That sounds lovely! I went to a support group meeting yesterday."),
        ("Melanie", "My grandma gave me a necklace from Sweden."),
        ("Caroline", "I am researching adoption agencies this summer."),
    ]  # fmt: skip
    parts = [(base.tokenizer.encode(f"{who}: {text}\n"), f"chat:{who}", ()) for who, text in turns]
    s.ingest(prose(300, 7), source="notes.txt")
    s.append_segments(parts, message="a chat")


@pytest.mark.parametrize("check_attribution", [True, False])
def test_a_session_answers_a_misattributed_question_without_the_reader(
    base, gistnet, reader, tmp_path, check_attribution
):
    cfg = SessionConfig(check_attribution=check_attribution, retrieval="bm25")
    with Session(str(tmp_path / "c.mc"), model=base, gistnet=gistnet, window=1024, config=cfg,
                 reader=reader) as s:  # fmt: skip
        _chat(base, s)
        reader.last_prompt = None
        turn = s.ask("What did Caroline realize after her charity race?", 8, remember=False)
        if check_attribution:
            assert turn.text.startswith("My memory holds nothing about that for Caroline.")
            assert "said by Melanie" in turn.text and "charity race" in turn.text
            asked = reader.last_prompt  # at most to reword the question, never to answer it
            assert asked is None or asked[0]["content"] != RD.SYSTEM
            assert turn.answer.timings["misattributed"] is True
        else:
            assert reader.last_prompt[0]["content"] == RD.SYSTEM
            assert turn.answer.timings["misattributed"] is False
        # asked about the person who said it, the reader answers
        reader.last_prompt = None
        turn = s.ask("What did Melanie realize after her charity race?", 8, remember=False)
        assert reader.last_prompt[0]["content"] == RD.SYSTEM
        assert not turn.answer.timings["misattributed"]
        assert "charity race" in reader.last_prompt[1]["content"]
