"""`mc mcp ROOT` driven by the MCP SDK's own client over stdio (a real subprocess): the tools
remember, search, ask, list and forget, and refuse a bad memory name with a tool error."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import mcstore
from tests.cli.helpers import ROOT


def _env() -> dict:
    keep = ("MC_CACHE", "HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    return env | {"MC_READER": "keeper", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def _data(result):
    assert not result.is_error, result.content
    if result.structured_content is not None and "result" in result.structured_content:
        return result.structured_content["result"]
    return json.loads(result.content[0].text)


async def _session(root: str) -> dict:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    server = StdioServerParameters(
        command=sys.executable, args=["-m", "cli", "mcp", root, "--model", "tiny"],
        env=_env(), cwd=str(ROOT),
    )  # fmt: skip
    out: dict = {}
    async with Client(server, read_timeout_seconds=120) as c:
        out["tools"] = sorted(t.name for t in (await c.list_tools()).tools)
        note = {"memory": "ann", "text": "The ferry leaves at seven.", "source": "notes.txt"}
        out["remember"] = _data(await c.call_tool("remember", note))
        long = " ".join(f"Line {i} of the harbour log says nothing new." for i in range(40))
        await c.call_tool("remember", {"memory": "ann", "text": long, "source": "log.txt"})
        q = {"memory": "ann", "query": "When does the ferry leave?"}
        out["search"] = _data(await c.call_tool("search", q))
        ask = {"memory": "ann", "question": "When does the ferry leave?", "max_tokens": 4}
        out["ask"] = _data(await c.call_tool("ask", ask))
        out["documents"] = _data(await c.call_tool("list_documents", {"memory": "ann"}))
        forget = {"memory": "ann", "match": "leaves at seven", "purge": True}
        out["forget"] = _data(await c.call_tool("forget", forget))
        out["after"] = _data(await c.call_tool("search", q))
        out["memories"] = _data(await c.call_tool("list_memories", {}))
        out["bad"] = await c.call_tool("list_documents", {"memory": "../x"})
        out["missing"] = await c.call_tool("search", {"memory": "nobody", "query": "x"})
    return out


def test_an_agent_remembers_searches_asks_and_lists_through_mcp(tmp_path):
    root = str(tmp_path / "memories")
    out = asyncio.run(_session(root))
    assert out["tools"] == ["ask", "forget", "list_documents", "list_memories", "remember",
                            "search"]  # fmt: skip
    assert out["remember"]["memory"] == "ann" and out["remember"]["tokens"] > 0
    assert any("ferry leaves at seven" in p["text"] for p in out["search"])
    assert set(out["ask"]) == {"answer", "memory"}
    docs = out["documents"]
    assert [d["role"] for d in docs] == ["document", "document", "user", "assistant"]
    assert docs[0]["source"] == "notes.txt"
    assert out["memories"] == ["ann"]
    assert out["forget"]["documents"] == [0] and out["forget"]["purge"]["expired_versions"] > 0
    assert not any("leaves at seven" in p["text"] for p in out["after"])
    assert out["bad"].is_error and "invalid memory name" in out["bad"].content[0].text
    assert out["missing"].is_error and "no memory named 'nobody'" in out["missing"].content[0].text
    t = mcstore.open(f"{root}/ann.mc")
    assert [s.source for s in t.segments()] == [
        "notes.txt",
        "log.txt",
        "chat:user",
        "chat:assistant",
    ]
