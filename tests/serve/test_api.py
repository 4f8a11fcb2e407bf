"""The OpenAI API of `mc serve` on a live server: chat, streaming, models, documents, memory
info, health, and errors in OpenAI's shape, through the real openai client and raw httpx."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest

from tests.serve.conftest import MODEL, chat_turns, sources

ERROR_KEYS = {"message", "type", "param", "code"}


def error_of(r: httpx.Response, status: int) -> dict:
    """The response is a JSON error in OpenAI's shape with this status, and no traceback."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body["error"]


def test_chat_answers_from_memory_and_remembers_only_new_turns(start):
    live = start()
    c = live.client()
    r = c.chat.completions.create(
        model=MODEL,
        user="alice",
        max_tokens=6,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "The harbour code is 4711."},
        ],
    )
    a1 = r.choices[0].message.content
    assert r.object == "chat.completion" and r.model == MODEL and r.id.startswith("chatcmpl-")
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 6 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    t = live.tree("alice")
    # the system prompt is not remembered; the question and the answer given are
    assert chat_turns(t) == [("user", "The harbour code is 4711."), ("assistant", a1.strip())]
    assert r.model_extra["memory"] == {"name": "alice", "version": t.version, "length": t.length}

    # the client sends the whole conversation again: only the new question is appended
    history = [
        {"role": "user", "content": "The harbour code is 4711."},
        {"role": "assistant", "content": a1},
    ]
    r2 = c.chat.completions.create(
        model="tiny",
        user="alice",
        max_tokens=4,  # the name the server was started with
        messages=[*history, {"role": "user", "content": "What is the code?"}],
    )
    a2 = r2.choices[0].message.content
    t.refresh()
    assert chat_turns(t) == [
        ("user", "The harbour code is 4711."),
        ("assistant", a1.strip()),
        ("user", "What is the code?"),
        ("assistant", a2.strip()),
    ]
    # a conversation the tree never saw (another client's few-shot turns): appended first
    r3 = c.chat.completions.create(
        model=MODEL,
        user="alice",
        max_tokens=3,
        messages=[
            {"role": "user", "content": "ping"},
            {"role": "assistant", "content": "pong"},
            {"role": "user", "content": "ping again"},
        ],
    )
    t.refresh()
    assert chat_turns(t)[4:] == [
        ("user", "ping"),
        ("assistant", "pong"),
        ("user", "ping again"),
        ("assistant", r3.choices[0].message.content.strip()),
    ]
    # the X-Memory header names the memory too, and wins over `user`
    c.chat.completions.create(
        model=MODEL,
        user="alice",
        max_tokens=2,
        extra_headers={"X-Memory": "bob"},
        messages=[{"role": "user", "content": "hi bob"}],
    )
    assert chat_turns(live.tree("bob"))[0] == ("user", "hi bob")
    t.refresh()
    assert len(chat_turns(t)) == 8
    # no header, no user: the default memory
    c.chat.completions.create(
        model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "anyone?"}]
    )
    assert chat_turns(live.tree("default"))[0] == ("user", "anyone?")


