"""Every bad input is a 4xx in OpenAI's error shape; nothing leaks a traceback."""

import pytest

from tests.serve.fakes import FakeEngine

CHAT = "/v1/chat/completions"
OK_CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


def assert_openai_error(response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    assert "Traceback" not in response.text
    return error


def test_malformed_json_is_400(client):
    response = client.post(
        CHAT, content=b'{"model": ', headers={"content-type": "application/json"}
    )
    assert assert_openai_error(response, 400)["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        (OK_CHAT | {"messages": []}, "messages"),
        (OK_CHAT | {"messages": "hi"}, "messages"),
        (OK_CHAT | {"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        (OK_CHAT | {"temperature": "hot"}, "temperature"),
        (OK_CHAT | {"temperature": -1}, "temperature"),
        (OK_CHAT | {"max_tokens": 0}, "max_tokens"),
        (OK_CHAT | {"n": 0}, "n"),
        (OK_CHAT | {"top_p": 0}, "top_p"),
        (OK_CHAT | {"top_logprobs": 50, "logprobs": True}, "top_logprobs"),
        (OK_CHAT | {"seed": 2**70}, "seed"),
        (OK_CHAT | {"stream_options": 3}, "stream_options"),
    ],
)
def test_wrong_types_and_ranges_are_400_naming_the_field(client, body, param):
    assert_openai_error(client.post(CHAT, json=body), 400, param)


def test_top_logprobs_without_logprobs_is_400(client):
    assert_openai_error(client.post(CHAT, json=OK_CHAT | {"top_logprobs": 2}), 400)


def test_beam_search_with_stream_is_400(client):
    assert_openai_error(
        client.post(CHAT, json=OK_CHAT | {"use_beam_search": True, "stream": True}), 400
    )


def test_body_not_an_object_is_400(client):
    assert_openai_error(client.post(CHAT, json=[1, 2]), 400)


def test_max_tokens_beyond_context_is_400_with_the_numbers(client):
    error = assert_openai_error(
        client.post(CHAT, json=OK_CHAT | {"max_tokens": 1000}), 400, "max_tokens"
    )
    prompt_tokens = len("<user>hi<assistant>")
    assert str(FakeEngine.max_model_len) in error["message"]
    assert (
        f"{prompt_tokens} in the prompt" in error["message"]
        and "1000 for the completion" in error["message"]
    )
    assert error["code"] == "context_length_exceeded"


def test_prompt_longer_than_context_is_400(client):
    response = client.post("/v1/completions", json={"model": "fake-model", "prompt": "x" * 300})
    assert_openai_error(response, 400)


def test_token_ids_out_of_vocab_are_400(client):
    response = client.post("/v1/completions", json={"model": "fake-model", "prompt": [1, 10**9]})
    assert_openai_error(response, 400, "prompt")


def test_template_rejection_is_400(client):
    body = OK_CHAT | {"messages": [{"role": "developer", "content": "x"}]}
    assert_openai_error(client.post(CHAT, json=body), 400, "messages")


def test_unknown_model_is_404(client):
    error = assert_openai_error(client.post(CHAT, json=OK_CHAT | {"model": "gpt-7"}), 404, "model")
    assert error["code"] == "model_not_found"


def test_unknown_route_is_404_in_openai_shape(client):
    assert_openai_error(client.get("/v1/nothing"), 404)


def test_wrong_method_is_405_in_openai_shape(client):
    assert_openai_error(client.get(CHAT), 405)


def test_missing_or_wrong_api_key_is_401(make_client):
    client = make_client(api_keys=("sekret",))
    assert_openai_error(client.post(CHAT, json=OK_CHAT), 401)
    assert_openai_error(
        client.post(CHAT, json=OK_CHAT, headers={"Authorization": "Bearer nope"}), 401
    )
    assert (
        client.post(CHAT, json=OK_CHAT, headers={"Authorization": "Bearer sekret"}).status_code
        == 200
    )
    assert_openai_error(client.get("/v1/models"), 401)
    assert client.get("/health").status_code == 200  # probes need no key
    assert_openai_error(client.get("/metrics"), 401)  # unless --public-metrics


def test_body_over_the_limit_is_413(make_client):
    client = make_client(max_request_body_bytes=1000)
    body = OK_CHAT | {"messages": [{"role": "user", "content": "x" * 2000}]}
    assert_openai_error(client.post(CHAT, json=body), 413)


def test_chunked_body_over_the_limit_is_413(make_client):
    client = make_client(max_request_body_bytes=1000)

    def chunks():
        yield b'{"model": "fake-model", "messages": [{"role": "user", "content": "'
        for _ in range(30):
            yield b"x" * 100
        yield b'"}]}'

    response = client.post(CHAT, content=chunks(), headers={"content-type": "application/json"})
    assert_openai_error(response, 413)


def test_overload_is_503_with_retry_after(make_client):
    client = make_client(FakeEngine(max_running=0))
    response = client.post(CHAT, json=OK_CHAT)
    assert_openai_error(response, 503)
    assert response.headers["retry-after"] == "1"


def test_not_ready_is_503(make_client):
    import asyncio

    from fastapi.testclient import TestClient

    from llmloop.serve.app import create_app
    from llmloop.serve.config import ServerConfig

    never = asyncio.Event()

    async def factory():
        await never.wait()

    with TestClient(create_app(ServerConfig(), factory)) as client:
        assert_openai_error(client.get("/health"), 503)
        assert_openai_error(client.post(CHAT, json=OK_CHAT), 503)


def test_unload_unknown_adapter_is_404(client):
    assert_openai_error(
        client.post("/v1/unload_lora_adapter", json={"lora_name": "nope"}), 404, "lora_name"
    )


def test_load_adapter_from_a_non_adapter_dir_is_400(client, tmp_path):
    response = client.post(
        "/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": str(tmp_path)}
    )
    assert_openai_error(response, 400, "lora_path")


def test_internal_error_is_500_without_traceback(make_client):
    engine = FakeEngine()

    async def broken(*args, **kwargs):
        raise RuntimeError("secret internals")
        yield  # pragma: no cover

    engine.generate = broken
    client = make_client(engine)
    error = assert_openai_error(client.post(CHAT, json=OK_CHAT), 500)
    assert "secret internals" not in error["message"]
