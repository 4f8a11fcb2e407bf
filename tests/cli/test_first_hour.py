"""What a new user trips over in the first hour (issue 14): a file where a tree should be, a
folder of their own files, tags, plural words, messages in CLI terms, --debug, stdin."""

from __future__ import annotations

import re

import pytest

import mcstore
from tests.cli.helpers import TINY, one_error_line, run_mc, state, verify_ok


@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("my own notes, not a tree\n")
    return f


@pytest.mark.parametrize(
    "args",
    [
        ["info"],
        ["log"],
        ["verify"],
        ["gc"],
        ["show"],
        ["tag", "NAME"],
        ["chat", "--once", "hi"],
        ["fork", "DST"],
    ],
)
def test_a_file_is_not_a_tree(a_file, tmp_path, args):
    cmd, *rest = args
    rest = [str(tmp_path / "copy.mc") if x == "DST" else x for x in rest]
    r = run_mc([cmd, a_file, *rest, *(TINY if cmd == "chat" else ())])
    assert r.code == mcstore.TreeNotFound.exit_code, r.err
    one_error_line(r.err, str(a_file), "is a file, not a MegaContext tree")
    assert a_file.read_text() == "my own notes, not a tree\n"


def test_ingest_or_fork_onto_a_file_is_refused(a_file, tree, docs):
    r = run_mc(["ingest", a_file, docs, *TINY])
    assert r.code == 4
    one_error_line(r.err, str(a_file), "is a file", "pick another path")
    r = run_mc(["fork", tree, a_file])
    assert r.code == 4
    one_error_line(r.err, str(a_file), "is a file")
    assert a_file.read_text() == "my own notes, not a tree\n"


def test_ingest_refuses_a_folder_of_other_files(tmp_path, docs):
    home = tmp_path / "project"
    home.mkdir()
    (home / "thesis.txt").write_text("years of work")
    r = run_mc(["ingest", home, docs, *TINY])
    assert r.code == 4
    one_error_line(r.err, str(home), "1 entry, not a MegaContext tree", "--allow-nonempty")
    assert sorted(p.name for p in home.iterdir()) == ["thesis.txt"]
    r = run_mc(["ingest", home, docs, "--allow-nonempty", *TINY])
    assert r.code == 0, r.err
    assert (home / "thesis.txt").read_text() == "years of work"
    verify_ok(str(home))
    # an empty folder, and a folder that is a tree, need no flag
    empty = tmp_path / "empty.mc"
    empty.mkdir()
    assert run_mc(["ingest", empty, docs, *TINY]).code == 0
    assert run_mc(["ingest", home, docs, *TINY]).code == 0


def test_fork_refuses_a_folder_of_other_files(tree, tmp_path):
    home = tmp_path / "stuff"
    home.mkdir()
    (home / "a.txt").write_text("x")
    r = run_mc(["fork", tree, home])
    assert r.code == 4
    one_error_line(r.err, str(home), "not a MegaContext tree")


def test_tag_version_takes_a_tag_name(tree):
    v = state(tree)[0]
    r = run_mc(["tag", tree, "first", "--version", "1"])
    assert r.code == 0, r.err
    r = run_mc(["tag", tree, "again", "--version", "first"])
    assert r.code == 0, r.err
    assert "tagged version 1 " in r.out
    assert mcstore.open(tree).tags() == {"first": 1, "again": 1}
    r = run_mc(["tag", tree, "x", "--version", "no-such-tag"])
    assert r.code == mcstore.VersionNotFound.exit_code
    one_error_line(r.err, "no-such-tag")
    # a tag that exists: CLI words, not the library's
    r = run_mc(["tag", tree, "first", "--version", str(v)])
    assert r.code == 4
    line = one_error_line(r.err, "'first' already names version 1", "--force")
    assert "force=True" not in line
    assert run_mc(["tag", tree, "first", "--version", str(v), "--force"]).code == 0


def test_debug_does_not_ask_for_debug(tree, monkeypatch):
    def boom(*a, **kw):
        raise RuntimeError("a bug")

    monkeypatch.setattr(mcstore, "verify", boom)
    r = run_mc(["--debug", "verify", tree])
    assert r.code == 1 and "Traceback" in r.err
    assert r.err_lines[-1] == "mc: unexpected error: RuntimeError: a bug"
    r = run_mc(["verify", tree])
    assert r.err_lines[-1].endswith("(rerun with --debug)")


