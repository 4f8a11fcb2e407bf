"""The reader stage: a text reader answers from chosen passages, the raw tail and the question.

The tiny random model stands in for a reader (its words mean nothing; what it is *shown* is what
these tests check). The 1.5B reader's own behaviour is tested only where it is installed."""

from __future__ import annotations

import hashlib

import pytest

import mcmodels
from mcmodels import readers as R
from mcruntime import Session, SessionConfig
from mcruntime import reading as RD
from mcruntime.errors import SessionError
from tests.runtime.text import prose


@pytest.fixture
def reader(base):
    return R.BaseLMReader(base)


def session(base, gistnet, url, reader, **cfg):
    return Session(
        url, model=base, gistnet=gistnet, window=1024, config=SessionConfig(**cfg), reader=reader
    )


def test_reader_sees_the_recalled_passage_and_the_question(base, gistnet, reader, tmp_path):
    with session(base, gistnet, str(tmp_path / "t.mc"), reader) as s:
        s.ingest(
            prose(300, 1) + " The code of the padlock on the cabinet is 6305. " + prose(300, 2)
        )
        s.ingest(prose(200, 3), source="later.txt")
        turn = s.ask("What is the code of the padlock on the cabinet?", 8, remember=False)
        assert isinstance(turn.text, str) and turn.question.startswith("What is the code")
        system, user = reader.last_prompt
        assert system["role"] == "system" and "exact" in system["content"]
        assert "6305" in user["content"]
        assert (
            user["content"]
            .rstrip()
            .endswith("Question: What is the code of the padlock on the cabinet?")
        )
        assert turn.answer.recall and turn.answer.recall[-1]["source"] == "text"
        assert turn.answer.timings["reader"] == base.name


def test_read_prompt_is_what_an_answer_shows_the_reader(base, gistnet, reader, tmp_path):
    with session(base, gistnet, str(tmp_path / "t.mc"), reader) as s:
        s.ingest(prose(300, 1) + " The padlock code is 6305. " + prose(300, 2))
        q = "What is the padlock code?"
        got = s.read_prompt(q)
        version = s.tree.version
        assert "6305" in got.prompt[1]["content"] and got.passages and not got.reworded
        turn = s.ask(q, 4, remember=False)
        assert reader.last_prompt == got.prompt and s.tree.version == version
        assert [p.report() for p in got.passages] == turn.answer.recall
    keeper = Session(str(tmp_path / "t.mc"), model=base, gistnet=gistnet, window=1024)
    with keeper, pytest.raises(SessionError, match="text reader"):
        keeper.read_prompt(q)


def test_a_reply_is_found_by_the_words_of_the_turn_it_replies_to(base, gistnet, reader, tmp_path):
    with session(base, gistnet, str(tmp_path / "t.mc"), reader, retrieval="bm25") as s:
        s.ingest(prose(400, 5))
        s.remember_turns([("assistant", "Do you keep any pets at home?"),
                          ("user", "Yup, Oscar, my guinea pig."),
                          *[("user", prose(60, 10 + i)) for i in range(12)]])  # fmt: skip
        got = s.read_prompt("Which pets do I keep?")
        # the reply shares no word with the question; it is shown after what it answers, as
        # the user's words (not as the model's own answer, which is no evidence)
        reply = next(p for p in got.passages if "Oscar, my guinea pig" in p.text)
        assert reply.text.index("Do you keep any pets") < reply.text.index("Oscar")
        assert reply.kind == "user" and "the user" in got.prompt[1]["content"]
        mid = s.recaller.exchanges([[reply.start, reply.start + 1, 1.0, "words"]], reply.stop)
        assert (
            mid[0][1] == reply.start + 1
        )  # a passage that stops inside its turn runs on no further


