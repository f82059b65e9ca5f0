"""Scopes, per-key models and rate limits through the real app (fake engine): what each key may
reach, and OpenAI's error shapes and headers when it may not."""

import time

import pytest

from llmloop.serve.auth.keyring import REFRESH_INTERVAL_S
from llmloop.serve.auth.keys import KeyLimits

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def _refresh(client) -> None:
    client.app.state.keyring.refresh()


def test_without_a_key_every_route_but_health_is_401(keyed) -> None:
    client, _ = keyed
    assert client.get("/health").status_code == 200
    for method, path in [
        ("get", "/v1/models"),
        ("post", "/v1/chat/completions"),
        ("post", "/v1/load_lora_adapter"),
        ("get", "/ui/api/conversations"),
        ("post", "/v1/feedback"),
    ]:
        response = getattr(client, method)(path)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("secret", ["sk-wrong", "sk-é", "x" * 10_000, "sk-\x00"])
def test_wrong_and_malformed_keys_are_401_never_500(keyed, secret: str) -> None:
    client, _ = keyed
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {secret}".encode()})
    assert response.status_code == 401


def test_each_scope_reaches_its_routes_only(keyed) -> None:
    client, make_key = keyed
    infer, label = make_key("app", "infer"), make_key("labeller", "label")
    _refresh(client)
    assert client.post("/v1/chat/completions", json=CHAT, headers=infer).status_code == 200
    assert client.get("/ui/api/conversations", headers=label).status_code == 200
    for headers, method, path in [
        (infer, "get", "/ui/api/conversations"),
        (infer, "post", "/v1/load_lora_adapter"),
        (label, "post", "/v1/chat/completions"),
        (label, "post", "/v1/unload_lora_adapter"),
    ]:
        response = client.request(method.upper(), path, headers=headers, json={})
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"]["type"] == "permission_error"
    assert client.get("/ui/api/conversations", headers=client.admin).status_code == 200


def test_keys_made_while_serving_apply_within_the_refresh_interval(keyed) -> None:
    client, make_key = keyed
    headers = make_key("late", "infer")
    deadline = time.monotonic() + REFRESH_INTERVAL_S + 3
    while client.get("/v1/models", headers=headers).status_code != 200:
        assert time.monotonic() < deadline, "a new key was not accepted in time"
        time.sleep(0.1)


def test_a_key_limited_to_models_sees_and_uses_only_those(keyed) -> None:
    client, make_key = keyed
    headers = make_key("narrow", "infer", models=["some-adapter"])
    _refresh(client)
    response = client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 404
    assert response.json()["error"]["message"].endswith("Available: ")  # nothing it may use


def test_over_the_request_limit_is_429_with_openai_headers(keyed) -> None:
    client, make_key = keyed
    headers = make_key("small", "infer", limits=KeyLimits(rpm=2))
    _refresh(client)
    first = client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert "x-ratelimit-reset-requests" in first.headers
    client.post("/v1/chat/completions", json=CHAT, headers=headers)
    third = client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(third.headers["retry-after"]) >= 1
    assert client.get("/v1/models", headers=client.admin).status_code == 200  # others unaffected


def test_tokens_used_are_charged_to_the_key(keyed) -> None:
    client, make_key = keyed
    headers = make_key("tokens", "infer", limits=KeyLimits(tpm=5))
    _refresh(client)
    assert client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
    response = client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 429, "the first request's prompt + answer exceeded 5 tokens"
    assert response.headers["x-ratelimit-remaining-tokens"] == "0"


def test_a_streamed_request_holds_its_concurrency_slot_until_done(keyed) -> None:
    client, make_key = keyed
    headers = make_key("one-at-a-time", "infer", limits=KeyLimits(max_concurrent=1))
    _refresh(client)
    for _ in range(3):  # each stream frees the slot when it ends
        with client.stream(
            "POST", "/v1/chat/completions", json=CHAT | {"stream": True}, headers=headers
        ) as response:
            assert response.status_code == 200
            assert "[DONE]" in response.read().decode()
    limiter = client.app.state.rate_limiter
    assert all(usage.in_flight == 0 for usage in limiter._usage.values())
