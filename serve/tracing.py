"""OpenTelemetry spans for each request, exported over OTLP when ``--otlp-traces-endpoint`` is set
(see docs/monitoring.md, Tracing).

One request is one trace: the server span ``POST /v1/chat/completions`` (named by the route
template; it continues a client's W3C ``traceparent``) and below it ``auth``, ``safety.input``,
``retrieval`` (with ``safety.retrieved``), ``engine``, ``safety.output`` and ``log``. vLLM's own
``llm_request`` span joins under ``engine`` through the trace headers the engine gets, and the
request log's row keeps the trace id.

Without an endpoint the app adds no middleware and ``Tracing.span`` hands out one shared no-op
context: tracing off costs a few attribute lookups per request.
"""

import contextlib
import os

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from llmloop.serve.batch.dispatch import BATCH_LINE_SCOPE

PROTOCOL_VARIABLE = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
DEFAULT_PROTOCOL = "http/protobuf"
"""OTLP over HTTP, as a collector takes it on port 4318 (``grpc`` on 4317 when the variable says so)."""
SERVICE_NAME = "llmloop"
"""The spans' ``service.name``, unless $OTEL_SERVICE_NAME names another."""

_TRACE_CONTEXT = TraceContextTextMapPropagator()
"""W3C Trace Context (``traceparent``, ``tracestate``), whatever the global propagators are."""
_NO_SPAN = contextlib.nullcontext(INVALID_SPAN)
_TRACE_HEADERS = (b"traceparent", b"tracestate")


class Tracing:
    """The server's tracer: one exporting over OTLP, or (``Tracing()``) one that records nothing.

    The provider is the app's own, not OpenTelemetry's global one, which vLLM sets for its spans."""

    def __init__(self, provider=None):
        self.provider = provider
        self.tracer = provider.get_tracer("llmloop.serve") if provider else trace.NoOpTracer()

    @classmethod
    def export_to(cls, endpoint: str) -> "Tracing":
        """Spans batched in the background to the OTLP receiver at ``endpoint`` (a full URL, e.g.
        http://localhost:4318/v1/traces)."""
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        service = os.environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(span_exporter(endpoint)))
        return cls(provider)

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def span(self, name: str, attributes: dict | None = None):
        """A child of the current span, itself current inside ``with``; exceptions leaving it
        are recorded on it."""
        if self.provider is None:
            return _NO_SPAN
        return self.tracer.start_as_current_span(name, attributes=attributes)

    def start_span(self, name: str, attributes: dict | None = None) -> Span:
        """A child of the current span that is never current and that the caller ends: for work
        across ``yield``s, where a current span would leak into the consumer's context."""
        if self.provider is None:
            return INVALID_SPAN
        return self.tracer.start_span(name, attributes=attributes)

    def trace_headers(self, span: Span) -> dict[str, str] | None:
        """``traceparent`` naming ``span``, as vLLM's ``generate`` takes ``trace_headers``."""
        if self.provider is None:
            return None
        headers: dict[str, str] = {}
        _TRACE_CONTEXT.inject(headers, trace.set_span_in_context(span))
        return headers

    def shutdown(self) -> None:
        """Export what is still buffered, then stop."""
        if self.provider is not None:
            self.provider.shutdown()


def span_exporter(endpoint: str):
    protocol = os.environ.get(PROTOCOL_VARIABLE) or DEFAULT_PROTOCOL
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    raise ValueError(f"${PROTOCOL_VARIABLE}={protocol!r}: use http/protobuf or grpc")


def current_trace_id() -> str | None:
    """The current trace's id, 32 hex digits; None outside a recorded trace."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None


class TracingMiddleware:
    """The server span of each HTTP request, current while the app answers it (streams
    included). Named ``METHOD /route/{template}`` once routing has found the route, so spans
    of one endpoint group together whatever ids their paths hold."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        tracing: Tracing = scope["app"].state.tracing
        method = scope["method"]
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k in _TRACE_HEADERS
        }
        status = 500  # unless the app starts a response

        async def send_and_note_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracing.tracer.start_as_current_span(
            method,
            context=_TRACE_CONTEXT.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        ) as span:
            try:
                await self.app(scope, receive, send_and_note_status)
            finally:
                _end_server_span(span, scope, method, status)


def _end_server_span(span: Span, scope, method: str, status: int) -> None:
    if (route := scope.get("route")) is not None and (path := getattr(route, "path", None)):
        span.update_name(f"{method} {path}")
        span.set_attribute("http.route", path)
    if (line := scope.get(BATCH_LINE_SCOPE)) is not None:
        span.set_attribute("llmloop.batch_id", line.batch_id)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:  # a 4xx is the client's error, not the server's (OpenTelemetry's HTTP spans)
        span.set_status(Status(StatusCode.ERROR))