def test_a_turn_read_by_a_text_reader_is_remembered(base, gistnet, reader, tmp_path):
    with session(base, gistnet, str(tmp_path / "t.mc"), reader) as s:
        s.ingest(prose(100, 4))
        n = s.tree.length
        a = s.ask("What did I say?", 4).text
        sources = [sg.source for sg in s.tree.segments()]
        assert sources[-2:] == ["chat:user", "chat:assistant"]
        assert s.tree.length > n
        tail = base.tokenizer.decode(s.tree.tokens(n, s.tree.length).tolist(), skip_special=True)
        assert "What did I say?" in tail and a.strip() in tail


def test_nothing_recalled_is_said_to_the_reader(base, gistnet, reader, tmp_path):
    with session(base, gistnet, str(tmp_path / "t.mc"), reader) as s:
        s.ask("What is the capital of Peru?", 4, remember=False)
        user = reader.last_prompt[1]["content"]
        assert RD.NOTHING in user
        assert "My memory holds nothing about that." in reader.last_prompt[0]["content"]


def test_own_answers_are_no_evidence(base, gistnet, reader, tmp_path):
    """The model's earlier (wrong) answer is not shown beside the user's own statement."""
    with session(base, gistnet, str(tmp_path / "t.mc"), reader, raw_recent=64) as s:
        s.remember_turn("Please remember: my locker number is 4417.", "Noted.")
        s.ingest(prose(400, 5))
        s.remember_turn("Tell me more.", "I think your locker number is 9001.")
        s.ingest(prose(400, 6))
        turn = s.ask("What is my locker number?", 4, remember=False)
        user = reader.last_prompt[1]["content"]
        assert "4417" in user and "9001" not in user
        kinds = [r["source"] for r in turn.answer.recall]
        assert kinds[-1] == "chat:user"


def test_near_duplicates_lacking_the_asked_word_go(base, gistnet, reader, tmp_path):
    facts = [
        "The code of the red locker is 1122.",
        "The code of the blue locker is 3344.",
        "The code of the green locker is 5566.",
    ]
    text = " ".join(f"{prose(250, 10 + i)} {f}" for i, f in enumerate(facts)) + prose(250, 20)
    with session(base, gistnet, str(tmp_path / "t.mc"), reader) as s:
        s.ingest(text)
        turn = s.ask("What is the code of the blue locker?", 4, remember=False)
        user = reader.last_prompt[1]["content"]
        assert "3344" in user
        assert "1122" not in user and "5566" not in user
        assert turn.answer.recall[-1]["match"] >= max(r["match"] for r in turn.answer.recall)


def test_choose_scores_whole_sentences_and_orders_best_last():
    def weigh(text):
        return sum(w in text for w in ("blue", "locker", "code"))

    ps = [
        RD.Passage(0, 10, 5.0, "a", "The code of the red locker is 1.", "document"),
        RD.Passage(10, 20, 1.0, "b", "Filler. The code of the blue\nlocker is 2.", "document"),
        RD.Passage(20, 30, 9.0, "c", "I said the blue locker code is 9.", "assistant"),
    ]
    chosen = RD.choose(ps, weigh, k=3, keep_ratio=0.75)
    assert [p.source for p in chosen] == ["b"]  # no own answer beside a document; red lacks blue
    alone = RD.choose([ps[2]], weigh, k=3, keep_ratio=0.75)
    assert [p.source for p in alone] == ["c"]  # the model's own words when nothing else matches
    assert chosen[-1].weight == 3  # the sentence split across a line still counts whole


def test_choose_fills_a_token_budget_best_first():
    def weigh(text):
        return text.count("x")

    ps = [RD.Passage(a, a + n, 0.0, str(w), "x" * w, "document") for w, n, a in
          ((5, 40, 0), (4, 40, 40), (3, 100, 80), (2, 10, 180))]  # fmt: skip
    got = RD.choose(ps, weigh, k=4, keep_ratio=0.0, budget=100)
    assert [p.source for p in got] == ["4", "5"]  # 40 + 40; the 100-token one ends the fill
    assert [p.source for p in RD.choose(ps, weigh, k=4, keep_ratio=0.0)] == ["2", "3", "4", "5"]
    assert [p.source for p in RD.choose(ps[2:], weigh, k=4, keep_ratio=0.0, budget=50)] == ["3"]


