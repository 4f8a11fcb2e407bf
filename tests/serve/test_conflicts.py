"""One writer per tree inside a server; another writer (a second server, another process) makes
its commit conflict: the server reopens the tree at the newest commit and retries once, else
answers 409. A turn that got a 200 is always in the tree."""

from __future__ import annotations

import threading

import openai
import pytest

import mcstore
from mcruntime import Session
from tests.serve.conftest import MODEL, chat_turns, sources


@pytest.fixture
def foreign_writer(monkeypatch, tiny):
    """arm(url, times): before each of the next ``times`` appends the server makes on ``url``,
    another handle (a second writer) commits a document there first."""
    state = {"url": None, "left": 0, "busy": False, "n": 0}
    real = mcstore.Tree.append

    def append(self, tokens, **kw):
        if state["left"] and not state["busy"] and self.url.endswith(state["url"]):
            state["busy"], state["left"] = True, state["left"] - 1
            try:
                state["n"] += 1
                other = Session(self.url, model=tiny, window=512, create=False)
                other.ingest(f"written elsewhere {state['n']}", source=f"foreign-{state['n']}")
                other.close()
            finally:
                state["busy"] = False
        return real(self, tokens, **kw)

    monkeypatch.setattr(mcstore.Tree, "append", append)

    def arm(name: str, times: int) -> None:
        state["url"], state["left"] = f"/{name}.mc", times

    return arm


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


def test_a_second_conflict_is_409_and_nothing_half_done(start, foreign_writer):
    live = start()
    c = live.client()
    ask(c, "finn", "first")
    foreign_writer("finn", 2)
    with pytest.raises(openai.ConflictError) as e:
        ask(c, "finn", "lost in the race")
    assert e.value.code == "conflict" and "send it again" in e.value.message
    t = live.tree("finn")
    assert sources(t)[2:] == ["foreign-1", "foreign-2"]  # no half turn of the failed request
    foreign_writer("finn", 2)  # streamed: the error arrives as an event the client raises
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
    # (two servers' turns may interleave: each commit is one segment)
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
    for q, a in ok.items():
        i = turns.index(("user", q))
        assert ("assistant", a) in turns[i + 1 :]
    for k in (0, 1):  # each client's turns in the order it sent them
        mine = [x for x in users if x.startswith(f"burst {k}-")]
        assert mine == sorted(mine)
    mcstore.verify(one.tree("gina").url)
