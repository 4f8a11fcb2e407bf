"""`mc mcp ROOT`: the memories under ROOT as Model Context Protocol tools, over stdio.

An agent (Claude Desktop, an IDE, any MCP client) gets the same memories `mc serve` serves, one
tree per name (ROOT/NAME.mc), through the same ``Memories`` (sessions, per-memory locks,
retries after another writer's commit, errors), so the two can run on one ROOT side by side.
Tools (``mcp`` SDK's ``MCPServer``):

* ``remember(memory, text, source)``: store a text as a document (one commit);
* ``ask(memory, question, max_tokens)``: answer from memory; the question and its answer are
  remembered as a chat turn, as in `mc chat`;
* ``search(memory, query, k)``: what the memory holds on a query, without answering;
* ``list_documents(memory)``, ``list_memories()``;
* ``forget(memory, document | source | match, purge)``: take a document or a text out of the
  memory (``Session.forget``); with ``purge`` also from its older versions.
Errors reach the client as tool errors with the API's one-line message.
"""

from __future__ import annotations

from mcruntime.serve.config import ServeConfig
from mcruntime.serve.memories import Memories
from mcruntime.serve.turns import check_name
from mcruntime.serve.wire import APIError

INSTRUCTIONS = (
    "Long-term memory. Each memory is a name (e.g. a user or a project). Use `remember` to store "
    "a note or document, `ask` to get an answer written from what the memory holds, `search` to "
    "see the passages it holds on a query, `list_documents` to see what is stored, `forget` to "
    "remove a document or a text the user wants forgotten."
)


def build(config: ServeConfig, memories: Memories | None = None):
    """The ``MCPServer`` (not started) and the ``Memories`` it works on."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    memories = memories if memories is not None else Memories(config)
    server = MCPServer("megacontext", instructions=INSTRUCTIONS, log_level="WARNING")

    async def run(name: str, fn, *args):
        try:
            check_name(name)
            fut = await memories.submit(name, fn, *args)
            return await fut
        except APIError as e:
            raise ToolError(e.message) from None

    @server.tool()
    async def remember(memory: str, text: str, source: str = "mcp") -> dict:
        """Store a text in a memory (created on first use) as one document."""
        return await run(memory, memories.ingest, memory, text, source, [])

    @server.tool()
    async def ask(memory: str, question: str, max_tokens: int = 256) -> dict:
        """Answer a question from a memory; the question and answer are remembered."""
        max_tokens = max(1, min(int(max_tokens), config.max_tokens))
        r = await run(memory, memories.chat, memory, [], question, max_tokens)
        return {"answer": r.text, "memory": r.memory}

    @server.tool()
    async def search(memory: str, query: str, k: int = 5) -> list[dict]:
        """The passages a memory holds on a query (best first), without answering."""
        return await run(memory, memories.search, memory, query, max(1, min(int(k), 20)))

    @server.tool()
    async def list_documents(memory: str) -> list[dict]:
        """The documents and chat turns a memory holds, oldest first."""
        return await run(memory, memories.documents, memory)

    @server.tool()
    async def forget(
        memory: str,
        document: int | None = None,
        source: str | None = None,
        match: str | None = None,
        purge: bool = False,
    ) -> dict:
        """Forget one document (its id), documents whose source matches a glob, or every
        occurrence of a text; ``purge`` also removes it from the memory's older versions."""
        rule = {"document": document, "source": source, "match": match}
        return await run(memory, memories.forget, memory, rule, purge)

    @server.tool()
    async def list_memories() -> list[str]:
        """The names of the memories under this server's root."""
        try:
            return await memories.read(memories.names)
        except APIError as e:
            raise ToolError(e.message) from None

    return server, memories