def test_a_chat_turn_is_matched_with_the_turn_it_replies_to():
    def weigh(text):
        return sum(w in text for w in ("pets", "keep"))

    reply = RD.Passage(0, 10, 0.0, "reply", "Yup, Oscar.", "user", replies_to="Any pets?")
    other = RD.Passage(10, 20, 0.0, "other", "I write a diary.", "user")
    got = RD.choose([other, reply], weigh, k=2, keep_ratio=0.0)
    assert [p.source for p in got] == ["other", "reply"] and got[-1].weight == 1
    assert "pets" not in got[-1].text  # not shown where it does not end where the reply starts


def test_a_reply_matched_by_what_it_replies_to_is_shown_with_it():
    """The gym miss: "What days do you usually go?" / "Mondays and Thursdays" matched "days",
    and "gym" only in the turn before; shown without it, the reader could not tell what the
    days were for."""

    def weigh(text):
        return sum(w in text for w in ("gym", "days"))

    ask = "User: I joined a gym. "
    ex = RD.Passage(40, 60, 0.0, "ex", "Assistant: What days do you go? User: Mondays.", "user",
                    replies_to=ask, replies_from=30)  # fmt: skip
    (got,) = RD.choose([ex], weigh, k=1, keep_ratio=0.0)
    assert got.text.startswith(ask) and got.start == 30 and got.weight == 2
    alone = RD.Passage(40, 60, 0.0, "alone", "Assistant: Which gym, what days?", "user",
                       replies_to="User: Tuesday is busy. ", replies_from=30)  # fmt: skip
    (got,) = RD.choose([alone], weigh, k=1, keep_ratio=0.0)
    assert got.start == 40 and "Tuesday" not in got.text  # its own words match all they can


def test_a_passage_that_does_not_fit_is_cut_to_its_best_sentences_that_do():
    def weigh(text):
        return text.count("median")

    def count(text):  # a word is a token
        return len(text.split())

    fill = " ".join(f"Filler sentence number {i} here." for i in range(12))
    long = f"{fill} The median search time is 4 ms. It was measured at 1M tokens. {fill}"
    ps = [RD.Passage(0, 30, 0.0, "first", "median " * 30, "document"),
          RD.Passage(100, 100 + count(long), 0.0, "long", long, "document")]  # fmt: skip
    got = RD.choose(ps, weigh, k=2, keep_ratio=0.0, budget=50, count=count)
    assert [p.source for p in got] == ["long", "first"]
    cut = got[0]
    assert "The median search time is 4 ms. It was measured at 1M tokens." in cut.text
    assert count(cut.text) <= 20 and cut.stop - cut.start == count(cut.text)
    assert cut.text[0].isupper() and cut.text.endswith(".")  # whole sentences
    before = long[: long.index(cut.text)]
    assert cut.start == 100 + count(before)  # where it sits in the tree, for focus recall
    # without a way to count tokens, or when nothing that matches fits, the fill just ends
    assert [p.source for p in RD.choose(ps, weigh, k=2, keep_ratio=0.0, budget=50)] == ["first"]
    assert RD.cut_to(ps[1], 5, weigh, count) is None


def test_passages_found_by_meaning_fill_the_room_the_word_passages_leave():
    def weigh(text):
        return text.count("x")

    meaning = RD.Passage(80, 120, 0.0, "m", "a paraphrase", "document", via="meaning")
    words = [RD.Passage(a, a + 40, 0.0, str(w), "x" * w, "document") for w, a in ((3, 0), (2, 40))]
    assert [p.source for p in RD.choose([meaning, *words], weigh, k=3, keep_ratio=0.5,
                                        budget=80)] == ["2", "3"]  # fmt: skip
    got = RD.choose([meaning, *words], weigh, k=3, keep_ratio=0.5, budget=120)
    assert [p.source for p in got] == ["m", "2", "3"]  # after them: shown weakest, first
    assert [p.source for p in RD.choose([meaning], weigh, k=3, keep_ratio=0.5)] == ["m"]


