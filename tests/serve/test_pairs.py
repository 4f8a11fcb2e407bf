"""A request is all or nothing (issue 22, item 5): its question and its answer are committed
together, in one commit, or not at all. Two `mc serve` processes on one memory race; every
409 leaves nothing behind, so resending it (as the 409 invites) never stores a question twice.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

import mcstore
from tests.serve.api_helpers import free_port, serve_process, stop, wait_healthy
from tests.serve.conftest import MODEL, chat_turns

SERVERS, CLIENTS_PER_SERVER, REQUESTS, TRIES, BOUND_S = 2, 2, 50, 8, 240


def _ask(url: str, q: str, stream: bool) -> tuple[int, str]:
    """(status, answer or error code); a streamed error event counts as its status."""
    body = {
        "model": MODEL,
        "user": "race",
        "max_tokens": 3,
        "stream": stream,
        "messages": [{"role": "user", "content": q}],
    }
    if not stream:
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        if r.status_code != 200:
            return r.status_code, r.json()["error"]["code"] or r.text
        return 200, r.json()["choices"][0]["message"]["content"]
    text = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, r.json()["error"]["code"] or r.text
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if "error" in ev:
                return 409 if ev["error"]["code"] == "conflict" else 500, ev["error"]["code"]
            text += [c["delta"].get("content") or "" for c in ev["choices"]]
    return 200, "".join(text)


def test_two_server_processes_race_and_every_request_is_all_or_nothing(tmp_path):
    root = tmp_path / "memories"
    ports = [free_port() for _ in range(SERVERS)]
    procs = [serve_process(root, p) for p in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    sent: dict[str, list[int]] = {}  # question -> statuses, in order
    got: dict[str, str] = {}  # question -> the answer its 200 carried
    failures: list[BaseException] = []
    try:
        for url, p in zip(urls, procs, strict=True):
            wait_healthy(url, p, timeout=120)

        questions = [f"question {i}" for i in range(REQUESTS)]
        n_clients = SERVERS * CLIENTS_PER_SERVER

        def client(c: int) -> None:
            url = urls[c % SERVERS]
            try:
                for q in questions[c::n_clients]:
                    for _ in range(TRIES):  # a 409 says: send it again
                        status, out = _ask(url, q, stream=bool(c // SERVERS % 2))
                        sent.setdefault(q, []).append(status)
                        if status == 200:
                            got[q] = out.strip()
                            break
                        assert status == 409, (q, status, out)
            except BaseException as e:
                failures.append(e)

        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(max(1.0, BOUND_S - (time.monotonic() - t0)))
        assert not any(th.is_alive() for th in threads), "the race ran past its time bound"
        assert not failures, failures[:3]
    finally:
        errs = [stop(p) for p in procs]
    assert all("Traceback" not in e for e in errs), errs

    t = mcstore.open(str(root / "race.mc"))
    turns = chat_turns(t)
    users = [x for r, x in turns if r == "user"]
    conflicts = sum(s == 409 for st in sent.values() for s in st)
    dup = len(users) - len(set(users))
    orphans = sum(
        1
        for i, (r, _) in enumerate(turns)
        if r == "user" and turns[i + 1 : i + 2] != [] and turns[i + 1][0] != "assistant"
    ) + (1 if turns and turns[-1][0] == "user" else 0)
    print(
        f"\nrace: {REQUESTS} requests, {sum(map(len, sent.values()))} sent, {conflicts} got 409, "
        f"{len(got)} answered, {len(turns) // 2} pairs stored, {dup} duplicates, "
        f"{orphans} questions without their answer"
    )
    assert len(sent) == REQUESTS
    # every stored question has its answer right after it, and no question is stored twice
    assert [r for r, _ in turns] == ["user", "assistant"] * (len(turns) // 2), turns
    assert dup == 0 and orphans == 0
    # a 200 is in the tree once, with the answer it carried; what never got one is not
    pairs = {turns[i][1]: turns[i + 1][1] for i in range(0, len(turns), 2)}
    assert pairs == got
    # one commit per pair: no version of the tree holds a question without its answer
    for e in t.log():
        kinds = [r for r, _ in chat_turns(mcstore.open(t.url, version=e.version))]
        assert kinds == ["user", "assistant"] * (len(kinds) // 2), e
    mcstore.verify(t.url)


def _chat(live, q: str, history=(), stream=False) -> tuple[int, str]:
    body = {
        "model": MODEL,
        "user": "solo",
        "max_tokens": 3,
        "stream": stream,
        "messages": [*history, {"role": "user", "content": q}],
    }
    r = httpx.post(f"{live.url}/v1/chat/completions", json=body, timeout=60)
    if not stream:
        ok = r.status_code == 200
        return r.status_code, r.json()["choices"][0]["message"]["content"] if ok else r.text
    if '"error"' in r.text:
        return 409 if '"conflict"' in r.text else 500, r.text
    return 200, "".join(
        c["delta"].get("content") or ""
        for line in r.text.splitlines()
        if line.startswith("data: {")
        for c in json.loads(line[6:])["choices"]
    )


@pytest.mark.parametrize("stream", [False, True])
def test_the_answer_is_committed_with_its_question_or_neither_is(start, foreign_writer, stream):
    live = start()
    status, a0 = _chat(live, "first", stream=stream)
    assert status == 200
    # every commit after the request's first meets another writer's: the question must not
    # be left without its answer
    foreign_writer("solo", 20, skip=1)
    status, a1 = _chat(live, "second", stream=stream)
    t = live.tree("solo")
    turns = chat_turns(t)
    assert [r for r, _ in turns] == ["user", "assistant"] * (len(turns) // 2), turns
    if status == 200:
        assert turns[-2:] == [("user", "second"), ("assistant", a1.strip())]
    else:
        assert status == 409 and [x for _, x in turns] == ["first", a0.strip()]
    # every commit of the request meets another writer's: 409, and nothing of it is stored
    foreign_writer("solo", 20)
    status, out = _chat(live, "third", history=[{"role": "user", "content": "an old turn"},
                                                {"role": "assistant", "content": "its answer"}],
                        stream=stream)  # fmt: skip
    assert status == 409 and "send it again" in out, out
    t.refresh()
    assert [x for r, x in chat_turns(t) if r == "user"].count("third") == 0
    # sent again, as the 409 says: stored once, with its answer, and the history once
    foreign_writer("solo", 0)
    status, a3 = _chat(live, "third", history=[{"role": "user", "content": "an old turn"},
                                               {"role": "assistant", "content": "its answer"}],
                       stream=stream)  # fmt: skip
    assert status == 200
    t.refresh()
    turns = chat_turns(t)
    assert turns[-4:] == [
        ("user", "an old turn"),
        ("assistant", "its answer"),
        ("user", "third"),
        ("assistant", a3.strip()),
    ]
    users = [x for r, x in turns if r == "user"]
    assert len(users) == len(set(users))
    mcstore.verify(t.url)


def test_a_request_sent_again_is_answered_once(start):
    """A client that lost the response (a timeout, a dropped connection) sends the same
    request again: the tree already holds its answer; nothing is stored twice."""
    live = start()
    history = [
        {"role": "user", "content": "The code is 4711."},
        {"role": "assistant", "content": "Noted."},
    ]
    status, a1 = _chat(live, "What is the code?", history=history)
    assert status == 200
    for stream in (False, True):
        status, again = _chat(live, "What is the code?", history=history, stream=stream)
        assert status == 200 and again.strip() == a1.strip()
    t = live.tree("solo")
    assert chat_turns(t) == [
        ("user", "The code is 4711."),
        ("assistant", "Noted."),
        ("user", "What is the code?"),
        ("assistant", a1.strip()),
    ]
    # the conversation goes on; the same words asked again as a new turn are a new question
    h2 = [*history, {"role": "user", "content": "What is the code?"}]
    h2.append({"role": "assistant", "content": a1})
    status, _ = _chat(live, "What is the code?", history=h2)
    assert status == 200
    t.refresh()
    assert [x for r, x in chat_turns(t) if r == "user"].count("What is the code?") == 2
    status, _ = _chat(live, "What is the code?")  # no history: always a new question
    t.refresh()
    assert [x for r, x in chat_turns(t) if r == "user"].count("What is the code?") == 3


def test_a_memory_another_process_is_creating_is_waited_for(start, tiny):
    """Two servers' first requests on a new memory: one creates the tree (its root, then its
    first commit); the other, opening between the two writes, waits for the commit instead of
    answering 500 corrupt_memory."""
    from mcruntime import Session

    live = start()
    url = f"{live.config.root}/fresh.mc"
    Session(url, model=tiny, window=512).close()  # what the other server's create writes
    log = Path(url) / "log"
    held = {p: p.read_bytes() for p in log.iterdir()}
    for p in held:  # only the root is written, not yet the first commit
        p.unlink()

    def finish() -> None:  # the creating process's first commit lands a moment later
        time.sleep(0.3)
        for p, data in held.items():
            p.write_bytes(data)

    th = threading.Thread(target=finish)
    th.start()
    try:
        body = {"model": MODEL, "user": "fresh", "max_tokens": 3}
        body["messages"] = [{"role": "user", "content": "are you there?"}]
        r = httpx.post(f"{live.url}/v1/chat/completions", json=body, timeout=60)
    finally:
        th.join(10)
    assert r.status_code == 200, r.text
    out = r.json()["choices"][0]["message"]["content"]
    assert chat_turns(mcstore.open(url)) == [("user", "are you there?"), ("assistant", out.strip())]
