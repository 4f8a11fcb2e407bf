"""The server's state is bounded (issue 22, item 11): a memory's lock lives only while a
request holds or waits for it, `--max-memories` caps the trees clients can create, and
`--no-create` turns creation off."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest

from mcruntime.serve import Memories, ServeConfig, ServeError
from tests.cli.helpers import run_mc
from tests.serve.api_helpers import error_of, free_port, serve_process, stop, wait_healthy
from tests.serve.conftest import MODEL, chat_turns


def _ask(url: str, memory: str, q: str = "hi") -> httpx.Response:
    body = {"model": MODEL, "user": memory, "max_tokens": 2}
    body["messages"] = [{"role": "user", "content": q}]
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


def test_a_lock_lives_only_while_it_is_held_or_waited_on(tmp_path):
    mem = Memories(ServeConfig(root=str(tmp_path), concurrency=4), base=object())
    inside: dict[str, int] = {}
    most: dict[str, int] = {}
    guard = threading.Lock()
    gate = threading.Event()

    def work(name: str, wait: bool) -> str:
        with guard:
            inside[name] = inside.get(name, 0) + 1
            most[name] = max(most.get(name, 0), inside[name])
        if wait:
            gate.wait(30)
        else:
            time.sleep(0.001)
        with guard:
            inside[name] -= 1
        return name

    async def main() -> None:
        held = await mem.submit("busy", work, "busy", True)  # holds "busy"
        waiting = [asyncio.ensure_future(mem.submit("busy", work, "busy", False)) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert mem.locked == ["busy"]  # held and waited on: kept
        # many other names come and go meanwhile: none of their locks stays behind
        for k in range(300):
            await (await mem.submit(f"m{k}", work, f"m{k}", False))
        assert mem.locked == ["busy"] and not held.done()
        # a waiter whose request is cancelled leaves; the lock stays for the others
        waiting[0].cancel()
        await asyncio.sleep(0.01)
        assert mem.locked == ["busy"]
        gate.set()
        await held
        for w in waiting[1:]:
            await (await w)
        assert mem.locked == []  # nobody holds or waits: nothing kept

    try:
        asyncio.run(main())
    finally:
        gate.set()
        mem.close()
    assert most["busy"] == 1  # one memory: one request at a time, throughout
    assert all(v == 0 for v in inside.values())


def test_locks_do_not_grow_with_every_memory_name(start):
    live = start(max_open=2)
    for k in range(12):
        assert _ask(live.url, f"name{k}").status_code == 200
    assert live.memories.locked == []
    assert len(live.memories.opened) <= 2


def test_max_memories_caps_what_clients_create(start):
    live = start(max_memories=3)
    (Path(live.config.root) / "old.mc").mkdir(parents=True)  # what ROOT holds counts
    assert _ask(live.url, "a").status_code == 200
    assert _ask(live.url, "b").status_code == 200
    err = error_of(_ask(live.url, "c"), 403)
    assert err["code"] == "memory_limit_reached" and "3" in err["message"], err
    assert live.config.root not in err["message"]
    docs = f"{live.url}/v1/memories/d/documents"
    assert error_of(httpx.post(docs, json={"text": "x"}, timeout=60), 403)["param"] == "memory"
    assert not (Path(live.config.root) / "c.mc").exists()
    assert not (Path(live.config.root) / "d.mc").exists()
    assert _ask(live.url, "a", "still here").status_code == 200  # existing memories answer
    assert [x for r, x in chat_turns(live.tree("a")) if r == "user"] == ["hi", "still here"]


def test_max_memories_holds_under_concurrent_creation(start):
    live = start(max_memories=2, concurrency=4)
    codes: list[int] = []
    threads = [
        threading.Thread(target=lambda k=k: codes.append(_ask(live.url, f"new{k}").status_code))
        for k in range(8)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert sorted(codes) == [200, 200] + [403] * 6, codes
    assert len(list(Path(live.config.root).glob("*.mc"))) == 2


def test_no_create_answers_404_and_creates_nothing(start):
    live = start(create=False)
    err = error_of(_ask(live.url, "ghost"), 404)
    assert err["code"] == "memory_not_found"
    r = httpx.post(f"{live.url}/v1/memories/ghost/documents", json={"text": "x"}, timeout=60)
    assert error_of(r, 404)["code"] == "memory_not_found"
    assert not Path(live.config.root).exists() or list(Path(live.config.root).iterdir()) == []


def test_config_and_cli_refuse_a_bad_limit(tmp_path):
    for bad in (0, -1):
        with pytest.raises(ServeError, match="max_memories"):
            ServeConfig(root=str(tmp_path), max_memories=bad)
    r = run_mc(["serve", tmp_path, "--max-memories", "0"])
    assert r.code == 2 and "--max-memories" in r.err
    r = run_mc(["serve", "--help"])
    assert "--max-memories" in r.out and "--no-create" in r.out


def test_mc_serve_max_memories_and_no_create_as_a_process(tmp_path):
    port = free_port()
    root = tmp_path / "mem"
    p = serve_process(root, port, "--max-memories", 1)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, p)
        assert _ask(url, "first").status_code == 200
        assert error_of(_ask(url, "second"), 403)["code"] == "memory_limit_reached"
    finally:
        assert "Traceback" not in stop(p)
    p = serve_process(root, port, "--no-create")
    try:
        wait_healthy(url, p)
        assert _ask(url, "first").status_code == 200
        assert error_of(_ask(url, "third"), 404)["code"] == "memory_not_found"
    finally:
        assert "Traceback" not in stop(p)
    assert sorted(x.name for x in root.iterdir()) == ["first.mc"]