def test_a_text_readers_pool_keeps_a_hit_sharing_one_word_of_a_long_question(
    base, gistnet, reader, tmp_path
):
    with session(base, gistnet, str(tmp_path / "t.mc"), reader, retrieval="bm25") as s:
        s.ingest(f"{prose(300, 3)} Zorblax keeps a quiet garden. {prose(300, 4)}")
        q = base.tokenizer.encode(
            "Which exotic quantum telescope observatory did Zorblax visit beyond Neptune's "
            "distant orbit during the freezing winter?"
        )
        assert s.search(q, k=24) == []  # one word of many: no hit for the keeper's recall
        pool = s.search(q, k=24, pool=True)
        assert pool
        s.ask(base.tokenizer.decode(q), 4, remember=False)
        assert "Zorblax keeps a quiet garden" in reader.last_prompt[1]["content"]


def test_messages_label_who_said_what():
    ps = [
        RD.Passage(0, 1, 1.0, "chat:assistant", "You answered: 9", "assistant"),
        RD.Passage(1, 2, 1.0, "chat:user", "The user said: 4", "user"),
        RD.Passage(2, 3, 1.0, "notes.md", "fact", "document"),
    ]
    user = RD.messages("Q?", ps, "recent text")[1]["content"]
    assert "[1] your own answer earlier (not evidence)" in user
    assert "[2] the user (who is asking you now) said earlier" in user
    assert "[3] from notes.md" in user
    assert user.index("recent text") < user.index("Question: Q?")


def test_a_recalled_turn_says_when_it_was_said(base, gistnet, reader, tmp_path):
    """Notes are ordered by match, not time: a turn's place in the conversation (and its day,
    when it was remembered before today) is in its label, for "what did I tell you first"."""
    with session(base, gistnet, str(tmp_path / "w.mc"), reader, raw_recent=64) as s:
        parts = [
            (base.tokenizer.encode(RD.USER + "My locker number is 4417.\n"), "chat:user", ()),
            (base.tokenizer.encode(RD.ASSISTANT + "Noted.\n\n"), "chat:assistant", ()),
        ]
        s.append_segments(parts, message="old chat", times=[1_699_963_200 * 10**9] * 2)  # noon UTC
        for i in range(4):
            s.remember_turn("Tell me more.", prose(300, i))
        s.ask("What is my locker number?", 4, remember=False)
        user = reader.last_prompt[1]["content"]
        assert "said in the first message of your conversation, on Tue 2023-11-14:" in user
    assert RD.when_said(95, 100) == "recently (message 96 of 100)"
    assert RD.when_said(2, 100) == "at the start of your conversation (message 3 of 100)"
    assert RD.when_said(50, 100, "Mon 2026-12-07") == (
        "earlier in your conversation (message 51 of 100), on Mon 2026-12-07"
    )


# ---- assembling a reader from part packages ------------------------------------------------
def test_a_recalled_turn_says_what_its_relative_times_mean(base, gistnet, reader, tmp_path):
    """ "Yesterday" in a turn said on 14 Nov 2023 reaches the reader as 13 November 2023."""
    with session(base, gistnet, str(tmp_path / "y.mc"), reader, raw_recent=64) as s:
        said = "Oriane moved to Quebec yesterday, to work there next month.\n"
        parts = [(base.tokenizer.encode(RD.USER + said), "chat:user", ())]
        s.append_segments(parts, message="old chat", times=[1_699_963_200 * 10**9])
        for i in range(4):
            s.remember_turn("Tell me more.", prose(300, i))
        s.ask("When did Oriane move to Quebec?", 4, remember=False)
        user = reader.last_prompt[1]["content"]
        assert "yesterday (13 November 2023)" in user and "next month (December 2023)" in user


