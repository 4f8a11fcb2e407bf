"""`GET /metrics` of `mc serve`: Prometheus' text format, scraped after real requests made with
the openai client, behind the API key like every other endpoint."""

from __future__ import annotations

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serve.conftest import MODEL

KEY = "k" * 24


def scrape(live, key=KEY) -> dict:
    r = httpx.get(f"{live.url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict, name: str, **labels) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_the_requests_answers_commits_and_errors(start):
    live = start(api_key=KEY)
    c = live.client(api_key=KEY)
    auth = {"Authorization": f"Bearer {KEY}"}
    doc = {"text": "The lighthouse keeper is named Ines.", "source": "notes.txt"}
    r = httpx.post(f"{live.url}/v1/memories/ann/documents", json=doc, headers=auth, timeout=60)
    assert r.status_code == 200
    msgs = [{"role": "user", "content": "Who keeps the lighthouse?"}]
    c.chat.completions.create(model=MODEL, user="ann", messages=msgs, max_tokens=4)
    stream = c.chat.completions.create(
        model=MODEL, user="ann", messages=msgs, max_tokens=4, stream=True
    )
    assert sum(1 for _ in stream) > 0
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="gpt-4o", user="ann", messages=msgs, max_tokens=2)
    assert httpx.get(f"{live.url}/metrics", timeout=30).status_code == 401  # no key, no metrics

    m = scrape(live)
    chat = "/v1/chat/completions"
    assert value(m, "mc_http_requests_total", route=chat, method="POST", status="200") == 2
    assert value(m, "mc_http_requests_total", route=chat, method="POST", status="404") == 1
    docs = "/v1/memories/{name}/documents"
    assert value(m, "mc_http_requests_total", route=docs, method="POST", status="200") == 1
    # refused before routing: an unauthenticated client's path is not a label
    assert value(m, "mc_http_requests_total", route="unmatched", method="GET", status="401") == 1
    assert value(m, "mc_http_request_seconds_count", route=chat) == 3
    assert value(m, "mc_first_token_seconds_count") == 2
    assert value(m, "mc_recall_passages_count") == 2
    assert value(m, "mc_completion_tokens_total") >= 2
    assert value(m, "mc_prompt_tokens_total") > 0
    assert value(m, "mc_commits_total", kind="chat") == 2
    assert value(m, "mc_commits_total", kind="document") == 1
    assert value(m, "mc_errors_total", type="invalid_request_error", code="model_not_found") == 1
    t = live.tree("ann")
    assert value(m, "mc_memory_tokens", memory="ann") == t.length
    assert value(m, "mc_memory_segments", memory="ann") == len(t.segments()) == 5
    again = scrape(live)  # the scrape itself is counted
    assert value(again, "mc_http_requests_total", route="/metrics", method="GET", status="200") == 1
