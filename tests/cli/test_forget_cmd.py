"""`mc forget` and `mc gc --purge` (issue 24): a text is forgotten, listed without its
content, purged; a bad rule is one line and a non-zero exit, and the tree is untouched."""

from __future__ import annotations

import pytest

import mcstore
from tests.cli.helpers import TINY, decode, one_error_line, run_mc, state, tree_tokens, verify_ok


@pytest.fixture
def tree(tmp_path):
    url = str(tmp_path / "notes.mc")
    for text, name in (("The alarm code is 9-3-7-1.\n", "alarm"), ("Buy lamp oil.\n", "shop")):
        r = run_mc(["ingest", url, "-", "--source", name, *TINY], input=text)
        assert r.code == 0, r.err
    return url


def test_forget_a_text_list_it_and_purge(tree):
    r = run_mc(["forget", tree, "--match", "9-3-7-1", *TINY])
    assert r.code == 0, r.err
    assert "forgot 7 tokens in 1 document(s) [0]" in r.out and "mc gc --purge" in r.out
    assert "9-3-7-1" not in decode(tree_tokens(tree)) and "lamp oil" in decode(tree_tokens(tree))
    before = state(tree)
    again = run_mc(["forget", tree, "--match", "9-3-7-1", *TINY])  # a retried command
    assert again.code == 0 and "forgotten already" in again.out and state(tree) == before
    listed = run_mc(["forget", tree, "--list", *TINY])
    assert listed.code == 0 and "match_sha256" in listed.out and "9-3-7-1" not in listed.out
    assert len(listed.out.strip().splitlines()) == 1
    dry = run_mc(["gc", tree, "--purge", "--dry-run"])
    assert dry.code == 0 and "would expire" in dry.out
    r = run_mc(["gc", tree, "--purge", "--grace", "0", "--no-live-writers"])
    assert r.code == 0, r.err
    assert "expired" in r.out and "removed" in r.out
    with pytest.raises(mcstore.VersionNotFound):
        mcstore.open(tree, version=2)
    verify_ok(tree)


def test_forget_then_purge_in_one_command(tree):
    r = run_mc(["forget", tree, "--source", "alarm", "--purge", *TINY])
    assert r.code == 0, r.err
    assert "until this purge" in r.out and "expired" in r.out
    assert "alarm code" not in decode(tree_tokens(tree))


@pytest.mark.parametrize(
    "args, says",
    [
        (["--document", "7"], "no document 7"),
        (["--match", "x", "--source", "y"], "exactly one"),
        ([], "exactly one"),
        (["--match", "   "], "empty"),
    ],
)
def test_a_bad_rule_is_one_line_and_changes_nothing(tree, args, says):
    before = state(tree)
    r = run_mc(["forget", tree, *args, *TINY])
    assert r.code != 0
    one_error_line(r.err, says)
    assert state(tree) == before