def _fake_parts(root, chunks: list[bytes]) -> None:
    for i, data in enumerate(chunks, 1):
        pkg = root / f"fakepart_{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "data" / f"p{i:02d}.bin").write_bytes(data)
        info = root / f"fakepart_{i}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakepart-{i}\nVersion: 1.0\n")
        (info / "RECORD").write_text("")


def _spec(chunks: list[bytes], sha: str | None = None, parts: int | None = None) -> R.ReaderSpec:
    whole = b"".join(chunks)
    return R.ReaderSpec(
        name="fake",
        dist="fakepart-{}",
        version="1.0",
        parts=parts or len(chunks),
        chunk="fakepart_{n}/data/p{nn}.bin",
        size=len(whole),
        sha256=sha or hashlib.sha256(whole).hexdigest(),
        file="fake.gguf",
        provenance="test",
    )


def test_assemble_checks_the_pinned_checksum(tmp_path, monkeypatch):
    chunks = [b"GGUF" + bytes(range(200)), bytes(range(50)) * 3, b"tail"]
    _fake_parts(tmp_path / "site", chunks)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("MC_CACHE", str(tmp_path / "cache"))
    bad = _spec(chunks, sha="0" * 64)
    with pytest.raises(mcmodels.ModelError, match="not the ones pinned"):
        R.assemble(bad)
    assert not list((tmp_path / "cache" / "readers").iterdir())  # nothing left behind
    good = _spec(chunks)
    path = R.assemble(good)
    assert path.read_bytes() == b"".join(chunks)
    assert R.installed_path(good) == path
    path.write_bytes(b"truncated")  # a damaged file is never used
    assert R.installed_path(good) is None


def test_missing_parts_name_the_install_step(tmp_path, monkeypatch):
    chunks = [b"a" * 10, b"b" * 10]
    _fake_parts(tmp_path / "site", chunks)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("MC_CACHE", str(tmp_path / "cache"))
    with pytest.raises(R.ReaderNotInstalled, match=r"\./install"):
        R.assemble(_spec(chunks, parts=3))


def test_unknown_reader_is_one_clear_error():
    with pytest.raises(mcmodels.ModelNotFoundError, match="unknown reader"):
        mcmodels.load_reader("no-such-reader")
    assert mcmodels.load_reader("keeper") is None


# ---- the 1.5B reader itself, where installed -------------------------------------------------
needs_qwen = pytest.mark.skipif(
    R.installed_path(R.QWEN_CODER_1_5B) is None,
    reason="the 1.5B reader is not installed (./install, or ./install --dev --reader)",
)


@pytest.fixture(scope="module")
def qwen():
    if R.installed_path(R.QWEN_CODER_1_5B) is None:
        pytest.skip("the 1.5B reader is not installed (./install, or ./install --dev --reader)")
    return mcmodels.load_reader(R.QWEN_CODER_1_5B.name, threads=1)


@pytest.mark.slow
@needs_qwen
def test_qwen_quotes_the_fact_and_says_when_memory_holds_nothing(base, gistnet, qwen, tmp_path):
    with session(base, gistnet, str(tmp_path / "t.mc"), qwen) as s:
        s.ingest(
            prose(300, 1) + " The code of the padlock on the cabinet is 6305. " + prose(300, 2)
        )
        s.ingest(prose(200, 3), source="later.txt")
        assert (
            "6305"
            in s.ask("What is the code of the padlock on the cabinet?", 24, remember=False).text
        )
    with session(base, gistnet, str(tmp_path / "empty.mc"), qwen) as s:
        a = s.ask("What is the name of my dentist?", 32, remember=False).text.lower()
        assert "memory holds nothing" in a, a