def test_streaming_is_openai_chunks_with_usage(start):
    live = start()
    c = live.client()
    stream = c.chat.completions.create(
        model=MODEL,
        user="carol",
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Tell me about the ferry."}],
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {ch.id for ch in chunks} == {chunks[0].id}
    assert all(ch.object == "chat.completion.chunk" and ch.model == MODEL for ch in chunks)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finish[-1] in ("stop", "length") and set(finish[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens <= 8
    assert chunks[-1].usage.prompt_tokens > 0
    assert all(ch.usage is None for ch in chunks[:-1])
    t = live.tree("carol")
    assert chat_turns(t) == [("user", "Tell me about the ferry."), ("assistant", text.strip())]

    # the wire itself: `data: {json}` events separated by blank lines, then `data: [DONE]`
    body = {
        "model": MODEL,
        "user": "carol",
        "max_tokens": 4,
        "stream": True,
        "messages": [{"role": "user", "content": "and again"}],
    }
    with httpx.stream("POST", f"{live.url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    parsed = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert parsed[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all("usage" not in p for p in parsed)  # only with stream_options.include_usage
    t.refresh()
    assert chat_turns(t)[-2][1] == "and again"


def test_models_health_documents_and_memory_info(start):
    live = start()
    c = live.client()
    assert [m.id for m in c.models.list()] == [MODEL]
    assert c.models.retrieve(MODEL).owned_by == "megacontext"
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "model_not_found"
    assert httpx.get(f"{live.url}/healthz").json() == {"status": "ok"}

    doc = {
        "text": "The lighthouse keeper is named Ines.",
        "source": "notes.txt",
        "tags": ["people"],
    }
    r = httpx.post(f"{live.url}/v1/memories/dave/documents", json=doc, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["memory"] == "dave" and out["tokens"] > 30 and out["source"] == "notes.txt"
    t = live.tree("dave")
    assert (t.version, t.length) == (out["version"], out["length"])
    seg = t.segments()[0]
    assert (seg.source, tuple(seg.tags)) == ("notes.txt", ("people",))
    c.chat.completions.create(
        model=MODEL, user="dave", max_tokens=3, messages=[{"role": "user", "content": "Who?"}]
    )
    info = httpx.get(f"{live.url}/v1/memories/dave").json()
    t.refresh()
    assert info["id"] == "dave" and info["length"] == t.length and info["version"] == t.version
    assert info["segments"] == 3 and info["levels"][0] == {"level": 0, "nodes": t.length}
    assert info["log"][0]["message"] == "chat: user + assistant"  # one commit: both or neither
    assert "notes.txt" in " ".join(str(e["message"]) for e in info["log"])
    assert sources(t) == ["notes.txt", "chat:user", "chat:assistant"]
    assert str(live.config.root) not in json.dumps(info)  # the server's storage stays private

    listed = httpx.get(f"{live.url}/v1/memories").json()
    assert listed == {"object": "list", "data": [{"object": "memory", "id": "dave"}]}
    err = error_of(httpx.get(f"{live.url}/v1/memories/nobody"), 404)
    assert err["code"] == "memory_not_found"
    err = error_of(httpx.post(f"{live.url}/v1/memories/dave/documents", json={"text": ""}), 400)
    assert err["param"] == "text"


def test_errors_are_openai_shaped(start):
    live = start(max_request_bytes=4096, max_tokens=32)
    url = f"{live.url}/v1/chat/completions"
    ok = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    err = error_of(
        httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}), 400
    )
    assert err["code"] == "invalid_json"
    err = error_of(httpx.post(url, json={"model": MODEL}), 400)
    assert err["param"] == "messages" and err["type"] == "invalid_request_error"
    err = error_of(httpx.post(url, json={**ok, "messages": []}), 400)
    assert err["param"] == "messages"
    err = error_of(httpx.post(url, json={**ok, "max_tokens": 0}), 400)
    assert err["param"] == "max_tokens"
    err = error_of(httpx.post(url, json={**ok, "max_tokens": 33}), 400)
    assert err["code"] == "max_tokens_too_large"
    err = error_of(httpx.post(url, json={**ok, "n": 2}), 400)
    assert err["param"] == "n"
    last_assistant = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    err = error_of(httpx.post(url, json={**ok, "messages": last_assistant}), 400)
    assert err["param"] == "messages.1.role"
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    err = error_of(httpx.post(url, json={**ok, "messages": image}), 400)
    assert err["code"] == "unsupported_content"
    for bad in ("../etc", "a/b", ".hidden", "x" * 65, "s3:", "a?b", "..", "a..b", "é"):
        header = bad.encode()  # as sent on the wire (latin-1 for what is not ASCII)
        err = error_of(httpx.post(url, json=ok, headers={"X-Memory": header}), 400)
        assert err["code"] == "invalid_memory_name", bad
        err = error_of(httpx.post(url, json={**ok, "user": bad}), 400)
        assert err["code"] == "invalid_memory_name", bad
    err = error_of(httpx.get(f"{live.url}/v1/memories/..%2F..%2Fetc"), 404)
    err = error_of(httpx.get(f"{live.url}/v1/memories/a..b"), 400)
    # oversized bodies: declared (Content-Length) and streamed in chunks without a length
    big = {**ok, "messages": [{"role": "user", "content": "x" * 5000}]}
    err = error_of(httpx.post(url, json=big), 413)
    assert err["code"] == "request_too_large"
    payload = json.dumps(big).encode()
    chunked = (payload[i : i + 1000] for i in range(0, len(payload), 1000))
    err = error_of(
        httpx.post(url, content=chunked, headers={"content-type": "application/json"}), 413
    )
    # a question longer than the window: 400 context_length_exceeded, nothing remembered
    long_q = {**ok, "user": "wordy", "messages": [{"role": "user", "content": "y" * 900}]}
    err = error_of(httpx.post(url, json=long_q), 400)
    assert err["code"] == "context_length_exceeded"
    err = error_of(httpx.get(f"{live.url}/v1/nothing"), 404)
    err = error_of(httpx.get(url), 405)
    # the openai client raises its own error types on these
    c = live.client()
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=1000
        )
    # nothing was remembered, no tree was made outside the root; a good request works
    assert chat_turns(live.tree("wordy")) == []
    assert sorted(p.name for p in Path(live.config.root).iterdir()) == ["wordy.mc"]
    assert sorted(p.name for p in Path(live.config.root).parent.iterdir()) == ["memories"]
    r = httpx.post(url, json=ok, timeout=60)
    assert r.status_code == 200 and r.headers["x-memory"] == "default"


def test_unknown_memory_is_404_without_create(start):
    live = start(create=False, default_memory=None)
    c = live.client()
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model=MODEL, user="ghost", messages=msgs, max_tokens=2)
    assert e.value.code == "memory_not_found"
    with pytest.raises(openai.BadRequestError) as e:  # no memory named and no default
        c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=2)
    assert e.value.code == "invalid_memory_name"
    r = httpx.post(f"{live.url}/v1/memories/ghost/documents", json={"text": "boo"})
    assert error_of(r, 404)["code"] == "memory_not_found"


