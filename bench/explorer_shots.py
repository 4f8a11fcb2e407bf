"""Screenshots of the explorer over a real memory for the README (``docs/explorer/``).

    python -m bench.explorer_shots

The memory holds files every machine has (this repository's README and three modules of
Python's standard library) and one chat turn, read by the default model; the question is
answered by the 1.5B reader where installed. Needs Debian's chromium and playwright (dev).
The browser tests (``MC_EXPLORER_SHOTS=1``) photograph the tiny test model's memory instead.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "explorer"
QUESTION = "What is COPY_BUFSIZE in shutil when not on Windows?"


def build(tree: Path) -> None:
    from mcruntime import Session

    with Session(str(tree)) as s:
        s.ingest((ROOT / "README.md").read_text(), source="README.md")
        for mod in (shutil, textwrap, zipfile):
            s.ingest(Path(mod.__file__).read_text(), source=Path(mod.__file__).name)
        s.remember_turn(
            "Please remember: the staging deploy window is Thursday 14:00 UTC.",
            "Noted: staging deploys on Thursday at 14:00 UTC.",
        )


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    work = Path(tempfile.mkdtemp(prefix="mc-shots-"))
    tree = work / "docs.mc"
    build(tree)
    p = subprocess.Popen(
        [sys.executable, "-m", "cli", "explore", str(tree)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        url = next(m.group(0) for line in p.stdout if (m := re.search(r"http://\S+", line)))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"))
            pg = browser.new_page(viewport={"width": 1280, "height": 860})
            pg.goto(url)
            pg.locator("body[data-ready]").wait_for(timeout=60_000)
            pg.screenshot(path=str(OUT / "tree.png"))
            pg.locator('#tabs button[data-tab="ask"]').click()
            pg.fill("#q", "COPY_BUFSIZE")
            pg.locator("#searchform button").click()
            expect(pg.locator("#hits mark").first).to_be_visible(timeout=60_000)
            pg.fill("#question", QUESTION)
            pg.locator("#askform button").click()
            expect(pg.locator("#answer[data-done]")).to_be_attached(timeout=300_000)
            pg.screenshot(path=str(OUT / "ask.png"))
            print("answer:", pg.locator("#answer").inner_text().strip())
            pg.locator('#tabs button[data-tab="history"]').click()
            pg.locator("#commits li").first.wait_for()
            pg.screenshot(path=str(OUT / "history.png"))
            browser.close()
    finally:
        p.terminate()
        p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