def test_a_question_whose_words_find_nothing_is_reworded_once(base, gistnet, reader, tmp_path):
    """Rewording is the fallback of a tree with word keys only (made before meaning keys)."""
    with session(base, gistnet, str(tmp_path / "t.mc"), reader, retrieval="bm25") as s:
        s.ingest(prose(300, 7) + " Ann keeps a pet ferret at home. " + prose(300, 8))
        turn = s.ask("Which creature shares a flat with Bob?", 4, remember=False)
        assert turn.answer.timings["reworded"] is not None  # nothing matched: the reader reworded
        turn = s.ask("What pet does Ann keep at home?", 4, remember=False)
        assert turn.answer.timings["reworded"] is None  # its own words found the passage


def test_a_question_in_other_words_gets_passages_found_by_meaning(base, gistnet, reader, tmp_path):
    with session(base, gistnet, str(tmp_path / "t.mc"), reader) as s:  # a new tree: hybrid
        s.ingest(prose(300, 7) + " Ann keeps a pet ferret at home. " + prose(300, 8))
        turn = s.ask("Which creature shares a flat with Bob?", 4, remember=False)
        assert turn.answer.timings["reworded"] is None  # no word matched, but meaning keys did
        assert turn.answer.recall and {r["via"] for r in turn.answer.recall} == {"meaning"}
        turn = s.ask("What pet does Ann keep at home?", 4, remember=False)
        assert turn.answer.recall[-1]["via"] == "words"  # its own words found it: words only
        assert "ferret" in reader.last_prompt[1]["content"]


def test_the_recent_tail_shown_is_the_conversation_not_a_documents_end(
    base, gistnet, reader, tmp_path
):
    with session(base, gistnet, str(tmp_path / "t.mc"), reader) as s:
        s.ingest(prose(200, 9) + " closing words of the manual")
        s.ask("What is in the manual?", 4, remember=False)
        assert "closing words" not in reader.last_prompt[1]["content"]
        s.remember_turn("My badge number is 5521.", "Noted.")
        s.ask("Anything else?", 4, remember=False)
        assert "The user said: My badge number is 5521." in reader.last_prompt[1]["content"]


def test_a_statement_is_acknowledged_not_answered_from_memory():
    told = RD.messages("Please remember: my locker number is 4417.", [], "")
    assert told[0]["content"] == RD.TOLD and "4417" in told[1]["content"]
    for q in ("What is my locker number?", "my locker number?", "Tell me my locker number"):
        assert RD.messages(q, [], "")[0]["content"] == RD.SYSTEM, q


def test_a_fact_at_a_documents_end_is_recalled_not_lost_with_the_tail(
    base, gistnet, reader, tmp_path
):
    """The end of a document is not shown as recent text, so it must be recallable."""
    with session(base, gistnet, str(tmp_path / "t.mc"), reader) as s:
        s.ingest(prose(400, 11) + " The code of the padlock on the cabinet is 6305.")
        s.ask("What is the code of the padlock on the cabinet?", 4, remember=False)
        assert "6305" in reader.last_prompt[1]["content"]


def test_a_turn_shown_with_its_reply_is_not_shown_again():
    """A turn chosen on its own and again as the turn a chosen reply answers was shown twice;
    it is shown once, inside the longer passage, whichever ranked first."""

    def weigh(text):
        return sum(w in text for w in ("gym", "days", "joined"))

    ask = RD.Passage(30, 40, 0.0, "ask", "User: I joined a gym. ", "user")
    ex = RD.Passage(40, 60, 0.0, "ex", "Assistant: What days do you go? User: Mondays.", "user",
                    replies_to="User: I joined a gym. ", replies_from=30)  # fmt: skip
    other = RD.Passage(80, 90, 0.0, "other", "User: gym shoes", "user")
    for order in ([ask, ex, other], [ex, ask, other]):
        fresh = [RD.Passage(**{**p.__dict__}) for p in order]
        got = RD.choose(fresh, weigh, k=3, keep_ratio=0.0, budget=45)
        assert [p.source for p in got] == ["other", "ex"]
        assert sum(p.text.count("I joined a gym") for p in got) == 1
