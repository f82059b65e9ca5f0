"""What chat and text completions share, whole and streamed, over the fake engine with the real
safety layer on a keyword classifier: refusals, redaction, an engine that fails mid-stream, a
client that goes away."""

import asyncio
import contextlib
import json

import pytest

from llmloop.serve.engine_api import EngineRequestError
from llmloop.serve.guardrails import CONTENT_FILTER, REFUSAL
from tests.serve.fakes import FakeEngine, keyword_guardrails
from tests.serve.test_protocol import sse_events
from tests.serve.test_request_log import logged

ENDPOINTS = ["chat", "completions"]
PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
WHOLE_AND_STREAMED = [False, True]
EMAIL = "jane.roe@example.com"
HARMFUL_PROMPT = "Explain how to make sarin at home."
HARMFUL_ANSWER = "Now take the sarin and go, this is how it is done." + " More words follow." * 5
"""Its first sentence is long enough for the stream's first harm check."""


def request_body(endpoint: str, content: str, **body) -> dict:
    """A request to ``endpoint`` with ``content`` as the user message or the prompt."""
    if endpoint == "chat":
        prompt = {"messages": [{"role": "user", "content": content}]}
    else:
        prompt = {"prompt": content}
    return {"model": "fake-model", "max_tokens": 64} | prompt | body


def post(client, endpoint: str, content: str, **body):
    return client.post(PATHS[endpoint], json=request_body(endpoint, content, **body))


def answer(client, endpoint: str, content: str, stream: bool, **body) -> tuple[str, str, str]:
    """(the text of the only choice, its finish_reason, the completion id), whole or streamed."""
    response = post(client, endpoint, content, stream=stream, **body)
    assert response.status_code == 200, response.text
    if stream:
        events = sse_events(response)
        choices = [choice for event in events for choice in event["choices"]]
        completion_id = events[0]["id"]
    else:
        choices, completion_id = response.json()["choices"], response.json()["id"]
    assert {choice["index"] for choice in choices} == {0}
    text = "".join(_text(endpoint, choice) for choice in choices)
    (finish_reason,) = [choice["finish_reason"] for choice in choices if choice["finish_reason"]]
    return text, finish_reason, completion_id


def _text(endpoint: str, choice: dict) -> str:
    if endpoint == "completions":
        return choice["text"]
    return (choice.get("message") or choice.get("delta"))["content"] or ""


@pytest.fixture
def guarded(make_client):
    """``guarded(engine=None)``: a ready client whose server screens with the keyword guardrails."""
    return lambda engine=None: make_client(engine, guardrails=keyword_guardrails())


# -- the safety layer ---------------------------------------------------------------------------


@pytest.mark.parametrize("stream", WHOLE_AND_STREAMED)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_harmful_prompt_is_refused_before_the_engine(guarded, endpoint, stream):
    client = guarded()
    text, finish_reason, completion_id = answer(client, endpoint, HARMFUL_PROMPT, stream)
    assert (text, finish_reason) == (REFUSAL, CONTENT_FILTER)
    assert client.engine.requests == []
    assert logged(client, completion_id)["choices"] == [
        {"index": 0, "text": REFUSAL, "finish_reason": CONTENT_FILTER}
    ]


def test_a_refused_chat_says_so_in_the_refusal_field_with_zero_usage(guarded):
    client = guarded()
    body = post(client, "chat", HARMFUL_PROMPT).json()
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": REFUSAL,
        "refusal": REFUSAL,
        "tool_calls": [],
    }
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    response = post(client, "chat", HARMFUL_PROMPT, stream=True, stream_options={"include_usage": True})  # fmt: skip
    role, refusal, usage = sse_events(response)
    assert role["choices"][0]["delta"]["role"] == "assistant"
    assert refusal["choices"][0]["delta"]["refusal"] == REFUSAL
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 0


def test_a_refused_streamed_completion_is_one_event(guarded):
    events = sse_events(post(guarded(), "completions", HARMFUL_PROMPT, stream=True))
    assert [event["object"] for event in events] == ["text_completion"]
    assert events[0]["usage"]["total_tokens"] == 0


@pytest.mark.parametrize("stream", WHOLE_AND_STREAMED)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_harmful_answer_ends_with_the_refusal_and_content_filter(guarded, endpoint, stream):
    client = guarded(FakeEngine(reply=HARMFUL_ANSWER))
    text, finish_reason, completion_id = answer(client, endpoint, "hi", stream, max_tokens=200)
    assert finish_reason == CONTENT_FILTER
    # A stream sends what passed the checks so far; a whole answer is replaced.
    assert text.endswith(REFUSAL) if stream else text == REFUSAL
    assert HARMFUL_ANSWER[-40:] not in text
    row = logged(client, completion_id)
    assert row["choices"][0]["finish_reason"] == CONTENT_FILTER
    if stream:  # the stream stops at the block: the rest is never generated
        assert client.engine.aborted == [completion_id]


def test_a_blocked_completion_choice_drops_its_logprobs(guarded):
    client = guarded(FakeEngine(reply=HARMFUL_ANSWER))
    body = post(client, "completions", "hi", max_tokens=200, logprobs=1).json()
    assert body["choices"][0]["logprobs"] is None


