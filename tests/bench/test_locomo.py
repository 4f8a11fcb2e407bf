"""The LoCoMo benchmark end to end on a tiny synthetic conversation in LoCoMo's JSON shape (the
real data is never read here), and LoCoMo's scoring rules."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import mcmodels
import mcstore
from bench import locomo, locomo_recall, locomo_turns
from bench.porter import stem
from mcruntime import reading


def conversation() -> dict:
    """Two sessions between Ada and Bo, one shared photo, one question per category."""
    filler = "we talked about the weather and the garden and the long week at work"
    s1 = [
        ("Ada", "Hi Bo! How have you been lately?"),
        ("Bo", f"Busy, {filler}."),
        ("Ada", "I adopted a ferret named Quillon yesterday.", "a photo of a ferret on a sofa"),
        ("Bo", f"Lovely. {filler}."),
    ]
    s2 = [
        ("Bo", "I finished the harbour mural in Lisbon last weekend."),
        ("Ada", f"Wonderful, {filler}."),
        ("Bo", "Next I will paint the old lighthouse at Sagres."),
        ("Ada", f"Good luck, {filler}."),
    ]
    conv = {"speaker_a": "Ada", "speaker_b": "Bo"}
    for n, (turns, date) in enumerate(
        [(s1, "1:56 pm on 8 May, 2023"), (s2, "10:00 am on 27 June, 2023")], 1
    ):
        conv[f"session_{n}_date_time"] = date
        conv[f"session_{n}"] = [
            {"speaker": t[0], "dia_id": f"D{n}:{k}", "text": t[1]}
            | ({"blip_caption": t[2]} if len(t) > 2 else {})
            for k, t in enumerate(turns, 1)
        ]
    conv["session_3_date_time"] = "a date with no turns"  # as in the release
    conv["qa"] = [
        {"question": "What pet did Ada adopt?", "answer": "a ferret", "evidence": ["D1:3"],
         "category": 4},
        {"question": "When did Ada adopt the ferret?", "answer": "7 May 2023",
         "evidence": ["D1:3"], "category": 2},
        {"question": "What did Bo paint?", "answer": "harbour mural, lighthouse",
         "evidence": ["D2:1; D2:3"], "category": 1},
        {"question": "Would Bo enjoy a coastal trip?", "answer": "Likely yes; he paints coasts",
         "evidence": ["D2:3"], "category": 3},
        {"question": "What did Bo name his ferret?", "adversarial_answer": "Quillon",
         "evidence": ["D1:3"], "category": 5},
    ]  # fmt: skip
    return conv


@pytest.fixture(scope="module")
def data():
    return {"7": conversation()}


def _cfg(tmp, **kw):
    return locomo.LocomoConfig(
        split="test",
        window=512,
        max_new_tokens=4,
        workdir=str(tmp),
        out=str(tmp / "locomo.json"),
        **kw,
    )


@pytest.fixture(scope="module")
def result(tmp_path_factory, data):
    torch.set_num_threads(1)
    cfg = _cfg(tmp_path_factory.mktemp("locomo"), reader="tiny")
    return locomo.run(cfg, base=mcmodels.tiny_base(0), data=data, progress=lambda s: None)


def test_the_zip_is_read_as_released(tmp_path, data):
    path = tmp_path / "locomo10.zip"
    with zipfile.ZipFile(path, "w") as z:
        for cid in ("30", "7", "26"):
            z.writestr(f"data/multimodal_dialog/locomo10_v2/{cid}.json", json.dumps(data["7"]))
    got = locomo.load(path)
    assert list(got) == ["7", "26", "30"]
    assert locomo.split_ids(got, "dev") == ["26", "30"]
    assert locomo.split_ids(got, "test") == ["7"]


def test_turns_carry_date_speaker_and_photo(data):
    ts = locomo.turns(data["7"])
    assert [t.dia_id for t in ts][:2] == ["D1:1", "D1:2"] and len(ts) == 8
    assert ts[2].text == (
        "[1:56 pm on 8 May, 2023] Ada: I adopted a ferret named Quillon yesterday. "
        "[shares a photo of a ferret on a sofa]\n"
    )
    assert ts[4].source == "chat:Bo" and ts[4].text.startswith("[10:00 am on 27 June, 2023] Bo:")
    assert "named Quillon yesterday (7 May 2023)." in ts[2].shown  # what every system shows
    assert ts[4].time_ns - ts[0].time_ns == ((50 * 24 - 4) * 3600 + 4 * 60) * 10**9
    assert locomo.evidence_ids({"evidence": ["D2:1; D2:3", "D2:01"]}) == ["D2:1", "D2:3"]


def test_a_limit_spreads_over_the_categories():
    qa = [{"category": c} for c in [2] * 4 + [1] * 4 + [4] * 8 + [5] * 4]
    got = locomo.pick(qa, 5)
    assert len(got) == 5 and {qa[i]["category"] for i in got} == {1, 2, 4, 5}
    assert got == sorted(got) and 8 in got  # each category's earliest question first
    assert locomo.pick(qa, 3, first=True) == [0, 1, 2]
    assert locomo.pick(qa, None) == locomo.pick(qa, 99) == list(range(20))


def test_every_system_answers_every_question(result):
    rows = result["rows"]
    assert {r["system"] for r in rows} == set(locomo.SYSTEMS)
    for s in locomo.SYSTEMS:
        assert sorted(r["q"] for r in rows if r["system"] == s) == [0, 1, 2, 3, 4]
    assert all(r["found"] == 1.0 for r in rows if r["system"] == "oracle")
    # BM25 over the turns finds the turn naming the rare words asked about
    rag = {r["q"]: r for r in rows if r["system"] == "rag"}
    assert "D1:3" in rag[0]["shown"] and rag[2]["evidence"] == ["D2:1", "D2:3"]
    # trunc shows the newest turns; mc always shows the raw recent tail
    trunc = next(r for r in rows if r["system"] == "trunc")
    assert trunc["shown"][-1] == "D2:4"
    assert all("D2:4" in r["shown"] for r in rows if r["system"] == "mc")
    assert all(0 <= r["f1"] <= 1 and r["seconds"] > 0 for r in rows)
    assert all(r["first_token_s"] is not None for r in rows)


def test_the_tree_holds_each_turn_as_a_segment(result, data):
    (tree,) = Path(result["config"]["workdir"]).glob("conv-7-*.mc")
    t = mcstore.open(str(tree), "r")
    segs = t.segments()
    assert [s.source for s in segs][:3] == ["chat:Ada", "chat:Bo", "chat:Ada"]
    base = mcmodels.tiny_base(0)
    third = base.tokenizer.decode(t.tokens(segs[2].start, segs[2].stop).tolist())
    assert third.startswith("[1:56 pm on 8 May, 2023] Ada: I adopted a ferret")
    assert [s.time for s in segs] == [t.time_ns for t in locomo.turns(data["7"])]
    assert result["conversations"]["7"]["turns"] == 8


def test_the_tree_is_built_once(result, data):
    cfg = locomo.LocomoConfig(**{**result["config"], "systems": ("mc",), "limit": 1})
    again = locomo.run(cfg, base=mcmodels.tiny_base(0), data=data, progress=lambda s: None)
    assert again["conversations"]["7"]["build_s"] == result["conversations"]["7"]["build_s"]
    assert len(again["rows"]) == 1


def test_the_keeper_answers_too(tmp_path, data):
    cfg = _cfg(tmp_path, limit=2, systems=("mc", "rag", "oracle", "trunc"))
    res = locomo.run(cfg, base=mcmodels.tiny_base(0), data=data, progress=lambda s: None)
    assert res["reader"] == "keeper" and len(res["rows"]) == 8
    assert all(r["found"] == 1.0 for r in res["rows"] if r["system"] == "oracle")


def test_a_resumed_run_asks_only_what_it_has_not_answered(tmp_path, data):
    base = mcmodels.tiny_base(0)
    cfg = _cfg(tmp_path, limit=2, systems=("rag", "oracle"), resume=True)
    first = locomo.run(cfg, base=base, data=data, progress=lambda s: None)
    store = tmp_path / f"answers-{locomo.answer_key(cfg, 'rag')}.jsonl"
    assert len(store.read_text().splitlines()) == 2
    with store.open("a") as f:
        f.write('{"conv": "7", "q": 4, "sys')  # a line cut by a kill is asked again
    bigger = locomo.LocomoConfig(**{**first["config"], "limit": 3})
    assert locomo.answer_key(bigger, "rag") == locomo.answer_key(cfg, "rag")  # not a key
    second = locomo.run(bigger, base=base, data=data, progress=lambda s: None)
    assert len(second["rows"]) == 6
    kept = {(r["q"], r["system"]): r for r in first["rows"]}
    for r in second["rows"]:
        if (r["q"], r["system"]) in kept:
            assert r == kept[(r["q"], r["system"])]  # reused as stored, timings included
    assert len(store.read_text().splitlines()) == 2 + 1 + 1  # the cut line, then 1 new one
    other = locomo.LocomoConfig(**{**first["config"], "rag_k": 2})
    assert locomo.answer_key(other, "rag") != locomo.answer_key(cfg, "rag")


def test_each_system_keeps_its_answers_when_another_systems_code_changes(monkeypatch):
    cfg = locomo.LocomoConfig()
    keys = {s: locomo.answer_key(cfg, s) for s in locomo.SYSTEMS}
    assert len(set(keys.values())) == len(keys)
    monkeypatch.setattr(locomo, "ANSWER_SOURCES", (*locomo.ANSWER_SOURCES, "README.md"))
    assert locomo.answer_key(cfg, "mc") != keys["mc"]  # mc's recall changed: mc asks again
    assert all(locomo.answer_key(cfg, s) == keys[s] for s in keys if s != "mc")
    monkeypatch.setattr(reading, "choose", lambda *a: [])  # how mc picks: in no baseline's key
    assert all(locomo.answer_key(cfg, s) == keys[s] for s in keys if s != "mc")
    monkeypatch.setattr(reading, "SYSTEM", reading.SYSTEM + " Be brief.")  # every reader's prompt
    assert all(locomo.answer_key(cfg, s) != keys[s] for s in keys if s != "mc")


def test_a_baseline_keeps_its_answers_when_only_mcs_session_settings_change():
    cfg = locomo.LocomoConfig()
    keys = {s: locomo.answer_key(cfg, s) for s in locomo.SYSTEMS}
    tuned = locomo.LocomoConfig(session={"recall_k": 2})  # how mc recalls: not a baseline's input
    assert locomo.answer_key(tuned, "mc") != keys["mc"]
    assert all(locomo.answer_key(tuned, s) == keys[s] for s in keys if s != "mc")
    budget = locomo.LocomoConfig(session={"read_tokens": 100})  # the budget rag shares with mc
    assert all(locomo.answer_key(budget, s) != keys[s] for s in keys)


def test_focus_recall_alone_measures_what_each_system_shows(tmp_path, data):
    base = mcmodels.tiny_base(0)
    cfg = _cfg(tmp_path, reader="tiny")
    got = locomo_recall.run(cfg, base=base, data=data, progress=lambda s: None)
    qa = data["7"]["qa"]
    assert len(got["rows"]) == 2 * len(qa)  # every question has evidence; mc and rag each
    conv = locomo.Conversation.of("7", data["7"], base.tokenizer)
    for r in got["rows"]:
        ev = set(r["evidence"])
        assert r["found"] == len(ev & set(r["shown"])) / len(ev)
        assert 0 < r["tokens"] <= conv.spans[-1][1]
    rag = [r for r in got["rows"] if r["system"] == "rag"]
    assert rag[0]["shown"][0] == "D1:3"  # BM25's best turn for "What pet did Ada adopt?"
    summ = got["summary"]
    assert summ["mc"]["1-4"]["n"] == 4 and summ["mc"]["all"]["n"] == 5
    assert summ["rag"]["all"]["found"] == pytest.approx(np.mean([r["found"] for r in rag]))
    locomo_recall.save(got, str(tmp_path / "r.json"))
    assert "| mc |" in (tmp_path / "r.md").read_text()
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(got))
    with pytest.raises(ValueError, match="text reader"):
        locomo_recall.run(_cfg(tmp_path, reader="keeper"), base=base, data=data)


def test_rag_reads_as_many_tokens_as_mc_may(data, tmp_path):
    conv = locomo.Conversation.of("7", data["7"], mcmodels.tiny_base(0).tokenizer)
    ranked = [4, 2, 6, 0, 1]
    sizes = [len(conv.ids[i]) for i in ranked]
    cfg = _cfg(tmp_path, session={"read_tokens": sizes[0] + sizes[1], "read_k": 4})
    assert locomo.rag_turns(conv, ranked, cfg) == [4, 2] and locomo.rag_k(cfg) == 4
    tight = _cfg(tmp_path, session={"read_tokens": 1})
    assert locomo.rag_turns(conv, ranked, tight) == [4]  # the best always


def test_saved_results_name_questions_by_index_only(result, tmp_path):
    out = tmp_path / "r" / "locomo.json"
    locomo.save(result, str(out), str(tmp_path / "work"))
    text = out.read_text()
    assert "What pet did Ada adopt" not in text and "7 May 2023" not in text
    back = json.loads(text)
    assert back["summary"]["oracle"]["single-hop"]["n"] == 1
    assert back["summary"]["mc"]["all"]["n"] == 5 and back["summary"]["mc"]["1-4"]["n"] == 4
    raw = json.loads((tmp_path / "work" / "locomo_raw.json").read_text())
    assert raw[0]["question"] == "What pet did Ada adopt?" and raw[0]["gold"] == "a ferret"
    md = out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| mc |" in md and "single-hop (n=1)" in md and "focus recall" in md
    assert "refused (1-4)" in md and 0 <= back["summary"]["rag"]["1-4"]["refused"] <= 1


# -- scoring -------------------------------------------------------------------------------------


def test_porter_stems_as_nltk_does():
    # checked against nltk.stem.PorterStemmer() (NLTK's default mode, as LoCoMo's scorer uses)
    # on every word of the LoCoMo release; these pin the rules where the modes differ
    want = {
        "skies": "sky", "dying": "die", "ties": "tie", "died": "die", "spied": "spi",
        "hopping": "hop", "hoping": "hope", "falling": "fall", "fizzed": "fizz",
        "conditional": "condit", "generalli": "gener", "fulli": "fulli",
        "archaeologi": "archaeolog", "electriciti": "electr", "adjustment": "adjust",
        "adoption": "adopt", "activate": "activ", "homologous": "homolog", "roll": "roll",
        "agreed": "agre", "feed": "feed", "sized": "size", "happy": "happi",
        "paintings": "paint", "counseling": "counsel", "transgender": "transgend",
        "researched": "research", "agencies": "agenc", "camping": "camp", "is": "is",
    }  # fmt: skip
    assert {w: stem(w) for w in want} == want


def test_f1_normalises_and_stems():
    assert locomo.normalize("The Adoption, agencies!") == "adoption agencies"
    assert locomo.f1_score("Adoption agencies.", "adoption agency") == 1.0
    assert locomo.f1_score(
        "She researched adoption agencies", "Adoption agencies"
    ) == pytest.approx(2 * (2 / 4) * 1 / (2 / 4 + 1))
    assert locomo.f1_score("nothing", "Sweden") == 0.0
    assert locomo.exact_match("the Sweden.", "Sweden")
    assert not locomo.exact_match("Sweden, Norway", "Sweden")


def test_category_1_splits_on_commas():
    qa = {"category": 1, "answer": "pottery, camping, painting"}
    f1, em = locomo.score("camping, painting", qa)
    assert f1 == pytest.approx(2 / 3) and not em
    # one predicted part can match one gold part only by its own words
    assert locomo.score("pottery and camping", qa)[0] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_category_3_scores_the_first_alternative():
    qa = {"category": 3, "answer": "Likely yes; she loves the sea"}
    assert locomo.gold(qa) == "Likely yes"
    assert locomo.score("likely yes", qa) == (1.0, True)


def test_category_5_is_right_when_the_answer_says_not_mentioned():
    qa = {"category": 5, "adversarial_answer": "Quillon"}
    assert locomo.score("My memory holds nothing about that.", qa) == (1.0, True)
    assert locomo.score("That is not mentioned in the conversation.", qa) == (1.0, True)
    assert locomo.score("No information available.", qa) == (1.0, True)
    assert locomo.score("Quillon", qa) == (0.0, False)


def test_integer_answers_are_scored_as_text():
    assert locomo.score("2022.", {"category": 2, "answer": 2022}) == (1.0, True)
    assert locomo.score("In 2022", {"category": 2, "answer": 2022})[0] == pytest.approx(2 / 3)


def _row(system, q, f1, found, category=4, conv="41"):
    return {"conv": conv, "q": q, "system": system, "f1": f1, "found": found, "category": category}


def test_paired_difference_brackets_the_mean_and_skips_unpaired_and_adversarial():
    rows = [_row("mc", q, 0.5 + 0.1 * (q % 2), 1.0) for q in range(40)]
    rows += [_row("rag", q, 0.4, 1.0) for q in range(40)]
    rows += [_row("mc", 99, 1.0, 1.0), _row("mc", 50, 1.0, 1.0, category=5)]  # no rag: left out
    rows += [_row("rag", 50, 0.0, 1.0, category=5)]  # adversarial: left out
    p = locomo.paired(rows, "mc", "rag")
    assert p["n"] == 40
    assert p["diff"] == pytest.approx(0.15)
    assert 0.1 <= p["lo"] < p["diff"] < p["hi"] <= 0.2
    assert locomo.paired(rows, "mc", "rag") == p  # fixed seed
    same = locomo.paired([_row("mc", 0, 0.3, 1.0), _row("rag", 0, 0.3, 1.0)], "mc", "rag")
    assert same["diff"] == same["lo"] == same["hi"] == 0.0
    assert locomo.paired(rows, "mc", "trunc") is None


def test_answers_are_split_by_the_evidence_shown_beside_the_oracle():
    rows = [_row("mc", 0, 1.0, 1.0), _row("mc", 1, 0.5, 0.5), _row("mc", 2, 0.0, 0.0),
            _row("mc", 3, 0.2, 0.0), _row("mc", 4, 0.0, 0.0, category=5)]  # fmt: skip
    rows += [_row("oracle", q, 0.8, 1.0) for q in range(5)]
    got = locomo.by_shown(rows, "mc")
    assert got["all"] == {"n": 1, "f1": 1.0, "oracle_f1": 0.8}
    assert got["some"] == {"n": 1, "f1": 0.5, "oracle_f1": 0.8}
    assert got["none"]["n"] == 2 and got["none"]["f1"] == pytest.approx(0.1)
    text = locomo.compare_table(locomo.compare(rows))
    assert "| mc | none | 2 | 0.100 | 0.800 |" in text
    assert "| oracle | 4 | -0.375 |" in text  # mc's mean over categories 1-4 minus 0.8
    assert "| rag |" not in text  # no RAG answers: no row


def test_turn_rankings_index_a_turn_with_the_one_it_answers(data, tmp_path):
    tok = mcmodels.tiny_base(0).tokenizer
    conv = locomo.Conversation.of("7", data["7"], tok)
    both = locomo_turns.with_before(conv)
    assert both.turns[2].text == conv.turns[1].text + conv.turns[2].text
    assert both.turns[4].text == conv.turns[4].text  # a session's first turn answers nothing
    assert both.turns is not conv.turns and conv.turns[2].text.startswith("[1:56 pm")
    assert locomo_turns.shown([3, 0], "next", 3, 4) == {3, 0, 1}  # no turn past the last
    assert locomo_turns.shown([0, 2], "prev", 2, 4) == {0, 1}
    got = locomo_turns.run(_cfg(tmp_path), tokenizer=tok, data=data, progress=lambda s: None)
    assert got["questions"] == 4  # categories 1-4 only
    own = got["found"]["own words, the turn"]
    assert own["6"] == 1.0  # six of the eight turns hold every question's evidence here
    locomo_turns.save(got, str(tmp_path / "t.json"))
    assert "| with the turn before, the turn |" in (tmp_path / "t.md").read_text()
