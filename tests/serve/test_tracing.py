"""``--otlp-traces-endpoint``: each request's spans reach an OTLP receiver (here an in-process
HTTP one) as one trace that continues the client's, vLLM gets the engine span's trace headers,
and the request log's row names the trace. Without an endpoint nothing is traced."""

from collections.abc import Iterator

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from llmloop.rag.retrieve import Hit
from llmloop.serve.batch.dispatch import Dispatcher, LineOwner
from llmloop.serve.config import ConfigError, ServerConfig
from llmloop.serve.tracing import TracingMiddleware
from tests.otlp import Receiver, attributes, otlp_receiver
from tests.serve.fakes import FakeEngine, FakeRetrieval, keyword_guardrails
from tests.serve.test_protocol import sse_events
from tests.serve.test_request_log import logged

CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
HIT = Hit(source="notes.md", chunk_id="notes-0", score=0.9, text="Quillon is north.", title="Notes")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as received:
        yield received


def chat(client, headers: dict | None = None, **body):
    payload = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]} | body
    return client.post("/v1/chat/completions", json=payload, headers=headers)


def exported(client, receiver: Receiver) -> dict[str, Span]:
    """The spans exported so far, by name (the last of each name)."""
    assert client.app.state.tracing.provider.force_flush(10_000)
    return {span.name: span for span in receiver.spans}


def test_a_chat_request_is_one_trace_of_its_steps(make_client, receiver):
    engine = FakeEngine()
    engine.max_model_len = 2048  # room for the source
    client = make_client(
        engine,
        guardrails=keyword_guardrails(),
        retrieval=FakeRetrieval([HIT]),
        otlp_traces_endpoint=receiver.url,
    )
    response = chat(client, max_tokens=4, rag={"index": "docs"})
    assert response.status_code == 200

    spans = exported(client, receiver)
    server = spans["POST /v1/chat/completions"]
    steps = ("auth", "safety.input", "retrieval", "engine", "safety.output", "log")
    assert set(steps) <= set(spans)
    assert server.kind == Span.SPAN_KIND_SERVER and not server.parent_span_id
    assert attributes(server.attributes) == {
        "http.request.method": "POST",
        "url.path": "/v1/chat/completions",
        "http.route": "/v1/chat/completions",
        "http.response.status_code": 200,
    }
    for name in steps:
        assert spans[name].trace_id == server.trace_id, name
        assert spans[name].parent_span_id == server.span_id, name
        assert server.start_time_unix_nano <= spans[name].start_time_unix_nano, name
        assert spans[name].end_time_unix_nano <= server.end_time_unix_nano, name
    assert spans["safety.retrieved"].parent_span_id == spans["retrieval"].span_id
    engine_span = spans["engine"]
    assert attributes(engine_span.attributes) == {
        "gen_ai.request.model": "fake-model",
        "gen_ai.response.model": "fake-model",  # a route's version when routed
        "gen_ai.response.id": response.json()["id"],
    }
    # vLLM's own spans become the engine span's children through these headers
    (_, options, _) = engine.requests[-1]
    traceparent = options.trace_headers["traceparent"]
    assert traceparent.startswith(f"00-{server.trace_id.hex()}-{engine_span.span_id.hex()}-")
    assert logged(client, response.json()["id"])["trace_id"] == server.trace_id.hex()
    assert set(receiver.resources[0].items()) >= {("service.name", "llmloop")}


def test_a_client_trace_is_continued(make_client, receiver):
    client = make_client(otlp_traces_endpoint=receiver.url)
    traceparent = f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"
    response = chat(client, max_tokens=2, stream=True, headers={"traceparent": traceparent})
    sse_events(response)

    spans = exported(client, receiver)
    server = spans["POST /v1/chat/completions"]
    assert server.trace_id.hex() == CLIENT_TRACE_ID
    assert server.parent_span_id.hex() == CLIENT_SPAN_ID
    # a stream's engine span stays open across its deltas and ends with them
    assert spans["engine"].parent_span_id == spans["log"].parent_span_id == server.span_id
    assert spans["engine"].end_time_unix_nano <= spans["log"].start_time_unix_nano
    completion_id = sse_events(response)[0]["id"]
    assert logged(client, completion_id)["trace_id"] == CLIENT_TRACE_ID


def test_a_refused_key_shows_on_the_auth_span(make_client, receiver):
    client = make_client(api_keys=("sk-test",), otlp_traces_endpoint=receiver.url)
    assert chat(client).status_code == 401

    spans = exported(client, receiver)
    server = spans["POST /v1/chat/completions"]
    assert attributes(server.attributes)["http.response.status_code"] == 401
    assert server.status.code == Status.STATUS_CODE_UNSET  # the client's error, not the server's
    assert spans["auth"].status.code == Status.STATUS_CODE_ERROR
    assert [event.name for event in spans["auth"].events] == ["exception"]
    assert "engine" not in spans


def test_an_unrouted_path_is_named_by_its_method_alone(make_client, receiver):
    client = make_client(otlp_traces_endpoint=receiver.url)
    assert client.get("/v1/no-such-route/12345").status_code == 404
    spans = exported(client, receiver)
    assert "GET" in spans and "http.route" not in attributes(spans["GET"].attributes)


def test_a_batch_line_is_traced_as_a_request_of_its_batch(make_client, receiver):
    client = make_client(otlp_traces_endpoint=receiver.url)
    body = '{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}'

    async def dispatch():
        dispatcher = Dispatcher(client.app)
        try:
            return await dispatcher.dispatch(
                LineOwner("batch_1", None), "line-1", "/v1/chat/completions", body
            )
        finally:
            await dispatcher.aclose()

    answer = client.portal.call(dispatch)
    assert answer.line.succeeded

    spans = exported(client, receiver)
    server = spans["POST /v1/chat/completions"]
    assert attributes(server.attributes)["llmloop.batch_id"] == "batch_1"
    assert spans["engine"].parent_span_id == server.span_id
    row = logged(client, answer.line.response.body["id"])
    assert row["trace_id"] == server.trace_id.hex()


def test_without_an_endpoint_nothing_is_traced(make_client, receiver):
    client = make_client()
    traceparent = f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"
    response = chat(client, max_tokens=2, headers={"traceparent": traceparent})
    assert response.status_code == 200

    tracing = client.app.state.tracing
    assert not tracing.enabled and tracing.trace_headers(None) is None
    assert all(m.cls is not TracingMiddleware for m in client.app.user_middleware)
    assert client.engine.requests[-1][1].trace_headers is None
    assert logged(client, response.json()["id"])["trace_id"] is None
    assert receiver.spans == []


def test_the_endpoint_must_be_an_http_url():
    with pytest.raises(ConfigError, match="--otlp-traces-endpoint"):
        ServerConfig(otlp_traces_endpoint="localhost:4318")
