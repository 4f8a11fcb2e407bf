"""The HTTP side of ``mc serve``: FastAPI routes in the OpenAI wire format over ``Memories``.

Endpoints (all but ``/healthz`` need ``Authorization: Bearer KEY`` when a key is set):

- ``POST /v1/chat/completions``: the memory is named by the ``X-Memory`` header, else the
  request's ``user`` field, else ``ServeConfig.default_memory``; streamed as server-sent events
  (``data: {chunk}`` … ``data: [DONE]``) when ``stream`` is true.
- ``GET /v1/models``, ``GET /v1/models/{id}``
- ``POST /v1/memories/{name}/documents`` (``{"text", "source", "tags"}``)
- ``GET /v1/memories/{name}``: length, levels, segments, the newest commits
- ``GET /v1/memories/{name}/documents``: its segments with ids, sources, tags, roles, times
- ``GET /v1/memories/{name}/export``: one JSON line per segment, streamed (``mc export``)
- ``GET /metrics``: Prometheus' text format (``mcruntime.serve.metrics``)
- ``GET /healthz``

Every error is ``{"error": {"message", "type", "param", "code"}}`` with its status code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from mcruntime.serve.auth import authorized, check_bind
from mcruntime.serve.config import ServeConfig
from mcruntime.serve.memories import Memories, TurnResult, check_name
from mcruntime.serve.metrics import Metered
from mcruntime.serve.wire import (
    APIError,
    ChatRequest,
    DocumentRequest,
    chunk,
    completion,
    completion_id,
    error_body,
    models_list,
    usage,
)

log = logging.getLogger(__name__)

MEMORY_HEADER = "x-memory"


class TooLarge(HTTPException):
    """A body that grew past the limit while it was read (FastAPI passes HTTPExceptions on)."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than {limit} bytes")


class Gate:
    """ASGI middleware in front of everything: the API key (before the body is read, so an
    unauthenticated client learns nothing about its request) and the body size limit."""

    def __init__(self, app, api_key: str | None, limit: int):
        self.app, self.api_key, self.limit = app, api_key, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["path"] != "/healthz" and not authorized(
            headers.get("authorization"), self.api_key
        ):
            err = error_body(
                "invalid or missing API key: send the header Authorization: Bearer KEY",
                code="invalid_api_key",
            )
            response = JSONResponse(err, 401, headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        try:
            declared = int(headers.get("content-length") or 0)
        except ValueError:
            declared = 0
        if declared > self.limit:
            err = error_body(TooLarge(self.limit).detail, code="request_too_large")
            return await JSONResponse(err, 413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise TooLarge(self.limit)
            return message

        return await self.app(scope, limited, send)


def _error_response(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), e.status)


def _validation_message(e: RequestValidationError) -> tuple[str, str | None, str | None]:
    errors = e.errors()
    if not errors:
        return "invalid request", None, None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None, "invalid_json"
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{param or 'body'}: {first.get('msg', 'invalid')}{more}", param, "invalid_value"


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'), ensure_ascii=False)}\n\n"


def create_app(config: ServeConfig, memories: Memories | None = None) -> FastAPI:
    """The ASGI app; ``memories`` (e.g. with a model already loaded) is closed with it."""
    check_bind(config.host, config.api_key)
    memories = memories if memories is not None else Memories(config)
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        await asyncio.get_running_loop().run_in_executor(None, memories.load)
        yield
        await asyncio.get_running_loop().run_in_executor(None, memories.close)

    app = FastAPI(
        title="MegaContext",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.memories = memories
    metrics = memories.metrics
    app.add_middleware(Gate, api_key=config.api_key, limit=config.max_request_bytes)
    app.add_middleware(Metered, metrics=metrics)  # outermost: counts the Gate's refusals too

    def respond(e: APIError) -> JSONResponse:
        metrics.on_error(e.type, e.code)
        return _error_response(e)

    @app.exception_handler(APIError)
    async def on_api_error(request, e: APIError):
        return respond(e)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request, e: RequestValidationError):
        msg, param, code = _validation_message(e)
        return respond(APIError(400, msg, param=param, code=code))

    @app.exception_handler(HTTPException)
    async def on_http(request, e: HTTPException):
        if e.status_code == 404:
            msg, code = f"no such endpoint: {request.method} {request.url.path}", "not_found"
        elif e.status_code == 405:
            msg, code = f"{request.method} is not allowed on {request.url.path}", None
        else:
            msg, code = str(e.detail), "request_too_large" if e.status_code == 413 else None
        return respond(APIError(e.status_code, msg, code=code))

    @app.exception_handler(Exception)
    async def on_bug(request, e: Exception):
        log.error("unexpected error on %s", request.url.path, exc_info=e)
        return respond(APIError(500, f"internal error ({type(e).__name__})", type="server_error"))

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics_page():
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def list_models():
        return models_list(memories.model_ids[:1], started)

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str):
        if model_id not in memories.model_ids:
            raise _no_model(model_id, memories)
        return models_list([model_id], started)["data"][0]

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
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

    @app.post("/v1/memories/{name}/documents")
    async def add_document(name: str, body: DocumentRequest):
        check_name(name)
        fut = await memories.submit(name, memories.ingest, name, body.text, body.source, body.tags)
        return await asyncio.shield(fut)

    @app.get("/v1/memories")
    async def list_memories():
        names = await memories.read(memories.names)
        return {"object": "list", "data": [{"object": "memory", "id": n} for n in names]}

    @app.get("/v1/memories/{name}")
    async def memory_info(name: str):
        check_name(name)
        return await memories.read(memories.info, name)

    @app.get("/v1/memories/{name}/documents")
    async def list_documents(name: str):
        """The memory's segments (documents and chat turns) with their ids, oldest first."""
        check_name(name)
        docs = await memories.read(memories.documents, name)
        return {"object": "list", "data": [{"object": "memory.segment", **d} for d in docs]}

    @app.get("/v1/memories/{name}/export")
    async def export_memory(name: str):
        """One JSON line per segment, streamed (as ``mc export``)."""
        check_name(name)
        lines = await memories.read(memories.export, name)
        return StreamingResponse(lines, media_type="application/x-ndjson")

    return app


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
