"""The chat resource of `mc serve`: ``/v1/chat/completions`` (streamed as server-sent events
when asked) and ``/v1/models``, in the OpenAI wire format (``mcruntime.serve.wire``)."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from mcruntime.serve.config import ServeConfig
from mcruntime.serve.memories import Memories
from mcruntime.serve.routes_memories import MemoriesDep
from mcruntime.serve.turns import TurnResult, check_name
from mcruntime.serve.wire import (
    APIError,
    ChatRequest,
    chunk,
    completion,
    completion_id,
    models_list,
    usage,
)

log = logging.getLogger(__name__)

MEMORY_HEADER = "x-memory"

router = APIRouter()


@router.get("/v1/models")
async def list_models(memories: MemoriesDep, request: Request):
    return models_list(memories.model_ids[:1], request.app.state.started)


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, memories: MemoriesDep, request: Request):
    if model_id not in memories.model_ids:
        raise _no_model(model_id, memories)
    return models_list([model_id], request.app.state.started)["data"][0]


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request, memories: MemoriesDep):
    config: ServeConfig = request.app.state.config
    name = check_name(request.headers.get(MEMORY_HEADER) or body.user or config.default_memory)
    if body.model not in memories.model_ids:
        raise _no_model(body.model, memories)
    if body.n != 1:
        raise APIError(400, "only n=1 is supported", param="n")
    max_tokens = body.max_completion_tokens or body.max_tokens or config.default_max_tokens
    if max_tokens > config.max_tokens:
        raise APIError(
            400,
            f"max_tokens is {max_tokens}; this server writes at most {config.max_tokens}",
            param="max_tokens",
            code="max_tokens_too_large",
        )
    history, question = body.turns()
    model = memories.model_ids[0]
    headers = {"X-Memory": name}
    if not body.stream:
        fut = await memories.submit(name, memories.chat, name, history, question, max_tokens)
        r: TurnResult = await asyncio.shield(fut)
        use = usage(r.prompt_tokens, r.completion_tokens)
        out = completion(completion_id(), model, r.text, r.finish_reason, use, r.memory)
        return JSONResponse(out, headers=headers)

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def emit(piece: str) -> None:  # on the worker thread
        loop.call_soon_threadsafe(queue.put_nowait, ("delta", piece))

    fut = await memories.submit(name, memories.chat, name, history, question, max_tokens, emit)
    fut.add_done_callback(lambda f: queue.put_nowait(("end", f)))
    first = await queue.get()
    if first[0] == "end" and first[1].exception() is not None:
        raise first[1].exception()  # nothing sent yet: an ordinary error response
    include = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        _events(first, queue, completion_id(), model, include),
        media_type="text/event-stream",
        headers={**headers, "Cache-Control": "no-cache"},
    )


def _no_model(model: str, memories: Memories) -> APIError:
    return APIError(
        404,
        f"the model {model[:80]!r} does not exist here; this server answers with "
        f"{memories.model_ids[0]!r} (see GET /v1/models)",
        param="model",
        code="model_not_found",
    )


async def _events(first, queue: asyncio.Queue, cid: str, model: str, include_usage: bool):
    """The SSE body: a role chunk, content chunks, the finish chunk, the usage chunk when
    asked for, ``[DONE]``. An error after the first byte is one ``data: {"error": …}`` event
    (what the openai client raises on) and no ``[DONE]``."""
    created = int(time.time())

    def one(delta, finish=None):
        return _sse(chunk(cid, model, created, delta, finish, with_usage=include_usage))

    yield one({"role": "assistant", "content": ""})
    item = first
    while True:
        kind, value = item
        if kind == "delta":
            if value:
                yield one({"content": value})
        else:
            exc = value.exception()
            if exc is not None:
                if not isinstance(exc, APIError):
                    log.error("unexpected error while streaming", exc_info=exc)
                    exc = APIError(
                        500, f"internal error ({type(exc).__name__})", type="server_error"
                    )
                yield _sse(exc.body())
                return
            r: TurnResult = value.result()
            yield one({}, r.finish_reason)
            if include_usage:
                use = usage(r.prompt_tokens, r.completion_tokens)
                yield _sse(chunk(cid, model, created, None, with_usage=True, use=use))
            yield "data: [DONE]\n\n"
            return
        item = await queue.get()


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'), ensure_ascii=False)}\n\n"
