"""What the explorer's tests share: a memory of more than 100k tokens built once, copied per
test (local disk or moto S3), and headless Chromium (Debian's ``chromium``) driven by
Playwright, skipped with the reason where either is missing."""

from __future__ import annotations

import random
import shutil

import pytest

FACT = "The padlock on the medical cabinet opens with the code 6305."
EVIL = '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2"> done'
WORDS = (
    "station journal river mountain pump valve generator crew supply radio weather storm "
    "antenna kitchen greenhouse battery sensor hatch corridor report morning evening"
).split()


def journal(seed: int, tokens: int, fact: str | None = None) -> str:
    """About ``tokens`` bytes (the tiny model's tokenizer is bytes) of journal lines."""
    r = random.Random(seed)
    lines, size = [], 0
    while size < tokens:
        line = f"Day {len(lines) // 20 + 1}: " + " ".join(r.choice(WORDS) for _ in range(12)) + "."
        lines.append(line)
        size += len(line) + 1
    if fact:
        lines.insert(len(lines) // 3, fact)
    return "\n".join(lines)


def build_memory(base, url: str, *, parts: int = 3, part_tokens: int = 34_000,
                 storage_options=None) -> None:  # fmt: skip
    """A memory of ``parts`` journal documents (the fact in the first), the ``<script>``
    document and a short note: more than 100k tokens, ``2 * (parts + 2)`` commits."""
    from mcruntime import Session

    with Session(url, model=base, window=512, storage_options=storage_options) as s:
        for i in range(parts):
            s.ingest(
                journal(i, part_tokens, FACT if i == 0 else None), source=f"journal-{i + 1}.txt"
            )
        s.ingest(EVIL, source="<b>evil</b>.html")
        s.ingest("Remember to check the antenna after every storm.", source="todo.md")


def launch():
    """(playwright, browser): headless Chromium; skips the test, with why, without one."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no headless browser: install Debian's chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
    except Exception as e:  # a browser that cannot start here (no sandbox rights, libraries)
        pw.stop()
        pytest.skip(f"chromium cannot start here: {str(e).splitlines()[0]}")
    return pw, browser
