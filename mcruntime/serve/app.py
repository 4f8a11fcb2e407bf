"""The HTTP side of ``mc serve``: the FastAPI app over ``Memories``, with one router per
resource (``routes_chat``: chat and models in the OpenAI wire format; ``routes_memories``: the
memories), the memories reached through ``Depends``. The API key and the body limit stay ASGI
middleware (``Gate``) rather than a dependency: a dependency runs after FastAPI has read and
validated the body, and an unauthenticated client must learn nothing about its request.

The explorer (``routes_explorer``): the page at ``/``, its data under ``/v1/memories/{name}/…``.

Endpoints (all but ``/healthz`` and the explorer's page and assets need
``Authorization: Bearer KEY`` when a key is set):

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
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from mcruntime.serve.auth import authorized, check_bind, public
from mcruntime.serve.config import ServeConfig
from mcruntime.serve.memories import Memories
from mcruntime.serve.metrics import Metered
from mcruntime.serve.routes_chat import router as chat_router
from mcruntime.serve.routes_explorer import router as explorer_router
from mcruntime.serve.routes_memories import router as memories_router
from mcruntime.serve.wire import (
    APIError,
    error_body,
)

log = logging.getLogger(__name__)


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
        if not public(scope["path"]) and not authorized(headers.get("authorization"), self.api_key):
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


def _handle_errors(app: FastAPI, metrics) -> None:
    """Every error as one JSON shape (``APIError``), counted: the API's own, invalid
    requests, unknown routes, and bugs (logged, named by type only)."""

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
    app.state.memories, app.state.config, app.state.started = memories, config, started
    metrics = memories.metrics
    app.add_middleware(Gate, api_key=config.api_key, limit=config.max_request_bytes)
    app.add_middleware(Metered, metrics=metrics)  # outermost: counts the Gate's refusals too

    _handle_errors(app, metrics)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics_page():
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    app.include_router(chat_router)
    app.include_router(memories_router)
    app.include_router(explorer_router)
    return app
