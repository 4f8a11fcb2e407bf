"""Inputs a client can send that the server must refuse as a 400 with one clear message,
never a 500 (issue 22, item 10): a lone surrogate in a chat message, a document's tags
larger than a segment holds."""

from __future__ import annotations

import json

import httpx

from tests.serve.api_helpers import error_of
from tests.serve.conftest import MODEL, chat_turns


def _post(url: str, raw: str) -> httpx.Response:
    return httpx.post(url, content=raw, headers={"content-type": "application/json"}, timeout=60)


def test_a_lone_surrogate_is_a_400_everywhere(start):
    live = start()
    url = f"{live.url}/v1/chat/completions"
    # JSON may spell a lone surrogate (\ud800); it is no character, and no UTF-8 holds it
    for messages in (
        '[{"role": "user", "content": "hi \\ud800 there"}]',
        '[{"role": "user", "content": [{"type": "text", "text": "x \\udfff"}]}]',
        '[{"role": "user", "content": "\\ud800"}, {"role": "assistant", "content": "b"},'
        ' {"role": "user", "content": "fine"}]',
        '[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b \\udc80"},'
        ' {"role": "user", "content": "fine"}]',
    ):
        raw = f'{{"model": "{MODEL}", "user": "sur", "max_tokens": 2, "messages": {messages}}}'
        err = error_of(_post(url, raw), 400)
        assert "surrogate" in err["message"] or "unicode" in err["message"].lower(), err
        assert err["param"] and err["param"].startswith("messages"), err
        assert "\n" not in err["message"]
    # a system prompt is not remembered but is still refused the same way
    raw = (
        f'{{"model": "{MODEL}", "user": "sur", "max_tokens": 2, "messages": '
        '[{"role": "system", "content": "\\ud800"}, {"role": "user", "content": "ok"}]}'
    )
    error_of(_post(url, raw), 400)
    for stream in (True, False):  # nothing was stored; the memory still answers
        body = {"model": MODEL, "user": "sur", "max_tokens": 2, "stream": stream}
        body["messages"] = [{"role": "user", "content": f"plain {stream}"}]
        assert httpx.post(url, json=body, timeout=60).status_code == 200
    assert [x for r, x in chat_turns(live.tree("sur")) if r == "user"] == [
        "plain True",
        "plain False",
    ]
    # the documents endpoint: 400 too (as before)
    err = error_of(_post(f"{live.url}/v1/memories/sur/documents", '{"text": "a \\ud800"}'), 400)
    assert err["param"] == "text"


def test_tags_larger_than_a_segment_are_a_400(start):
    live = start()
    url = f"{live.url}/v1/memories/tags/documents"
    for body in (
        {"text": "hello", "tags": ["t" * 2000] * 64},  # the case: 128 KB of tags
        # short in characters, long in stored bytes: the store's limit, still a 400
        {"text": "hello", "source": "s" * 512, "tags": ["\U0001f600" * 250] * 64},
    ):
        err = error_of(httpx.post(url, json=body, timeout=60), 400)
        assert "tags" in err["message"] and "\n" not in err["message"], err
        assert "internal" not in err["message"] and live.config.root not in err["message"]
    assert live.tree("tags").segments() == []  # nothing half written
    err = error_of(httpx.post(url, json={"text": "x", "tags": ["a\nb"]}, timeout=60), 400)
    assert err["param"].startswith("tags")
    ok = {"text": "hello", "source": "notes", "tags": ["people", "t" * 200]}
    r = httpx.post(url, json=ok, timeout=60)
    assert r.status_code == 200, r.text
    assert json.loads(r.text)["tags"] == ok["tags"]
    seg = live.tree("tags").segments()[0]
    assert (seg.source, list(seg.tags)) == ("notes", ok["tags"])
