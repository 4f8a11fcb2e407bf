"""Export a memory as JSON lines and import it again (mcruntime/exchange.py, `mc export`,
`mc import`): the round trip keeps segments, text and times; a killed import is continued, not
repeated; bad lines change nothing."""

from __future__ import annotations

import json

import pytest

import mcstore
from mcruntime import Session
from mcruntime.errors import InputError
from mcruntime.exchange import export_lines, import_records, open_for_export, parse_lines
from tests.cli.helpers import TINY, run_mc


def build(base, url):
    s = Session(url, model=base, window=512)
    s.ingest("The ferry leaves the harbour at seven.\nTickets are sold on board.", "notes/ferry.md")
    s.remember_turn("My locker code is 4182.", "Noted: your locker code is 4182.")
    s.ingest("Ünïcode, emoji 🚢 and <script>alert(1)</script> stay text.", "odd.txt", tags=("x",))
    s.append_ids(base.tokenizer.encode("raw ids from a program"), source="prog")
    s.remember_turn("And the ferry?", "It leaves at seven.")
    return s


def lines_of(tree, tok):
    return [json.loads(x) for x in export_lines(tree, tok)]


def test_round_trip_keeps_segments_text_and_times(base, tmp_path):
    a = build(base, str(tmp_path / "a.mc"))
    first = lines_of(a.tree, base.tokenizer)
    assert [x["role"] for x in first] == [
        "document", "user", "assistant", "document", "document", "user", "assistant",
    ]  # fmt: skip
    assert first[0]["text"] == "The ferry leaves the harbour at seven.\nTickets are sold on board."
    assert first[1]["text"] == "My locker code is 4182." and first[1]["source"] == "chat:user"
    assert first[3]["tags"] == ["x"] and "<script>" in first[3]["text"]
    assert first[4].get("raw") is True and first[4]["text"] == "raw ids from a program"
    assert "raw" not in first[0]
    b = Session(str(tmp_path / "b.mc"), model=base, window=512)
    done = import_records(b, parse_lines(export_lines(a.tree, base.tokenizer)))
    assert done == {"lines": 7, "skipped": 0, "imported": 7, "commits": 1}
    again = lines_of(b.tree, base.tokenizer)
    assert again == first  # ids, sources, tags, roles, times, token counts and text
    # the imported tree answers from what was imported: its index holds the words
    assert b.search(base.tokenizer.encode("What is the locker code?"))


def test_a_killed_import_is_continued_not_repeated(base, tmp_path):
    a = build(base, str(tmp_path / "a.mc"))
    recs = parse_lines(export_lines(a.tree, base.tokenizer))
    b = Session(str(tmp_path / "b.mc"), model=base, window=512)

    def die(n):
        if n >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_records(b, recs, on_batch=die, batch_segments=2)
    assert len(b.tree.segments()) == 4  # two whole batches committed
    done = import_records(b, recs, batch_segments=2)
    assert done["skipped"] == 4 and done["imported"] == 3
    assert lines_of(b.tree, base.tokenizer) == lines_of(a.tree, base.tokenizer)
    assert import_records(b, recs)["imported"] == 0  # all there: nothing twice


@pytest.mark.parametrize(
    "line, says",
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"text": ""}', "'text'"),
        ('{"text": "x", "source": "s", "role": "robot"}', "'role'"),
        ('{"text": "x", "source": "s", "tags": "a"}', "'tags'"),
        ('{"text": "x", "source": "s", "time_ns": -1}', "'time_ns'"),
        ('{"text": "x"}', "'source'"),
    ],
)
def test_a_bad_line_is_refused_before_anything_is_written(line, says):
    good = '{"text": "fine", "source": "a.txt"}'
    with pytest.raises(InputError, match=f"line 2: .*{says}"):
        parse_lines([good, line])


def test_export_refuses_another_tokenizer_and_reads_an_old_version(base, tmp_path):
    url = str(tmp_path / "a.mc")
    a = build(base, url)
    with pytest.raises(mcstore.BindingMismatch):
        open_for_export(url, _other_tok(base))
    t, tok = open_for_export(url, base, version=2)
    assert len(lines_of(t, tok)) == 1 < len(lines_of(a.tree, base.tokenizer))


def _other_tok(base):
    class Other:
        tokenizer = base.tokenizer

        def binding(self):
            return {"name": "other", "hash": "0"}

    return Other()


def test_mc_export_and_import_from_the_command_line(base, tmp_path):
    a = tmp_path / "a.mc"
    build(base, str(a))
    out = run_mc(["export", str(a), *TINY])
    assert out.code == 0, out.err
    lines = out.out.splitlines()
    assert len(lines) == 7 and json.loads(lines[1])["text"] == "My locker code is 4182."
    got = run_mc(["import", str(tmp_path / "b.mc"), "-", *TINY], input=out.out)
    assert got.code == 0 and "imported 7 segment(s) in 1 commit(s)" in got.out, got.err
    back = run_mc(["export", str(tmp_path / "b.mc"), *TINY])
    assert back.out == out.out
    before = mcstore.open(str(tmp_path / "b.mc")).version
    bad = run_mc(["import", str(tmp_path / "b.mc"), "-", *TINY], input='{"text": 1}\n')
    assert bad.code == 11 and bad.err_lines == ["mc: line 1: 'text' must be a non-empty string"]
    assert mcstore.open(str(tmp_path / "b.mc")).version == before  # untouched
