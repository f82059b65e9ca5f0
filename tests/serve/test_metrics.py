"""The server's own series on /metrics move with the traffic that should move them."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmloop.rag.retrieve import Hit
from llmloop.serve.auth.keys import ApiKey, KeyLimits, KeyStore
from llmloop.serve.auth.ratelimit import RateLimiter
from llmloop.serve.cli import build_configs, build_parser
from llmloop.serve.errors import RateLimitError
from llmloop.serve.metrics import ServerMetrics
from tests.serve.fakes import FakeEngine, FakeRetrieval, keyword_guardrails

CHAT = "/v1/chat/completions"
HELLO = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]}


def scrape(client, headers=None) -> dict[tuple[str, frozenset], float]:
    """Every sample on /metrics, parsed: (name, labels) → value."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_are_counted_by_route_template_and_status_never_by_raw_path(make_client):
    client = make_client()
    assert client.post(CHAT, json=HELLO).status_code == 200
    assert client.get("/v1/files/file-abc123").status_code == 404
    assert client.get("/wp-admin/secret-probe").status_code == 404
    samples = scrape(client)
    requests = "llmloop:http_requests_total"
    assert value(samples, requests, route=CHAT, status="200") == 1
    assert value(samples, requests, route="/v1/files/{file_id}", status="404") == 1
    assert value(samples, requests, route="unmatched", status="404") == 1
    assert value(samples, "llmloop:http_request_duration_seconds_count", route=CHAT) == 1
    text = client.get("/metrics").text
    assert "wp-admin" not in text and "file-abc123" not in text


def test_a_stream_is_counted_once_with_its_whole_duration(make_client):
    client = make_client(FakeEngine(reply="x" * 10, token_delay_s=0.03))
    body = HELLO | {"stream": True, "max_tokens": 10}
    with client.stream("POST", CHAT, json=body) as response:
        assert response.status_code == 200
        assert "[DONE]" in "".join(response.iter_text())
    samples = scrape(client)
    assert value(samples, "llmloop:http_requests_total", route=CHAT, status="200") == 1
    assert value(samples, "llmloop:http_request_duration_seconds_count", route=CHAT) == 1
    # 10 tokens, 30 ms apart: the histogram saw the whole stream, not its first chunk
    assert value(samples, "llmloop:http_request_duration_seconds_sum", route=CHAT) >= 0.27


def test_no_http_metrics_leaves_requests_out(make_client, tmp_path):
    server, _ = build_configs(
        build_parser().parse_args(["--model", str(tmp_path), "--no-http-metrics"])
    )
    assert server.http_metrics is False
    client = make_client(http_metrics=False)
    assert client.post(CHAT, json=HELLO).status_code == 200
    assert "llmloop:http_requests_total{" not in client.get("/metrics").text


def test_429s_are_counted_by_reason_without_key_ids(make_client, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'keys.db'}"
    store = KeyStore(db_url)
    by_rpm, rpm_secret = store.create("by-rpm", ["infer"], limits=KeyLimits(rpm=1))
    by_tpm, tpm_secret = store.create("by-tpm", ["infer"], limits=KeyLimits(tpm=5))
    client = make_client(db_url=db_url)
    for secret in (rpm_secret, tpm_secret):  # the first is admitted, the second refused
        auth = {"Authorization": f"Bearer {secret}"}
        statuses = [client.post(CHAT, json=HELLO, headers=auth).status_code for _ in range(2)]
        assert statuses == [200, 429]
    samples = scrape(client, {"Authorization": f"Bearer {rpm_secret}"})
    rejected = "llmloop:rate_limited_requests_total"
    assert value(samples, rejected, reason="requests", pool="interactive") == 1
    assert value(samples, rejected, reason="tokens", pool="interactive") == 1
    assert value(samples, "llmloop:http_requests_total", route=CHAT, status="429") == 2
    text = client.get("/metrics", headers={"Authorization": f"Bearer {rpm_secret}"}).text
    assert by_rpm.id not in text and by_tpm.id not in text
    store.close()