def test_one_stdin_input_is_one_segment_or_says_why(tree):
    text = "".join(f"line {i}: the quick brown fox.\n" for i in range(60))  # ~2k byte tokens
    r = run_mc(["ingest", tree, "-", "--source", "paste", *TINY], input=text)
    assert r.code == 0, r.err
    assert [s.source for s in mcstore.open(tree).segments()][-1] == "paste"
    r = run_mc(["ingest", tree, "-", "--source", "long", "--chunk-tokens", "1000", *TINY],
               input=text + "more\n")  # fmt: skip
    assert r.code == 0, r.err
    names = [s.source for s in mcstore.open(tree).segments() if s.source.startswith("long")]
    assert len(names) > 1
    n = int(re.search(r" of (\d+)\)$", names[0])[1])
    assert names[0] == f"long (tokens 0-1000 of {n})"
    assert names[1:] == [f"long (tokens 1000-{n} of {n})"]


def test_window_messages_in_cli_terms(tree):
    """A question too long for the window: its length in tokens and the window that would do."""
    q = "why " * 300  # 1200 byte tokens
    r = run_mc(["chat", tree, "--once", q, "--window", "1024", *TINY])
    assert r.code == 12
    line = one_error_line(r.err, "the question (1200 tokens)", "for the memory")
    need = int(re.search(r"pass --window (\d+) or more", line)[1])
    assert need > 1024
    assert not re.search(r"(^|\s)-\d", line) and "max_new_tokens" not in line, line
    # the window it names is enough
    r = run_mc(["chat", tree, "--once", q, "--window", str(need), "--max-new-tokens", "4",
                "--no-remember", *TINY])  # fmt: skip
    assert r.code == 0, r.err


def test_library_messages_name_no_cli(tmp_path):
    """Runtime and model errors say what is wrong; only the CLI adds commands and options."""
    import mcmodels
    from mcruntime import Session

    base = mcmodels.tiny_base(0)
    with pytest.raises(mcmodels.CheckpointError) as e:
        mcmodels.pick_gistnet(base)
    assert "--" not in str(e.value) and "`mc" not in str(e.value)
    s = Session(str(tmp_path / "t.mc"), model=base, window=256)
    s.ingest("word " * 3000, source="w")
    from mcruntime import WindowError

    with pytest.raises(WindowError) as e:
        s.ask("why " * 200, max_new_tokens=8)
    assert "--" not in str(e.value) and e.value.window_needed > 256
    assert "max_new_tokens" not in str(e.value)


def test_waiting_line_until_the_first_piece():
    """A terminal sees a status line while the window is prepared; it is erased before the
    answer, and nothing is written where stderr is not a terminal."""
    import io
    import time

    from cli.run_cmds import Waiting

    out = io.StringIO()
    with Waiting(out, enabled=True, after=0.05, every=0.05) as w:
        time.sleep(0.3)
        w.stop()
    text = out.getvalue()
    assert w.shown >= 2 and "mc: reading the memory…" in text and text.endswith("\r\033[K")
    quiet = io.StringIO()
    with Waiting(quiet, enabled=False, after=0.0) as w:
        time.sleep(0.1)
    assert quiet.getvalue() == "" and w.shown == 0
    fast = io.StringIO()
    with Waiting(fast, enabled=True, after=5.0) as w:  # a quick answer: no line at all
        w.stop()
    assert fast.getvalue() == ""


def test_show_checks_its_arguments_before_loading_a_model(tree, tmp_path):
    r = run_mc(["show", tree, "--png", tmp_path / "no" / "such" / "x.png", *TINY])
    assert r.code == 2
    one_error_line(r.err, "--png", "no folder")
    r = run_mc(["show", tree, "--query", "  ", *TINY])
    assert r.code == 11
    one_error_line(r.err, "--query is empty")


def test_many_skipped_files_are_counted_not_listed(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(14):
        (folder / f"b{i:02d}.bin").write_bytes(b"a\0b")
    (folder / "empty.txt").write_text("")
    (folder / "ok.txt").write_text("some text here\n")
    url = tmp_path / "m.mc"
    r = run_mc(["ingest", url, folder, *TINY])
    assert r.code == 0, r.err
    warnings = [x for x in r.err_lines if x.startswith("mc: warning:")]
    assert len(warnings) == 11
    assert (
        warnings[-1] == "mc: warning: 5 more inputs skipped (4 binary, 1 empty); --debug names them"
    )
    assert "15 skipped" in r.out
    r = run_mc(["ingest", tmp_path / "n.mc", folder, "--debug", *TINY])
    assert r.code == 0, r.err
    assert len([x for x in r.err_lines if "; skipped" in x]) == 15
