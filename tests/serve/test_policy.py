"""The server's rules without a server: which turns are new, which names are memories, what a
stream still owes, and the limits a configuration must respect."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcruntime.serve import ServeConfig, ServeError, check_name, unseen
from mcruntime.serve.turns import missing_tail
from mcruntime.serve.wire import APIError

U1, A1, U2, A2, U3 = (
    ("user", "u1"),
    ("assistant", "a1"),
    ("user", "u2"),
    ("assistant", "a2"),
    ("user", "u3"),
)


def test_unseen_turns():
    assert unseen([], [U1, A1]) == []
    assert unseen([U1, A1], []) == [U1, A1]  # a new memory has seen nothing
    assert unseen([U1, A1], [U1, A1]) == []  # the usual case: the client resends its history
    assert unseen([U1, A1, U2, A2], [U1, A1]) == [U2, A2]
    assert unseen([U1, A1], [("user", "x"), ("assistant", "y"), U1, A1]) == []
    # a history longer than what the tree kept: its end lines up with the tree's end
    assert unseen([("user", "old"), ("assistant", "o"), U1, A1], [U1, A1]) == []
    assert unseen([U1, ("assistant", "edited")], [U1, A1]) == [U1, ("assistant", "edited")]
    assert unseen([U1, A1], [U1, A1, U2, A2]) == [U1, A1]  # not the tree's end: new again
    assert unseen([("user", " u1\n"), A1], [U1, A1]) == []  # surrounding blank space aside


@given(
    st.lists(st.sampled_from([U1, A1, U2, A2, U3]), max_size=6),
    st.lists(st.sampled_from([U1, A1, U2, A2, U3]), max_size=6),
)
def test_unseen_is_a_suffix_and_lines_up(history, tail):
    new = unseen(history, tail)
    k = len(history) - len(new)
    assert history[k:] == new
    if k:  # what it calls seen ends exactly where the tree's chat ends
        m = min(k, len(tail))
        assert m and history[k - m : k] == tail[len(tail) - m :]


def test_memory_names():
    for ok in ("alice", "a", "A-1_b.c", "x" * 64, "user.42", "0", "ann@example.com"):
        assert check_name(ok) == ok
    for bad in (
        None,
        "",
        "../x",
        "a/b",
        "a\\b",
        ".x",
        "-x",
        "x.",
        "a..b",
        "x" * 65,
        "a b",
        "s3://b",
        "a?x=1",
        "a#b",
        "%2e%2e",
        "é",
        "a\x00",
    ):
        with pytest.raises(APIError) as e:
            check_name(bad)
        assert e.value.status == 400 and e.value.code == "invalid_memory_name"


def test_missing_tail():
    assert missing_tail("", "abc") == "abc"
    assert missing_tail("\n\n", "abc") == "abc"  # blank lines streamed, then nothing
    assert missing_tail("ab", "abc") == "c"
    assert missing_tail("\nab", "abc") == "c"
    assert missing_tail("abc", "abc") == ""
    assert missing_tail("abx", "abc") == ""  # diverged: nothing sensible to add


def test_config_limits(tmp_path):
    cfg = ServeConfig(root=str(tmp_path) + "/", max_tokens=8, default_max_tokens=100)
    assert cfg.root == str(tmp_path) and cfg.default_max_tokens == 8
    for bad in ({"root": " "}, {"concurrency": 0}, {"max_request_bytes": 10}, {"port": -1}):
        with pytest.raises(ServeError):
            ServeConfig(**{"root": "x", **bad})


def test_answered_requests():
    from mcruntime.serve.turns import answered

    tail = [U1, A1, ("user", "q"), ("assistant", "the answer")]
    assert answered([U1, A1], "q", tail) == "the answer"  # the same request again
    assert answered([U1, A1], " q\n", tail) == "the answer"
    assert answered([], "q", tail) is None  # no history: a question may be asked again
    assert answered([U1, A1], "other", tail) is None
    assert answered([U2, A2], "q", tail) is None  # another conversation
    assert answered([U1, A1, ("user", "q"), ("assistant", "the answer")], "q", tail) is None
    assert answered([U1, A1], "q", [U1, A1, ("user", "q")]) is None  # no answer stored
