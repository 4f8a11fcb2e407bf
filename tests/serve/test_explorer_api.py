"""The explorer's data routes and `mc explore`, without a browser: what the strips aggregate,
text pages, commits, compare, notes and tags, and the one-tree server as a real process."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest

import mcstore
from mcruntime import timeline
from mcruntime.serve.config import ServeError
from mcruntime.serve.explorer import one_tree
from tests.cli.helpers import mc_cmd, mc_env
from tests.serve.api_helpers import error_of, stop, wait_healthy


@pytest.fixture
def memory(start, tiny):
    from mcruntime import Session

    live = start()
    url = f"{live.config.root}/ana.mc"
    with Session(url, model=tiny, window=512) as s:
        for i in range(3):
            s.ingest(f"part {i} " + "lorem ipsum dolor sit amet " * 400, source=f"p{i}.txt")
    return live


def get(live, path, **params):
    r = httpx.get(f"{live.url}/v1/memories/ana/{path}", params=params, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_strips_fold_every_level_into_buckets(memory):
    t = memory.tree("ana")
    st = get(memory, "strips", width=100)
    assert [row["level"] for row in st["levels"]] == list(range(t.num_levels))
    raw = st["levels"][0]
    assert len(raw["count"]) == 100 and sum(raw["count"]) >= t.length
    level1 = st["levels"][1]
    assert level1["norm"] is not None and all(c >= 1 for c in level1["count"][:90])
    assert set(st["roles"]) == {timeline.ROLES.index("document")}
    inner = get(memory, "strips", start=1024, stop=2048, width=32)
    assert inner["levels"][0]["count"] == [32] * 32  # one block of raw tokens per bucket
    assert inner["levels"][1]["count"] == [1] * 32  # one node each: its gist's norm
    g = t.gists(1, 32, 34).astype("float32")
    norms = (g**2).sum(axis=1) ** 0.5
    assert inner["levels"][1]["norm"][:2] == pytest.approx(norms.tolist(), abs=1e-4)
    assert get(memory, "strips", width=4096)["width"] == 4096
    error_of(httpx.get(f"{memory.url}/v1/memories/ana/strips", params={"width": 0}), 400)
    error_of(httpx.get(f"{memory.url}/v1/memories/nobody/strips"), 404)


def test_text_is_paged_and_matches_the_tree(memory, tiny):
    t = memory.tree("ana")
    page = get(memory, "text", start=10, stop=t.length)
    assert page["stop"] == 10 + timeline.PAGE_TOKENS and page["next"] == page["stop"]
    assert page["text"] == tiny.tokenizer.decode(t.tokens(10, page["stop"]).tolist())
    last = get(memory, "text", start=t.length - 5)
    assert last["next"] is None and last["stop"] == t.length


def test_commits_compare_tags_and_notes(memory):
    t = memory.tree("ana")
    commits = get(memory, "commits")["data"]
    assert commits[0]["version"] == t.version
    appended = [c for c in commits if c["segments"]]
    assert [c["segments"] for c in appended] == [[2], [1], [0]]
    first = appended[-1]["version"]
    cmp = get(memory, "compare", a=first, b=t.version)
    assert cmp["common"] == 1 and [s["source"] for s in cmp["only_b"]] == ["p1.txt", "p2.txt"]
    old = get(memory, "view", version=first)
    assert old["version"] == first and old["head"] == t.version and old["segments"] == 1
    error_of(httpx.get(f"{memory.url}/v1/memories/ana/view", params={"version": 999}), 404)

    r = httpx.post(f"{memory.url}/v1/memories/ana/tags", json={"tag": "v-one", "version": first})
    assert r.status_code == 200 and r.json()["tags"] == {"v-one": first}
    error_of(httpx.post(f"{memory.url}/v1/memories/ana/tags", json={"tag": "bad name!"}), 400)
    r = httpx.post(f"{memory.url}/v1/memories/ana/notes", json={"segment": 1, "text": "hi"})
    assert r.status_code == 200 and r.json()["version"] == t.version + 1
    error_of(
        httpx.post(f"{memory.url}/v1/memories/ana/notes", json={"segment": 9, "text": "x"}), 400
    )
    assert get(memory, "notes")["data"]["1"][0]["text"] == "hi"
    assert get(memory, "notes", version=t.version)["data"] == {}
    assert get(memory, "segments")["data"][1]["notes"] == 1


def test_search_highlights_the_matched_words(memory):
    hits = get(memory, "search", q="What about ipsum?")["data"]
    assert hits
    for h in hits:
        for a, b in h["highlights"]:
            assert h["text"][a:b].lower() == "ipsum"
    error_of(httpx.get(f"{memory.url}/v1/memories/ana/search", params={"q": " "}), 400)


def test_one_tree_must_be_named_and_exist(tmp_path):
    with pytest.raises(ServeError, match=r"NAME\.mc"):
        one_tree(str(tmp_path / "notes"))
    with pytest.raises(mcstore.TreeNotFound):
        one_tree(str(tmp_path / "notes.mc"))


def test_mc_explore_prints_the_address_of_one_tree(memory):
    url = f"{memory.config.root}/ana.mc"
    p = subprocess.Popen(mc_cmd("explore", url, "--model", "tiny", "--window", 512),
                         env=mc_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        address = p.stdout.readline().strip()
        assert address.startswith("http://127.0.0.1:") and address.endswith("/#/m/ana"), address
        base = address.split("/#")[0]
        wait_healthy(base, p)
        assert "MegaContext explorer" in httpx.get(base + "/").text
        view = httpx.get(f"{base}/v1/memories/ana/view").json()
        assert view["length"] == memory.tree("ana").length
        names = httpx.get(f"{base}/v1/explorer/memories").json()["data"]
        assert [m["id"] for m in names] == ["ana"]
        error_of(httpx.post(f"{base}/v1/memories/other/documents", json={"text": "x"}), 404)
    finally:
        stop(p)


def test_replay_shows_the_focus_a_chat_turn_read(memory):
    r = httpx.post(f"{memory.url}/v1/memories/ana/ask", json={"question": "Which part said ipsum?", "max_tokens": 4}, timeout=60)  # fmt: skip
    lines = [json.loads(x) for x in r.text.splitlines() if x]
    done = lines[-1]["done"]
    spans = done["picture"]["spans"]
    assert spans and {s["kind"] for s in spans} <= {"detail", "tail"}
    turn = done["memory"]["version"]
    commits = get(memory, "commits")["data"]
    chat = [c for c in commits if c["chat"]]
    assert chat and chat[0]["version"] <= turn
    got = get(memory, "replay", version=chat[0]["version"])
    assert got["question"] == "Which part said ipsum?"
    assert got["picture"]["query"] == got["question"] and got["picture"]["spans"]
    error_of(httpx.get(f"{memory.url}/v1/memories/ana/replay", params={"version": 2}), 400)
