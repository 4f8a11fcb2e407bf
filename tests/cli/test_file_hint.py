"""A regular file given as TREE: the hint names a command that works (issue 22, item 10).

`mc chat notes.txt` used to say "(`mc ingest notes.txt FILES` makes one)", a command that then
refused the file's path. A file is not a tree; the hint names a new path for one."""

from __future__ import annotations

import re
import shlex

import pytest

import mcstore
from tests.cli.helpers import TINY, one_error_line, run_mc


@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("The ferry leaves at nine.\n")
    return f


@pytest.mark.parametrize("cmd", [["chat", "--once", "hi", *TINY], ["log"], ["info"]])
def test_the_hint_for_a_file_names_a_command_that_works(a_file, tmp_path, cmd):
    (tmp_path / "notes.mc").mkdir()  # a name already taken: the hint picks another
    r = run_mc([cmd[0], a_file, *cmd[1:]])
    assert r.code == mcstore.TreeNotFound.exit_code, r.err
    line = one_error_line(r.err, str(a_file), "is a file", "new path")
    hinted = re.findall(r"`([^`]*)`", line)
    assert hinted and hinted[-1].startswith("mc ingest "), line
    argv = shlex.split(hinted[-1])[1:]
    assert argv[0] == "ingest" and argv[2] == str(a_file), argv  # the file is the input
    assert argv[1] == str(tmp_path / "notes-2.mc"), argv  # a new path, not notes.mc
    done = run_mc([*argv, *TINY])  # the hint works as given
    assert done.code == 0, done.err
    assert len(mcstore.open(argv[1]).segments()) == 1
    assert a_file.read_text() == "The ferry leaves at nine.\n"


def test_a_missing_tree_keeps_its_hint(tmp_path):
    r = run_mc(["log", tmp_path / "none.mc"])
    assert r.code == 3
    one_error_line(r.err, f"`mc ingest {tmp_path / 'none.mc'} FILES` makes one")
