"""The explorer in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright over a live ``mc serve`` on 127.0.0.1, on a memory of more than 100k tokens on local
disk and on moto S3. Skipped, with the reason, where there is no browser.

Each view is photographed; with ``MC_EXPLORER_SHOTS=1`` the pictures are written to
docs/explorer/ (what the README shows), else to the test's temporary folder."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import httpx
import pytest

import mcstore
from tests.serve.explorer_helpers import EVIL, build_memory, launch
from tests.store.conftest import BUCKET

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "explorer"
KEY = "k3y-" + "e" * 28
NAME = "journal"


@pytest.fixture(scope="module")
def pristine(tiny, tmp_path_factory) -> Path:
    """The memory, built once for the module (copied by each test that changes it)."""
    root = tmp_path_factory.mktemp("explorer") / "pristine"
    build_memory(tiny, str(root / f"{NAME}.mc"))
    assert mcstore.open(str(root / f"{NAME}.mc")).length > 100_000
    return root


@pytest.fixture(scope="module")
def browser():
    pw, b = launch()
    yield b
    b.close()
    pw.stop()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, errors


def local_root(pristine: Path, tmp_path: Path) -> str:
    root = tmp_path / "memories"
    shutil.copytree(pristine, root)
    return str(root)


def s3_root(pristine: Path, so: dict) -> str:
    import s3fs

    root = f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}/memories"
    fs = s3fs.S3FileSystem(**so)
    fs.put(str(pristine / f"{NAME}.mc"), f"{root}/{NAME}.mc", recursive=True)
    return root


def shot(pg, folder: Path | None, name: str) -> None:
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(folder / f"{name}.png"))


def walk(pg, live, *, shots: Path | None) -> dict:
    """Every view, as a person would use it; -> what was measured."""
    from playwright.sync_api import expect

    tree = live.tree(NAME)
    pg.goto(f"{live.url}/")
    row = pg.locator(f'#memories tr[data-memory="{NAME}"]')
    expect(row).to_contain_text(f"{tree.length:,}")
    shot(pg, shots, "memories")

    # the tree: LOD strips of the whole history; drill from level 2 to raw text
    pg.goto(f"{live.url}/#/m/{NAME}")
    pg.locator("body[data-ready]").wait_for()
    ready_ms = pg.evaluate("window.mcReadyAt")
    expect(pg.locator("#summary")).to_contain_text(f"{tree.length:,} tokens")
    level2 = pg.locator('#strips canvas[data-level="2"]')
    box = level2.bounding_box()
    level2.click(position={"x": box["width"] * 0.25, "y": 5})
    expect(pg.locator("#drill")).to_contain_text("level 2 gist")
    node = int(pg.locator("#drill").inner_text().split("gist ")[1].split(":")[0].replace(",", ""))
    span = tree.block**2
    expect(pg.locator("#range")).to_contain_text(f"tokens {node * span:,}–{(node + 1) * span:,}")
    text = httpx.get(f"{live.url}/v1/memories/{NAME}/text", headers=live.headers,
                     params={"start": node * span, "stop": (node + 1) * span}).json()["text"]  # fmt: skip
    expect(pg.locator("#text")).to_have_text(text)
    # one level down: the strips now show that node's span; level 1 drills to 32 tokens
    level1 = pg.locator('#strips canvas[data-level="1"]')
    level1.click(position={"x": level1.bounding_box()["width"] * 0.5, "y": 5})
    expect(pg.locator("#drill")).to_contain_text("level 1 gist")
    expect(pg.locator("#range")).to_contain_text(f"of {tree.length:,}")

    # the <script> document: its source and text shown as text, nothing run
    pg.locator("#whole").click()
    evil = pg.locator("#segments li", has_text="<b>evil</b>.html")
    evil.click()
    expect(pg.locator("#text")).to_contain_text(EVIL)
    assert pg.evaluate("window.__pwned") is None
    assert pg.locator("#text script, #text img, #segments b").count() == 0
    shot(pg, shots, "tree")

    # search: the index's hits, matched words highlighted
    pg.locator('#tabs button[data-tab="ask"]').click()
    pg.fill("#q", "padlock cabinet")
    pg.locator("#searchform button").click()
    expect(pg.locator("#hits mark").first).to_have_text("padlock")

    # ask: the streamed answer, and its focus drawn where the API says
    pg.fill("#question", "What opens the padlock on the medical cabinet?")
    with pg.expect_response(lambda r: r.url.endswith(f"/{NAME}/ask")) as got:
        pg.locator("#askform button").click()
    expect(pg.locator("#answer[data-done]")).to_be_attached(timeout=60_000)
    lines = [json.loads(x) for x in got.value.text().splitlines() if x]
    done = lines[-1]["done"]
    assert "".join(x.get("delta", "") for x in lines[:-1]).strip() == done["text"].strip()
    assert pg.locator("#answer").inner_text().strip() == done["text"].strip()
    spans = done["picture"]["spans"]
    assert spans and any(s["kind"] == "tail" for s in spans)
    drawn = pg.locator("#focus-spans li")
    expect(drawn).to_have_count(len(spans))
    for i, s in enumerate(spans):
        li = drawn.nth(i)
        assert (li.get_attribute("data-start"), li.get_attribute("data-stop")) == (
            str(s["start"]), str(s["stop"])
        )  # fmt: skip
        assert li.get_attribute("data-kind") == s["kind"]
    marks = pg.locator("#overlay .mark.detail, #overlay .mark.tail")  # on the whole timeline
    expect(marks).to_have_count(len(spans))
    assert sorted((int(m.get_attribute("data-start")), int(m.get_attribute("data-stop")))
                  for m in marks.all()) == sorted((s["start"], s["stop"]) for s in spans)  # fmt: skip
    recall = pg.locator("#focus-recall li[data-start]")
    expect(recall).to_have_count(len(done["picture"]["recall"]))
    shot(pg, shots, "ask")

    # playback: three commits back, then tag that version and see it listed
    head = live.tree(NAME).version
    pg.locator('#tabs button[data-tab="history"]').click()
    expect(pg.locator("#head")).to_have_text(str(head))
    for k in range(1, 4):
        pg.locator("#back").click()
        expect(pg.locator("#version")).to_have_text(str(head - k))
    old = mcstore.open(live.tree(NAME).url, version=head - 3,
                       storage_options=live.config.storage_options or None)  # fmt: skip
    expect(pg.locator("#summary")).to_contain_text(f"{old.length:,} tokens")
    expect(pg.locator("#commits li").first).to_have_attribute("data-version", str(head - 3))
    pg.fill("#tag-name", "before-question")
    pg.locator("#tagform button").click()
    expect(pg.locator('#tags li[data-tag="before-question"]')).to_contain_text(f"v{head - 3}")
    assert live.tree(NAME).tags()["before-question"] == head - 3
    shot(pg, shots, "history")
    return {"ready_ms": ready_ms, "tokens": tree.length}


class Server:
    """A live server (``start``) with the headers its data requests need."""

    def __init__(self, live, key: str | None = None):
        self.live, self.headers = live, {"Authorization": f"Bearer {key}"} if key else {}

    def __getattr__(self, name):
        return getattr(self.live, name)


def test_explorer_on_local_disk(start, pristine, tmp_path, page, capsys):
    live = Server(start(root=local_root(pristine, tmp_path)))
    shots = SHOTS if os.environ.get("MC_EXPLORER_SHOTS") else tmp_path / "shots"
    got = walk(page, live, shots=shots)
    with capsys.disabled():
        print(f"\nexplorer first view of {got['tokens']} tokens: {got['ready_ms']:.0f} ms")


@pytest.mark.s3
def test_explorer_on_s3(start, pristine, moto_server, page):
    so = moto_server["storage_options"]
    live = Server(start(root=s3_root(pristine, so), storage_options=so))
    walk(page, live, shots=None)


def test_a_note_on_a_segment_is_a_versioned_commit(start, pristine, tmp_path, page):
    from playwright.sync_api import expect

    live = start(root=local_root(pristine, tmp_path))
    before = live.tree(NAME).version
    page.goto(f"{live.url}/#/m/{NAME}")
    page.locator("#segments li", has_text="todo.md").click()
    page.fill("#note-text", "checked <b>twice</b>")
    page.locator("#noteform button").click()
    expect(page.locator("#notes li")).to_contain_text("checked <b>twice</b>")
    t = live.tree(NAME)
    assert t.version == before + 1 and t.log(limit=1)[0].message == "note on segment 4"
    assert mcstore.open(t.url, version=before).objects() == [
        n for n in t.objects() if not n.startswith("notes/")
    ]
    # the commit list shows it, and stepping back one commit shows the segment without it
    expect(page.locator("#commits li").first).to_contain_text("note on segment 4")
    page.locator("#back").click()
    expect(page.locator("#version")).to_have_text(str(before))
    page.locator("#segments li", has_text="todo.md").click()
    expect(page.locator("#notes li")).to_have_count(0)


def test_without_the_key_nothing_is_shown_or_written(start, pristine, tmp_path, page):
    """A server with a key (as required off loopback): the page loads, every data request
    without the key is refused, and the page asks for the key."""
    from playwright.sync_api import expect

    live = start(root=local_root(pristine, tmp_path), api_key=KEY)
    for path in ("/", "/explorer/explorer.js", "/explorer/explorer.css"):
        r = httpx.get(live.url + path)
        assert r.status_code == 200 and "default-src 'none'" in r.headers["content-security-policy"]
    for method, path, body in (
        ("GET", "/v1/explorer/memories", None),
        ("GET", f"/v1/memories/{NAME}/strips", None),
        ("GET", f"/v1/memories/{NAME}/text", None),
        ("GET", f"/v1/memories/{NAME}/search?q=padlock", None),
        ("POST", f"/v1/memories/{NAME}/tags", {"tag": "sneaky"}),
        ("POST", f"/v1/memories/{NAME}/notes", {"segment": 0, "text": "sneaky"}),
        ("POST", f"/v1/memories/{NAME}/ask", {"question": "hi"}),
    ):
        r = httpx.request(method, live.url + path, json=body)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", path
    before = live.tree(NAME)
    assert "sneaky" not in before.tags() and not any(
        n.startswith("notes/") for n in before.objects()
    )
    page.goto(f"{live.url}/")
    expect(page.locator("#keyform")).to_be_visible()
    expect(page.locator("#status")).to_contain_text("needs its API key")
    expect(page.locator("#memories tbody tr")).to_have_count(0)
    page.fill("#key", KEY)
    page.locator("#keyform button").click()
    expect(page.locator(f'#memories tr[data-memory="{NAME}"]')).to_be_visible()
