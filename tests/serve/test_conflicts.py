"""One writer per tree inside a server; another writer (a second server, another process) makes
its commit conflict: the server reopens the tree at the newest commit and retries (up to
COMMIT_TRIES commits), else answers 409 with nothing of the request stored. A turn that got a
200 is always in the tree, its question and answer committed together."""

from __future__ import annotations

import threading

import openai
import pytest

import mcstore
from mcruntime.serve.memories import COMMIT_TRIES
from tests.serve.conftest import MODEL, chat_turns, sources


def ask(client, user, text, **kw):
    return client.chat.completions.create(
        model=MODEL, user=user, max_tokens=3, messages=[{"role": "user", "content": text}], **kw
    )


def test_a_conflict_is_retried_at_the_newest_commit(start, foreign_writer):
    live = start()
    c = live.client()
    a0 = ask(c, "erin", "first").choices[0].message.content
    foreign_writer("erin", 1)
    a1 = ask(c, "erin", "second").choices[0].message.content  # 200 after one retry
    t = live.tree("erin")
    assert sources(t) == ["chat:user", "chat:assistant", "foreign-1", "chat:user", "chat:assistant"]
    assert chat_turns(t) == [
        ("user", "first"),
        ("assistant", a0.strip()),
        ("user", "second"),
        ("assistant", a1.strip()),
    ]
    mcstore.verify(t.url)


def test_conflicts_on_every_try_are_409_and_nothing_half_done(start, foreign_writer):
    live = start()
    c = live.client()
    ask(c, "finn", "first")
    foreign_writer("finn", COMMIT_TRIES)
    with pytest.raises(openai.ConflictError) as e:
        ask(c, "finn", "lost in the race")
    assert e.value.code == "conflict" and "send it again" in e.value.message
    assert "question was not stored" in e.value.message
    t = live.tree("finn")
    foreign = [f"foreign-{k + 1}" for k in range(COMMIT_TRIES)]
    assert sources(t)[2:] == foreign  # no half turn of the failed request
    foreign_writer(
        "finn", COMMIT_TRIES
    )  # streamed: the error arrives as an event the client raises
    with pytest.raises(openai.APIError) as e:
        for _ in ask(c, "finn", "lost again", stream=True):
            pass
    assert "conflict" in str(e.value.body or e.value.message)
    a = ask(c, "finn", "third").choices[0].message.content  # and the server recovers
    t.refresh()
    assert chat_turns(t)[-2:] == [("user", "third"), ("assistant", a.strip())]
    assert [r for r, x in chat_turns(t) if x.startswith("lost")] == []


def test_two_servers_on_one_root_lose_nothing(start):
    one = start()
    two = start(root=one.config.root)  # a second server (own sessions, own handles)
    clients = [one.client(), two.client()]
    answers = []
    for k in range(8):  # alternate: every other request meets a tree that moved on
        r = ask(clients[k % 2], "gina", f"turn {k}")
        answers.append(r.choices[0].message.content.strip())
    turns = chat_turns(one.tree("gina"))
    assert turns == [
        x for k, a in enumerate(answers) for x in (("user", f"turn {k}"), ("assistant", a))
    ]

    # and both at once, from threads: every 200 is in the tree once, with its answer after it
    # (a question and its answer are one commit: they never interleave with another's)
    ok, errors = {}, []

    def burst(k: int) -> None:
        for i in range(4):
            try:
                r = ask(clients[k], "gina", f"burst {k}-{i}")
                ok[f"burst {k}-{i}"] = r.choices[0].message.content.strip()
            except openai.ConflictError as e:  # allowed: the client was told to send it again
                errors.append(e)

    threads = [threading.Thread(target=burst, args=(k,)) for k in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert len(ok) + len(errors) == 8
    turns = chat_turns(one.tree("gina"))
    users = [x for r, x in turns if r == "user"]
    assert len(users) == len(set(users))  # no duplicates
    assert [r for r, _ in turns] == ["user", "assistant"] * (len(turns) // 2)
    for q, a in ok.items():
        i = turns.index(("user", q))
        assert turns[i + 1] == ("assistant", a)
    stored = {x for x in users if x.startswith("burst ")}
    assert stored == set(ok)  # a 409 stored nothing
    for k in (0, 1):  # each client's turns in the order it sent them
        mine = [x for x in users if x.startswith(f"burst {k}-")]
        assert mine == sorted(mine)
    mcstore.verify(one.tree("gina").url)