def test_sessions_beyond_max_open_close_and_reopen(start):
    live = start(max_open=2)
    c = live.client()
    answers = {}
    for k in range(3):
        for name in ("m1", "m2", "m3"):
            r = c.chat.completions.create(
                model=MODEL,
                user=name,
                max_tokens=2,
                messages=[{"role": "user", "content": f"{name} turn {k}"}],
            )
            answers.setdefault(name, []).append(r.choices[0].message.content.strip())
            assert len(live.memories.opened) <= 2 and live.memories.opened[-1] == name
    for name, got in answers.items():
        expect = [
            x for k, a in enumerate(got) for x in (("user", f"{name} turn {k}"), ("assistant", a))
        ]
        assert chat_turns(live.tree(name)) == expect


def test_a_stream_the_client_left_is_still_remembered(start):
    """The 200 went out with the first byte: the turn is committed even if nobody reads it."""
    live = start()
    body = {
        "model": MODEL,
        "user": "hal",
        "max_tokens": 24,
        "stream": True,
        "messages": [{"role": "user", "content": "are you there?"}],
    }
    with httpx.stream("POST", f"{live.url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        first = next(r.iter_lines())
        assert first.startswith("data: ") and '"role":"assistant"' in first
    # the connection is closed; the memory's lock is held until the turn is committed, so
    # the next request on it sees the turn
    c = live.client()
    c.chat.completions.create(
        model=MODEL, user="hal", max_tokens=2, messages=[{"role": "user", "content": "next"}]
    )
    users = [x for r, x in chat_turns(live.tree("hal")) if r == "user"]
    assert users == ["are you there?", "next"]


def test_a_stream_that_cannot_start_is_an_ordinary_error(start):
    live = start()
    with pytest.raises(openai.BadRequestError) as e:
        live.client().chat.completions.create(
            model=MODEL,
            user="ivy",
            max_tokens=8,
            stream=True,
            messages=[{"role": "user", "content": "z" * 900}],  # longer than the window
        )
    assert e.value.code == "context_length_exceeded"
    assert chat_turns(live.tree("ivy")) == []


def test_a_folder_that_is_not_a_tree_is_never_written_into(start):
    live = start()
    taken = Path(live.config.root) / "notes.mc"
    taken.mkdir(parents=True)
    (taken / "thesis.txt").write_text("years of work")
    r = httpx.post(
        f"{live.url}/v1/chat/completions",
        json={"model": MODEL, "user": "notes", "messages": [{"role": "user", "content": "hi"}]},
        timeout=60,
    )
    err = error_of(r, 409)
    assert "not a MegaContext tree" in err["message"] and str(taken) not in err["message"]
    assert sorted(p.name for p in taken.iterdir()) == ["thesis.txt"]


def test_a_text_reader_answers_over_the_api(start):
    """`mc serve --reader NAME`: the reader writes the answer; the turn pair is stored."""
    live = start(reader="tiny")
    c = live.client()
    c.chat.completions.create(
        model=MODEL, user="ann", messages=[{"role": "user", "content": "The gate code is 4417."}]
    )
    r = c.chat.completions.create(
        model=MODEL, user="ann", messages=[{"role": "user", "content": "What is the gate code?"}]
    )
    assert isinstance(r.choices[0].message.content, str)
    assert live.memories.reader_name == "tiny-llama-s0"
    sources = [sg.source for sg in live.tree("ann").segments()]
    assert sources == ["chat:user", "chat:assistant"] * 2


def test_a_memory_is_exported_as_json_lines_streamed(start, tiny):
    from mcruntime.exchange import export_lines

    live = start()
    doc = {"text": "The lighthouse keeper is named Ines.", "source": "notes.txt", "tags": ["p"]}
    assert httpx.post(f"{live.url}/v1/memories/erin/documents", json=doc, timeout=60).is_success
    live.client().chat.completions.create(
        model=MODEL, user="erin", max_tokens=3, messages=[{"role": "user", "content": "Who?"}]
    )
    with httpx.stream("GET", f"{live.url}/v1/memories/erin/export", timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        body = "".join(r.iter_text())
    lines = [json.loads(x) for x in body.splitlines()]
    assert [x["role"] for x in lines] == ["document", "user", "assistant"]
    assert lines[0]["text"] == doc["text"] and lines[0]["tags"] == ["p"]
    assert lines[1]["text"] == "Who?"
    assert body == "".join(export_lines(live.tree("erin"), tiny.tokenizer))  # as `mc export`
    listed = httpx.get(f"{live.url}/v1/memories/erin/documents").json()["data"]
    assert [(d["id"], d["source"], d["role"]) for d in listed] == [
        (0, "notes.txt", "document"), (1, "chat:user", "user"), (2, "chat:assistant", "assistant"),
    ]  # fmt: skip
    assert listed[0]["tags"] == ["p"] and listed[0]["tokens"] > 0
    err = error_of(httpx.get(f"{live.url}/v1/memories/nobody/documents"), 404)
    assert err["code"] == "memory_not_found"
    err = error_of(httpx.get(f"{live.url}/v1/memories/nobody/export"), 404)
    assert err["code"] == "memory_not_found"


def test_a_document_is_forgotten_and_purged_over_http(start):
    live = start()
    secret = {"text": "The safe combination is 31-07-66.", "source": "safe.txt"}
    other = {"text": "The lighthouse keeper is named Ines.", "source": "notes.txt"}
    for doc in (secret, other):
        assert httpx.post(f"{live.url}/v1/memories/fay/documents", json=doc, timeout=60).is_success
    url = f"{live.url}/v1/memories/fay"
    r = httpx.delete(f"{url}/documents/0", params={"purge": "true"}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["documents"] == [0] and body["purge"]["expired_versions"] > 0
    exported = httpx.get(f"{url}/export", timeout=60).text
    assert "31-07-66" not in exported and "Ines" in exported
    found = httpx.post(f"{url}/forget", json={"match": "no such text"}, timeout=60).json()
    assert found["version"] == body["version"] and found["tokens"] == 0  # nothing committed
    err = error_of(httpx.delete(f"{url}/documents/9", timeout=60), 400)
    assert "no document 9" in err["message"]
    err = error_of(httpx.post(f"{url}/forget", json={"match": "x", "source": "y"}), 400)
    assert "exactly one" in err["message"]
    assert httpx.post(f"{url}/forget", json={"bogus": 1}).status_code == 400  # as every bad body
