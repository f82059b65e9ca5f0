"""``--otlp-traces-endpoint`` on the real engine: vLLM's own ``llm_request`` span joins the
request's trace below the server's ``engine`` span. The server is stopped before the spans are
read: its shutdown (and vLLM's, at exit) exports what is still buffered."""

import pytest

from tests.otlp import attributes, otlp_receiver
from tests.servers import start_server

MODEL = "smollm2-135m-instruct"
pytestmark = pytest.mark.engine


def test_vllm_spans_join_the_request_trace(default_model_dir, tmp_path):
    with otlp_receiver() as receiver:
        server = start_server(
            ["--otlp-traces-endpoint", receiver.url, "--no-safety", "--max-model-len", "1024"],
            tmp_path / "serve.log",
        )
        try:
            completion = server.client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
            )
        finally:
            server.stop()
        spans = {span.name: span for span in receiver.spans}

    assert {"POST /v1/chat/completions", "engine", "llm_request"} <= set(spans), server.log()
    request, engine, vllm = (
        spans[n] for n in ("POST /v1/chat/completions", "engine", "llm_request")
    )
    assert engine.parent_span_id == request.span_id
    assert vllm.trace_id == request.trace_id and vllm.parent_span_id == engine.span_id
    assert attributes(vllm.attributes)["gen_ai.usage.completion_tokens"] == (
        completion.usage.completion_tokens
    )
