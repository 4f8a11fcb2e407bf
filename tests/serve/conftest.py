"""Fixtures of the server tests: live `mc serve` apps on 127.0.0.1 over the tiny model.

Every server listens on 127.0.0.1 on a free port, is driven by the real ``openai`` client or
httpx, and is stopped when its test ends (``start``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import openai
import pytest

import mcstore
from mcruntime.serve import Memories, ServeConfig, create_app, running

# the moto S3 server of the store tests (importing it also sets dummy AWS variables)
from tests.store.conftest import moto_server  # noqa: F401

MODEL = "tiny-llama-s0"  # the tiny model's own name, what /v1/models lists


@dataclass
class Live:
    url: str  # http://127.0.0.1:PORT
    config: ServeConfig
    memories: Memories

    def client(self, api_key: str = "unused", **kw) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=60, **kw
        )

    def tree(self, name: str):
        return mcstore.open(
            f"{self.config.root}/{name}.mc", storage_options=self.config.storage_options or None
        )


@pytest.fixture
def start(tiny, tmp_path):
    """start(root=None, **ServeConfig fields) -> Live: a server on 127.0.0.1 until the test ends."""
    with contextlib.ExitStack() as stack:

        def make(root: str | None = None, **kw) -> Live:
            kw.setdefault("model", "tiny")
            kw.setdefault("window", 512)
            cfg = ServeConfig(root=root or str(tmp_path / "memories"), **kw)
            mem = Memories(cfg, base=tiny)
            url = stack.enter_context(running(create_app(cfg, mem)))
            return Live(url, cfg, mem)

        yield make


@pytest.fixture
def foreign_writer(monkeypatch, tiny):
    """arm(name, times, skip=0): the server's commits of segments on memory ``name``, after
    the first ``skip``, each meet a commit another writer (a second handle) made first,
    ``times`` times: a document ``foreign-K``."""
    from mcruntime import Session

    state = {"url": None, "skip": 0, "left": 0, "busy": False, "n": 0}
    real = mcstore.Tree.append_many  # Tree.append commits through it too

    def append_many(self, parts, **kw):
        if state["left"] and not state["busy"] and self.url.endswith(state["url"]):
            if state["skip"]:
                state["skip"] -= 1
            else:
                state["busy"], state["left"] = True, state["left"] - 1
                try:
                    state["n"] += 1
                    other = Session(self.url, model=tiny, window=512, create=False)
                    other.ingest(f"written elsewhere {state['n']}", source=f"foreign-{state['n']}")
                    other.close()
                finally:
                    state["busy"] = False
        return real(self, parts, **kw)

    monkeypatch.setattr(mcstore.Tree, "append_many", append_many)

    def arm(name: str, times: int, skip: int = 0) -> None:
        state.update(url=f"/{name}.mc", skip=skip, left=times)

    return arm


def chat_turns(tree, tokenizer=None) -> list[tuple[str, str]]:
    """(role, text) of every chat segment of a tree, oldest first (tiny model's tokenizer
    unless another is given)."""
    from mcmodels.tokenizer import ByteTokenizer

    tok = tokenizer or ByteTokenizer()
    out = []
    for seg in tree.segments():
        if seg.source in ("chat:user", "chat:assistant"):
            text = tok.decode(tree.tokens(seg.start, seg.stop).tolist()).strip()
            role = seg.source.split(":")[1]
            out.append((role, text.split(":", 1)[1].strip()))
    return out


def sources(tree) -> list[str]:
    return [seg.source for seg in tree.segments()]
