"""OpenAI protocol over the fake engine: response shapes, streaming, params reaching the engine."""

import json

from tests.serve.fakes import FakeEngine


def chat(client, **body):
    payload = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]} | body
    return client.post("/v1/chat/completions", json=payload)


def sse_events(response) -> list:
    lines = [line for line in response.text.split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def test_chat_completion_shape_and_usage(client):
    response = chat(client, max_tokens=5)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "fake-model"
    (choice,) = body["choices"]
    assert choice["message"] == {
        "role": "assistant",
        "content": "<user",
        "refusal": None,
        "tool_calls": [],  # as vLLM's server sends it
    }
    assert choice["finish_reason"] == "length"
    prompt_tokens = len("<user>hi<assistant>")
    assert body["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 5,
        "total_tokens": prompt_tokens + 5,
    }


def test_ids_are_unique(client):
    ids = {chat(client, max_tokens=1).json()["id"] for _ in range(20)}
    assert len(ids) == 20


def test_sampling_fields_reach_the_engine(client):
    chat(
        client,
        max_tokens=3,
        temperature=0.3,
        top_p=0.9,
        n=2,
        stop=["x"],
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        top_k=5,
        min_p=0.1,
        repetition_penalty=1.2,
        ignore_eos=True,
    )
    _, options, lora = client.engine.requests[-1]
    assert (options.temperature, options.top_p, options.n, options.stop, options.seed) == (
        0.3,
        0.9,
        2,
        ("x",),
        7,
    )
    assert (options.presence_penalty, options.frequency_penalty) == (0.5, 0.25)
    assert (options.top_k, options.min_p, options.repetition_penalty, options.ignore_eos) == (
        5,
        0.1,
        1.2,
        True,
    )
    assert lora is None


def test_max_completion_tokens_wins_over_max_tokens(client):
    chat(client, max_tokens=9, max_completion_tokens=4)
    assert client.engine.requests[-1][1].max_tokens == 4


def test_chat_without_max_tokens_gets_the_rest_of_the_context(client):
    chat(client)
    prompt_len = len("<user>hi<assistant>")
    assert client.engine.requests[-1][1].max_tokens == FakeEngine.max_model_len - prompt_len


def test_n_choices_and_logprobs(client):
    body = chat(client, max_tokens=2, n=3, logprobs=True, top_logprobs=1).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    content = body["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in content] == ["<", "u"]
    assert content[0]["top_logprobs"] == [{"token": "<", "logprob": -0.5, "bytes": [60]}]


def test_chat_stream_role_first_then_deltas_then_usage(client):
    response = chat(client, max_tokens=4, stream=True, stream_options={"include_usage": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"]["content"] or "" for e in events[1:] if e["choices"])
    assert text == "<use"
    finals = [
        e["choices"][0]["finish_reason"]
        for e in events
        if e["choices"] and e["choices"][0]["finish_reason"]
    ]
    assert finals == ["length"]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 4
    assert len({e["id"] for e in events}) == 1


def test_completion_text_prompt_list_and_indexes(client):
    body = client.post(
        "/v1/completions",
        json={"model": "fake-model", "prompt": ["abc", "xyz"], "max_tokens": 2, "n": 2},
    ).json()
    assert body["object"] == "text_completion"
    assert sorted((c["index"], c["text"]) for c in body["choices"]) == [
        (0, "ab"),
        (1, "ab"),
        (2, "xy"),
        (3, "xy"),
    ]
    assert body["usage"]["prompt_tokens"] == 6


def test_completion_default_max_tokens_is_16(client):
    client.post("/v1/completions", json={"model": "fake-model", "prompt": "a" * 40})
    assert client.engine.requests[-1][1].max_tokens == 16


def test_completion_echo_with_logprobs_scores_every_prompt_token(client):
    body = client.post(
        "/v1/completions",
        json={
            "model": "fake-model",
            "prompt": "hello",
            "max_tokens": 1,
            "echo": True,
            "logprobs": 1,
        },
    ).json()
    (choice,) = body["choices"]
    assert choice["text"] == "helloh"
    logprobs = choice["logprobs"]
    assert logprobs["tokens"] == ["h", "e", "l", "l", "o", "h"]
    assert logprobs["token_logprobs"] == [None, -0.5, -0.5, -0.5, -0.5, -0.5]
    assert logprobs["top_logprobs"][0] is None and logprobs["top_logprobs"][1] == {"e": -0.5}
    assert logprobs["text_offset"] == [0, 1, 2, 3, 4, 5]


def test_completion_token_prompt(client):
    body = client.post(
        "/v1/completions", json={"model": "fake-model", "prompt": [100, 101], "max_tokens": 2}
    ).json()
    assert body["choices"][0]["text"] == "ab"


def test_completion_stream(client):
    response = client.post(
        "/v1/completions",
        json={
            "model": "fake-model",
            "prompt": "abc",
            "max_tokens": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    events = sse_events(response)
    assert "".join(e["choices"][0]["text"] for e in events if e["choices"]) == "abc"
    assert events[-1]["usage"]["completion_tokens"] == 3


def test_stop_sequences(client):
    body = chat(client, stop="s", max_tokens=20).json()
    assert body["choices"][0]["message"]["content"] == "<u"
    assert body["choices"][0]["finish_reason"] == "stop"


def test_beam_search_options(client):
    chat(client, use_beam_search=True, n=3, length_penalty=0.7, max_tokens=2)
    options = client.engine.requests[-1][1]
    assert options.use_beam_search and options.n == 3 and options.length_penalty == 0.7


def test_models_lists_base_and_adapters(make_client, tmp_path):
    client = make_client(adapters=(("support", str(tmp_path)),))
    data = client.get("/v1/models").json()["data"]
    assert [(m["id"], m["parent"]) for m in data] == [
        ("fake-model", None),
        ("support", "fake-model"),
    ]


def test_model_picks_the_adapter(make_client, tmp_path):
    client = make_client(adapters=(("support", str(tmp_path)),))
    chat(client, model="support", max_tokens=1)
    assert client.engine.requests[-1][2] == "support"


def test_load_and_unload_adapter(client, isolated_home):
    adapter = isolated_home / "adapters" / "a1"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    response = client.post(
        "/v1/load_lora_adapter", json={"lora_name": "a1", "lora_path": str(adapter)}
    )
    assert response.status_code == 200, response.text
    assert "a1" in [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert client.post("/v1/unload_lora_adapter", json={"lora_name": "a1"}).status_code == 200
    assert "a1" not in [m["id"] for m in client.get("/v1/models").json()["data"]]


def test_server_sampling_defaults_apply_when_request_is_silent(make_client):
    from llmloop.serve.app import create_app  # noqa: F401  (defaults go through create_app)

    client = make_client(default_sampling={"temperature": 0.2, "top_k": 40})
    chat(client, max_tokens=1)
    options = client.engine.requests[-1][1]
    assert (options.temperature, options.top_k) == (0.2, 40)
    chat(client, max_tokens=1, temperature=0.9)
    assert client.engine.requests[-1][1].temperature == 0.9


def test_prompt_logprobs_come_back_in_vllms_shape(client):
    body = chat(client, max_tokens=2, prompt_logprobs=1).json()
    prompt_ids = client.engine.requests[-1][0]
    assert client.engine.requests[-1][1].prompt_logprobs == 1
    first, second, *_ = body["prompt_logprobs"]
    assert first is None
    assert second == {str(prompt_ids[1]): {"logprob": -0.5, "rank": 1, "decoded_token": "u"}}
    completion = client.post(
        "/v1/completions",
        json={"model": "fake-model", "prompt": "ab", "max_tokens": 1, "prompt_logprobs": 2},
    ).json()
    assert completion["choices"][0]["prompt_logprobs"][1] == {
        str(ord("b") + 3): {"logprob": -0.5, "rank": 1, "decoded_token": "b"},
        str(ord("?") + 3): {"logprob": -2.0, "rank": 2, "decoded_token": "?"},
    }
