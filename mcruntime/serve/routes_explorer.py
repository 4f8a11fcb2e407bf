"""The explorer of `mc serve`: the page at ``/``, its assets under ``/explorer/``, and the
data it draws under ``/v1/memories/NAME/…`` (``mcruntime.serve.explorer`` does the work).

The page and its assets are the only routes the API key does not guard (``auth.public``):
they are the same files for everyone, hold no memory's data, and a browser cannot attach a
bearer key to a page load. The page asks for the key and sends it with every data request,
so the data and every write keep the API's rule. All assets ship in the package (no CDN).

Data routes (``version`` on the reads: any commit, default the newest):

- ``GET /v1/explorer/memories``: every memory with size, levels, segments, last commit
- ``GET …/view``, ``…/strips?start&stop&width``, ``…/segments?start&stop&limit``,
  ``…/text?start&stop`` (a page of raw text), ``…/commits?limit``, ``…/compare?a&b``,
  ``…/notes``, ``…/search?q&k``, ``…/replay?version`` (the focus a chat turn read)
- ``POST …/ask`` (``{"question", "max_tokens"}``): newline-delimited JSON, ``{"delta"}``
  pieces as the answer is decoded, then ``{"done": {text, memory, picture}}`` or ``{"error"}``
- ``POST …/tags`` (``{"tag", "version"}``), ``POST …/notes`` (``{"segment", "text"}``)
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from mcruntime.serve.explorer import Explorer, check_text
from mcruntime.serve.routes_memories import MemoriesDep, NameDep
from mcruntime.serve.wire import APIError

ASSETS = {  # the files the page is made of: name -> media type
    "index.html": "text/html; charset=utf-8",
    "explorer.js": "text/javascript; charset=utf-8",
    "explorer.css": "text/css; charset=utf-8",
}
# the page runs only its own script, shows no frames, and talks only to this server
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def explorer_of(memories: MemoriesDep) -> Explorer:
    return Explorer(memories)


ExplorerDep = Annotated[Explorer, Depends(explorer_of)]
Version = Annotated[int | None, Query(ge=1)]
Pos = Annotated[int | None, Query(ge=0)]

router = APIRouter()
data = APIRouter(prefix="/v1/memories/{name}")


def asset(name: str) -> Response:
    body = resources.files("mcruntime.serve").joinpath("explorer", name).read_bytes()
    headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
               "Cache-Control": "no-cache"}  # fmt: skip
    return Response(body, media_type=ASSETS[name], headers=headers)


@router.get("/", include_in_schema=False)
async def page():
    return asset("index.html")


@router.get("/explorer/{file}", include_in_schema=False)
async def explorer_asset(file: str):
    if file not in ASSETS:
        raise APIError(404, f"no explorer file {file[:80]!r}", code="not_found")
    return asset(file)


@router.get("/v1/explorer/memories")
async def summaries(memories: MemoriesDep, ex: ExplorerDep):
    names = await memories.read(memories.names)
    rows = await asyncio.gather(*(memories.read(ex.summary, n) for n in names))
    return {"object": "list", "data": list(rows)}


@data.get("/view")
async def view(name: NameDep, ex: ExplorerDep, memories: MemoriesDep, version: Version = None):
    return await memories.read(ex.view, name, version)


@data.get("/strips")
async def strips(
    name: NameDep, ex: ExplorerDep, memories: MemoriesDep, version: Version = None,
    start: Pos = None, stop: Pos = None, width: Annotated[int, Query(ge=1, le=4096)] = 800,
):  # fmt: skip
    return await memories.read(ex.strips, name, version, start, stop, width)


@data.get("/segments")
async def segments(
    name: NameDep, ex: ExplorerDep, memories: MemoriesDep, version: Version = None,
    start: Pos = None, stop: Pos = None, limit: Annotated[int, Query(ge=1, le=2000)] = 500,
):  # fmt: skip
    return await memories.read(ex.segments, name, version, start, stop, limit)


@data.get("/text")
async def text(
    name: NameDep, ex: ExplorerDep, memories: MemoriesDep, version: Version = None,
    start: Annotated[int, Query(ge=0)] = 0, stop: Pos = None,
):  # fmt: skip
    return await memories.read(ex.text, name, version, start, stop)


@data.get("/commits")
async def commits(
    name: NameDep, ex: ExplorerDep, memories: MemoriesDep, version: Version = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
):  # fmt: skip
    return await memories.read(ex.commits, name, version, limit)


@data.get("/compare")
async def compare(
    name: NameDep, ex: ExplorerDep, memories: MemoriesDep,
    a: Annotated[int, Query(ge=1)], b: Annotated[int, Query(ge=1)],
):  # fmt: skip
    return await memories.read(ex.compare, name, a, b)


@data.get("/notes")
async def list_notes(
    name: NameDep, ex: ExplorerDep, memories: MemoriesDep, version: Version = None
):
    return await memories.read(ex.notes, name, version)


@data.get("/search")
async def search(
    name: NameDep, ex: ExplorerDep, memories: MemoriesDep, q: str = "",
    k: Annotated[int, Query(ge=1, le=20)] = 8,
):  # fmt: skip
    check_text(q, "q")
    fut = await memories.submit(name, ex.search, name, q, k)  # the memory's session: its lock
    return await asyncio.shield(fut)


@data.get("/replay")
async def replay(
    name: NameDep, ex: ExplorerDep, memories: MemoriesDep, version: Annotated[int, Query(ge=2)]
):
    return await memories.read(ex.replay, name, version)


class TagRequest(BaseModel):
    tag: str = Field(min_length=1, max_length=100)
    version: int | None = Field(default=None, ge=1)


class NoteRequest(BaseModel):
    segment: int = Field(ge=0)
    text: str = Field(min_length=1, max_length=4000)


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=4000)
    max_tokens: int = Field(default=64, ge=1)


@data.post("/tags")
async def add_tag(name: NameDep, body: TagRequest, ex: ExplorerDep, memories: MemoriesDep):
    return await memories.read(ex.tag, name, body.tag, body.version)


@data.post("/notes")
async def add_note(name: NameDep, body: NoteRequest, ex: ExplorerDep, memories: MemoriesDep):
    fut = await memories.submit(name, ex.add_note, name, body.segment, body.text)
    return await asyncio.shield(fut)


@data.post("/ask")
async def ask(name: NameDep, body: AskRequest, request: Request, ex: ExplorerDep,
              memories: MemoriesDep):  # fmt: skip
    question = check_text(body.question, "question")
    limit = request.app.state.config.max_tokens
    if body.max_tokens > limit:
        raise APIError(400, f"max_tokens is {body.max_tokens}; this server writes at most "
                       f"{limit}", param="max_tokens", code="max_tokens_too_large")  # fmt: skip
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def emit(piece: str) -> None:  # on the worker thread
        loop.call_soon_threadsafe(queue.put_nowait, ("delta", piece))

    fut = await memories.submit(name, ex.answer, name, question, body.max_tokens, emit)
    fut.add_done_callback(lambda f: loop.call_soon_threadsafe(queue.put_nowait, ("end", f)))

    async def lines():
        while True:
            kind, value = await queue.get()
            if kind == "delta":
                if value:
                    yield _line({"delta": value})
                continue
            exc = value.exception()
            if exc is None:
                yield _line({"done": value.result()})
            elif isinstance(exc, APIError):
                yield _line(exc.body())
            else:
                yield _line(APIError(500, f"internal error ({type(exc).__name__})",
                                     type="server_error").body())  # fmt: skip
            return

    return StreamingResponse(lines(), media_type="application/x-ndjson",
                             headers={"Cache-Control": "no-cache"})  # fmt: skip


def _line(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n"


router.include_router(data)