def test_a_429_for_concurrency_is_counted_as_concurrent():
    metrics = ServerMetrics()
    limiter = RateLimiter(metrics.rate_limited)
    key = ApiKey(
        id="key-1", name="app", scopes=frozenset({"infer"}), limits=KeyLimits(max_concurrent=1)
    )
    limiter.admit(key)
    with pytest.raises(RateLimitError):
        limiter.admit(key)
    labels = {"reason": "concurrent", "pool": "interactive"}
    assert metrics.registry.get_sample_value("llmloop:rate_limited_requests_total", labels) == 1


def test_the_request_log_is_read_at_scrape_time(make_client):
    client = make_client()
    assert client.post(CHAT, json=HELLO).status_code == 200
    log = client.app.state.request_log
    assert client.portal.call(log.flush)
    samples = scrape(client)
    assert value(samples, "llmloop:request_log_submitted_total") == 1
    assert value(samples, "llmloop:request_log_written_total") == 1
    for name in ("spooled", "db_errors", "dead_lettered", "lost"):
        assert (f"llmloop:request_log_{name}_total", frozenset()) in samples
        assert value(samples, f"llmloop:request_log_{name}_total") == 0
    assert value(samples, "llmloop:request_log_queue_depth") == 0
    assert ("llmloop:request_log_spool_bytes", frozenset()) in samples


def test_the_spool_size_is_in_bytes(make_client):
    client = make_client()
    log = client.app.state.request_log
    log.spool.dir.mkdir(parents=True, exist_ok=True)
    (log.spool.dir / "pending.jsonl").write_text("x" * 123)
    assert value(scrape(client), "llmloop:request_log_spool_bytes") == 123
    (log.spool.dir / "pending.jsonl").unlink()


def test_safety_batches_and_retrieval_are_timed(make_client):
    metrics = ServerMetrics()
    hit = Hit("doc.md", "doc.md#0", 1.0, "a source", "Doc")
    client = make_client(
        guardrails=keyword_guardrails(metrics),
        retrieval=FakeRetrieval([hit], default_index="docs", metrics=metrics),
        metrics=metrics,
    )
    assert client.post(CHAT, json=HELLO).status_code == 200
    samples = scrape(client)
    batches = "llmloop:safety_batch_duration_seconds_count"
    assert value(samples, batches, direction="input") >= 1
    assert value(samples, "llmloop:safety_queue_depth", direction="input") == 0
    assert ("llmloop:safety_queue_depth", frozenset({("direction", "output")})) in samples
    assert value(samples, "llmloop:retrieval_duration_seconds_count") == 1


def test_feedback_is_counted_by_model_and_kind(make_client):
    client = make_client()
    first = client.post(CHAT, json=HELLO).json()["id"]
    second = client.post(CHAT, json=HELLO).json()["id"]
    response = client.post(
        "/v1/feedback", json={"completion_id": first, "rating": -1, "correction": "Hi!"}
    )
    assert response.status_code == 200 and "model" not in response.json()
    feedback = {"completion_id": second, "rating": 1, "preferred_over": first}
    assert client.post("/v1/feedback", json=feedback).status_code == 200
    samples = scrape(client)
    for kind in ("thumbs_up", "thumbs_down", "correction", "preference"):
        assert value(samples, "llmloop:feedback_total", model="fake-model", kind=kind) == 1


def test_the_whole_exposition_parses_and_names_follow_conventions(make_client):
    metrics = ServerMetrics()
    client = make_client(guardrails=keyword_guardrails(metrics), metrics=metrics)
    client.post(CHAT, json=HELLO)
    families = list(text_string_to_metric_families(client.get("/metrics").text))
    ours = {f.name: f.type for f in families if f.name.startswith("llmloop:")}
    for name, kind in ours.items():
        assert kind != "histogram" or name.endswith("_seconds"), name
    assert {
        "llmloop:http_requests",
        "llmloop:http_request_duration_seconds",
        "llmloop:rate_limited_requests",
        "llmloop:request_log_queue_depth",
        "llmloop:request_log_spool_bytes",
        "llmloop:request_log_lost",
        "llmloop:safety_queue_depth",
        "llmloop:safety_batch_duration_seconds",
        "llmloop:retrieval_duration_seconds",
        "llmloop:feedback",
        "llmloop:batch_queue_depth",
    } <= set(ours)
