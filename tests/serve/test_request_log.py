"""Every completion the server returns reaches the request log; ``store: false`` opts out."""

import json

from tests.serve.test_protocol import chat


def logged(client, completion_id: str) -> dict | None:
    request_log = client.app.state.request_log
    assert client.portal.call(request_log.flush)
    return request_log.store.get(completion_id)


def test_chat_completion_is_logged_with_its_details(make_client):
    client = make_client(api_keys=("k1",))
    response = client.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
              "temperature": 0.5, "user": "u-1"},
        headers={"Authorization": "Bearer k1"},
    )  # fmt: skip
    body = response.json()
    row = logged(client, body["id"])
    assert row is not None
    assert row["model"] == "fake-model" and row["endpoint"] == "chat.completions"
    assert row["messages"] == [{"role": "user", "content": "hi"}]
    assert row["choices"] == [{"index": 0, "text": "<us", "finish_reason": "length"}]
    assert (
        row["sampling_params"]["temperature"] == 0.5 and row["sampling_params"]["max_tokens"] == 3
    )
    assert (row["prompt_tokens"], row["completion_tokens"]) == (body["usage"]["prompt_tokens"], 3)
    assert row["api_key_id"].startswith("key-") and "k1" not in json.dumps(row)
    assert row["user"] == "u-1" and row["latency_s"] >= 0


def test_streamed_chat_is_logged_with_the_full_text(client):
    response = chat(client, max_tokens=4, stream=True)
    completion_id = json.loads(response.text.split("\n\n")[0].removeprefix("data: "))["id"]
    assert logged(client, completion_id)["choices"][0]["text"] == "<use"


def test_completion_is_logged(client):
    body = client.post(
        "/v1/completions", json={"model": "fake-model", "prompt": "abc", "max_tokens": 2}
    ).json()
    row = logged(client, body["id"])
    assert row["endpoint"] == "completions" and row["choices"][0]["text"] == "ab"


def test_store_false_is_not_logged(client):
    body = chat(client, max_tokens=2, store=False).json()
    assert logged(client, body["id"]) is None


def test_logging_off_for_the_deployment(make_client):
    client = make_client(store_requests=False)
    body = chat(client, max_tokens=2).json()
    assert body["choices"][0]["message"]["content"] == "<u"
    assert client.app.state.request_log.stats.submitted == 0
