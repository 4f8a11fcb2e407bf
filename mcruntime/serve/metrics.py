"""What `mc serve` counts, in Prometheus' text format at ``GET /metrics`` (``prometheus-client``).

One registry per server (not the library's global one), so two servers in one process, as in
the tests, never share counts. Label values are bounded: routes are the app's path templates
(``/v1/memories/{name}``, never a raw path), memories are capped by ``--max-memories``, error
types and codes are the API's own few.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# seconds: an answer on a CPU takes from a fraction of a second to a minute
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
PASSAGE_BUCKETS = (0, 1, 2, 3, 4, 6, 8)


class ServeMetrics:
    """The server's instruments; the server calls the ``on_*`` methods."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "mc_http_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "mc_http_request_seconds", "From the request to the last byte of its response",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.first_token = Histogram(
            "mc_first_token_seconds", "From the question to the first token of its answer",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "mc_prompt_tokens", "Window positions the model read for answers", registry=r
        )
        self.completion_tokens = Counter(
            "mc_completion_tokens", "Tokens of the answers written", registry=r
        )
        self.commits = Counter("mc_commits", "Commits the server made", ["kind"], registry=r)
        self.conflicts = Counter(
            "mc_commit_conflicts", "Commits lost to another writer, then retried", registry=r
        )
        self.recall = Histogram(
            "mc_recall_passages", "Passages recalled per question", buckets=PASSAGE_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "mc_errors", "Error responses by type and code", ["type", "code"], registry=r
        )
        self.tokens = Gauge("mc_memory_tokens", "Tokens a memory holds", ["memory"], registry=r)
        self.segments = Gauge(
            "mc_memory_segments", "Segments a memory holds", ["memory"], registry=r
        )

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def on_answer(self, timings: dict, prompt: int, completion: int, passages: int) -> None:
        if timings.get("first_token_s") is not None:
            self.first_token.observe(float(timings["first_token_s"]))
        self.prompt_tokens.inc(max(0, prompt))
        self.completion_tokens.inc(max(0, completion))
        self.recall.observe(passages)

    def on_tree(self, name: str, tree) -> None:
        self.tokens.labels(name).set(tree.length)
        self.segments.labels(name).set(len(tree.segments()))

    def on_error(self, type_: str, code: str | None) -> None:
        self.errors.labels(type_, code or "").inc()


class Metered:
    """ASGI middleware outside everything (the API key's 401s are counted too): each request's
    route template, method, status and time to the last byte of the response (a streamed
    answer counts until its end)."""

    def __init__(self, app, metrics: ServeMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            m = self.metrics
            m.requests.labels(path, scope.get("method", ""), str(status[0])).inc()
            m.latency.labels(path).observe(time.perf_counter() - t0)
