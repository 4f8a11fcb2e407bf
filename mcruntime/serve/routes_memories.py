"""The memory resource of `mc serve`: ``/v1/memories…`` (list, info, documents, export,
forget)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from mcruntime.serve.memories import Memories
from mcruntime.serve.turns import check_name
from mcruntime.serve.wire import DocumentRequest, ForgetRequest


def memories_of(request: Request) -> Memories:
    """The server's ``Memories`` (``create_app`` puts it on the app's state)."""
    return request.app.state.memories


def memory_name(name: str) -> str:
    """A memory named in the path, checked (400 for a name that could leave ROOT)."""
    return check_name(name)


MemoriesDep = Annotated[Memories, Depends(memories_of)]
NameDep = Annotated[str, Depends(memory_name)]

router = APIRouter(prefix="/v1/memories")


@router.get("")
async def list_memories(memories: MemoriesDep):
    names = await memories.read(memories.names)
    return {"object": "list", "data": [{"object": "memory", "id": n} for n in names]}


@router.get("/{name}")
async def memory_info(name: NameDep, memories: MemoriesDep):
    return await memories.read(memories.info, name)


@router.post("/{name}/documents")
async def add_document(name: NameDep, body: DocumentRequest, memories: MemoriesDep):
    fut = await memories.submit(name, memories.ingest, name, body.text, body.source, body.tags)
    return await asyncio.shield(fut)


@router.get("/{name}/documents")
async def list_documents(name: NameDep, memories: MemoriesDep):
    """The memory's segments (documents and chat turns) with their ids, oldest first."""
    docs = await memories.read(memories.documents, name)
    return {"object": "list", "data": [{"object": "memory.segment", **d} for d in docs]}


@router.get("/{name}/export")
async def export_memory(name: NameDep, memories: MemoriesDep):
    """One JSON line per segment, streamed (as ``mc export``)."""
    lines = await memories.read(memories.export, name)
    return StreamingResponse(lines, media_type="application/x-ndjson")


@router.delete("/{name}/documents/{document}")
async def forget_document(name: NameDep, document: int, memories: MemoriesDep, purge: bool = False):
    """Forget one document (its id in the listing); ``?purge=true`` also purges it."""
    fut = await memories.submit(name, memories.forget, name, {"document": document}, purge)
    return await asyncio.shield(fut)


@router.post("/{name}/forget")
async def forget(name: NameDep, body: ForgetRequest, memories: MemoriesDep):
    """Forget a document, the documents whose source matches a glob, or a text."""
    fut = await memories.submit(
        name, memories.forget, name, body.rule(), body.purge, body.drop_tags
    )
    return await asyncio.shield(fut)
