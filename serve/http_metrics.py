"""HTTP requests on ``/metrics``: a count by route and status, and a duration histogram by route.

- ``llmloop:http_requests_total{route, status}`` (counter)
- ``llmloop:http_request_duration_seconds{route}`` (histogram): from the request's arrival at
  this middleware to its response's last body chunk, so a streamed answer counts its whole stream.

Cardinality stays bounded: ``route`` is the route's template (``/v1/files/{file_id}``), never the
raw path, and every request that matches no route (404s from scanners, a 413 refused before
routing on an unknown path) shares the one value ``unmatched``; ``status`` is the HTTP status
code the server sent, a few dozen values at most. So the series are at most (routes + 1) x the
status codes we send, whatever clients ask for.

Pure ASGI (no ``BaseHTTPMiddleware``): a stream goes through chunk by chunk, never buffered.
"""

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import Match

UNMATCHED = "unmatched"
"""The ``route`` of a request that matches no route."""

DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
"""From health checks (~1 ms) to long generations (minutes); above 300 s is +Inf."""


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "llmloop:http_requests",
            "HTTP requests answered, by route template (or 'unmatched') and status code.",
            ["route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "llmloop:http_request_duration_seconds",
            "Seconds from a request's arrival to its response's last body chunk, by route "
            "template (or 'unmatched').",
            ["route"],
            buckets=DURATION_BUCKETS_S,
            registry=registry,
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.duration.labels(route).observe(seconds)


class HttpMetricsMiddleware:
    def __init__(self, app, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before it starts a response
        done = False

        async def send_and_observe(message) -> None:
            nonlocal status, done
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                done = True
                self.metrics.observe(route_of(scope), status, time.perf_counter() - start)

        try:
            await self.app(scope, receive, send_and_observe)
        finally:
            if not done:  # an error, or a client gone mid-stream: counted once all the same
                self.metrics.observe(route_of(scope), status, time.perf_counter() - start)


def route_of(scope) -> str:
    """The template of the route that handled (or would have handled) the request."""
    route = scope.get("route")
    if route is None:  # refused before routing (413), or no route at all (404)
        app = scope.get("app")
        routes = app.router.routes if app is not None else ()
        route = next((r for r in routes if r.matches(scope)[0] is not Match.NONE), None)
    return getattr(route, "path", None) or UNMATCHED
