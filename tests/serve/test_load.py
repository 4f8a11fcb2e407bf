"""A bounded load test: 8 concurrent clients x 20 requests over 3 memories (half of them
streaming), then every turn is in its tree, in order, once, with the answer the client got."""

from __future__ import annotations

import threading
import time

import mcstore
from tests.serve.conftest import MODEL, chat_turns

CLIENTS, REQUESTS, TREES = 8, 20, 3


def test_concurrent_clients_over_three_trees(start):
    live = start(concurrency=3)
    got: dict[int, list[tuple[str, str]]] = {c: [] for c in range(CLIENTS)}
    failures: list[BaseException] = []

    def client(c: int) -> None:
        api = live.client()
        try:
            for r in range(REQUESTS):
                q = f"client {c} request {r}"
                kw = dict(
                    model=MODEL,
                    user=f"load-{c % TREES}",
                    max_tokens=4,
                    messages=[{"role": "user", "content": q}],
                )
                if c % 2:
                    stream = api.chat.completions.create(stream=True, **kw)
                    a = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
                else:
                    a = api.chat.completions.create(**kw).choices[0].message.content
                got[c].append((q, a.strip()))
        except BaseException as e:  # reported below, with the test's own assertion
            failures.append(e)

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=max(1.0, 150 - (time.monotonic() - t0)))
    assert not any(th.is_alive() for th in threads), "the load test ran past its time bound"
    assert not failures, failures[:3]
    for k in range(TREES):
        tree = live.tree(f"load-{k}")
        turns = chat_turns(tree)
        mine = [c for c in range(CLIENTS) if c % TREES == k]
        assert len(turns) == 2 * REQUESTS * len(mine)
        users = [x for r, x in turns if r == "user"]
        assert len(users) == len(set(users))  # no duplicates
        for i in range(0, len(turns), 2):  # one memory, one writer: a question, its answer
            assert turns[i][0] == "user" and turns[i + 1][0] == "assistant"
        pairs = {turns[i][1]: turns[i + 1][1] for i in range(0, len(turns), 2)}
        for c in mine:
            assert [u for u in users if u.startswith(f"client {c} ")] == [q for q, _ in got[c]]
            assert all(pairs[q] == a for q, a in got[c])  # the answer sent is the one kept
        mcstore.verify(tree.url)