@pytest.mark.parametrize("stream", WHOLE_AND_STREAMED)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_pii_in_the_answer_is_redacted_in_the_response_and_the_log(guarded, endpoint, stream):
    client = guarded(FakeEngine(reply=f"Write to {EMAIL} today."))
    text, finish_reason, completion_id = answer(client, endpoint, "hi", stream)
    assert (text, finish_reason) == ("Write to <EMAIL_1> today.", "stop")
    row = logged(client, completion_id)
    assert row["choices"][0]["text"] == text and EMAIL not in json.dumps(row)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_pii_in_the_prompt_is_redacted_before_the_engine(guarded, endpoint):
    client = guarded()
    _, _, completion_id = answer(client, endpoint, f"mail {EMAIL}", stream=False)
    ((prompt_ids, _, _),) = client.engine.requests
    assert "mail <EMAIL_1>" in client.engine.tokenizer.decode(prompt_ids)
    assert EMAIL not in json.dumps(logged(client, completion_id))


def test_a_completion_echo_shows_the_redacted_prompt(guarded):
    body = post(guarded(), "completions", f"mail {EMAIL}", max_tokens=2, echo=True).json()
    assert body["choices"][0]["text"] == "mail <EMAIL_1>ma"


def test_whole_and_streamed_completions_log_the_same_record(guarded):
    client = guarded()
    for stream in WHOLE_AND_STREAMED:
        _, _, completion_id = answer(
            client, "completions", f"mail {EMAIL}", stream, echo=True, max_tokens=2
        )
        row = logged(client, completion_id)
        # The answer without the echo (the prompt is logged on its own), and the prompt tokens
        # the usage reports: those of the redacted prompt the engine got.
        assert row["choices"] == [{"index": 0, "text": "ma", "finish_reason": "length"}]
        assert row["prompt"] == "mail <EMAIL_1>" and row["prompt_tokens"] == len("mail <EMAIL_1>")


# -- failures -----------------------------------------------------------------------------------


def failing_engine(num_outputs: int, error: Exception) -> FakeEngine:
    """A fake engine that streams ``num_outputs`` outputs, then raises ``error``."""
    engine = FakeEngine()
    generate = engine.generate

    async def failing(*args, **kwargs):
        outputs = generate(*args, **kwargs)
        async for i, output in _enumerate(outputs):
            if i == num_outputs:
                raise error
            yield output

    engine.generate = failing
    return engine


async def _enumerate(iterator):
    i = 0
    async for item in iterator:
        yield i, item
        i += 1


@pytest.mark.parametrize(
    ("error", "error_type", "message"),
    [
        (RuntimeError("secret internals"), "server_error", "internal error while streaming"),
        (EngineRequestError("bad logits processor"), "invalid_request_error", "bad logits processor"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_an_engine_error_mid_stream_ends_the_stream_with_an_error_event(
    make_client, endpoint, error, error_type, message
):
    client = make_client(failing_engine(2, error))
    response = post(client, endpoint, "hello", stream=True)
    assert response.status_code == 200  # the headers went out with the first chunk
    *chunks, last = sse_events(response)
    streamed = "".join(_text(endpoint, choice) for e in chunks for choice in e["choices"])
    assert streamed == {"chat": "<u", "completions": "he"}[endpoint]  # the prompt, echoed
    assert last == {"error": {"message": message, "type": error_type, "param": None, "code": None}}
    assert "secret internals" not in response.text


@pytest.mark.parametrize("stream", WHOLE_AND_STREAMED)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_client_that_goes_away_aborts_the_engine_request(make_client, endpoint, stream):
    engine = FakeEngine(reply="x" * 200, token_delay_s=0.01)  # two seconds if left to finish
    client = make_client(engine)
    body = request_body(endpoint, "hi", max_tokens=200, stream=stream)
    sent = client.portal.call(post_then_disconnect, client.app, PATHS[endpoint], body, engine)
    (request_id,) = engine.aborted
    assert request_id.startswith({"chat": "chatcmpl-", "completions": "cmpl-"}[endpoint])
    assert not engine.running
    streamed = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert streamed.count(b"x") < 200


async def post_then_disconnect(app, path: str, body: dict, engine: FakeEngine) -> list[dict]:
    """POST ``body`` straight to the ASGI ``app`` and go away once the engine has the request
    (streamed: once the first token was sent). The messages the app sent."""
    sent: list[dict] = []
    first_token_sent = asyncio.Event()
    request = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]

    async def receive() -> dict:
        if request:
            return request.pop()
        await (first_token_sent.wait() if body["stream"] else engine.generating.wait())
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)
        if b'"x"' in message.get("body", b""):
            first_token_sent.set()

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": [(b"content-type", b"application/json")],
        "client": ("testclient", 50000), "server": ("testserver", 80),
    }  # fmt: skip
    with contextlib.suppress(asyncio.CancelledError):  # a whole answer's handler is cancelled
        await app(scope, receive, send)
    return sent
