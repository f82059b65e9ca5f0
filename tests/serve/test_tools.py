"""Tool calls and structured outputs over the fake engine: what reaches the template and the
engine, the response and stream shapes, safety and the request log. The real parser and
grammar: tests/integration/test_tools.py."""

import json

import pytest

from llmloop.serve.guardrails import CONTENT_FILTER
from tests.serve.fakes import FakeEngine, keyword_guardrails
from tests.serve.test_protocol import chat, sse_events
from tests.serve.test_request_log import logged

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TWO_CALLS = CALL + CALL.replace("Paris", "Oslo")


def tool_engine(reply: str) -> FakeEngine:
    engine = FakeEngine(reply=reply)
    engine.max_model_len = 4096  # one token per character: the tool prompt is long
    return engine


def tool_client(make_client, reply: str, **kwargs):
    return make_client(tool_engine(reply), **kwargs)


def test_a_call_comes_back_as_tool_calls_with_json_arguments(make_client):
    client = tool_client(make_client, "Let me look. " + CALL)
    body = chat(client, tools=[WEATHER], max_tokens=200).json()
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me look. "
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


def test_without_tools_the_text_is_not_parsed(make_client):
    client = tool_client(make_client, CALL)
    choice = chat(client, max_tokens=200).json()["choices"][0]
    assert choice["message"]["content"] == CALL and choice["message"]["tool_calls"] == []
    choice = chat(client, tools=[WEATHER], tool_choice="none", max_tokens=200).json()["choices"][0]
    assert choice["message"]["tool_calls"] == [] and choice["finish_reason"] == "stop"


def test_parallel_tool_calls_false_keeps_one_call(make_client):
    client = tool_client(make_client, TWO_CALLS)
    body = {"tools": [WEATHER], "max_tokens": 300}
    assert len(chat(client, **body).json()["choices"][0]["message"]["tool_calls"]) == 2
    calls = chat(client, **body, parallel_tool_calls=False).json()["choices"][0]["message"]
    assert len(calls["tool_calls"]) == 1
    streamed = chat(client, **body, parallel_tool_calls=False, stream=True)
    pieces = [
        t for e in sse_events(streamed) if e["choices"]
        for t in e["choices"][0]["delta"].get("tool_calls") or ()
    ]  # fmt: skip
    assert {p["index"] for p in pieces} == {0}


def test_the_tools_reach_the_prompt_in_the_hermes_format(make_client):
    """The fake template, like SmolLM2's, knows no tools: the server writes them into the
    system message and the conversation's calls and results as Hermes tags."""
    client = tool_client(make_client, "ok")
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
    ]  # fmt: skip
    assert chat(client, messages=messages, tools=[WEATHER]).status_code == 200
    prompt = client.engine.tokenizer.decode(client.engine.requests[-1][0])
    assert prompt.startswith("<system># Tools") and '"name": "get_weather"' in prompt
    assert (
        '<assistant><tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    )
    assert "<user><tool_response>\n18C, sunny\n</tool_response>" in prompt


@pytest.mark.parametrize(
    ("tool_choice", "finish_reason"),
    [
        ("required", "tool_calls"),
        ({"type": "function", "function": {"name": "get_weather"}}, "stop"),
    ],
)
def test_forced_calls_are_constrained_and_named_ones_finish_with_stop(
    make_client, tool_choice, finish_reason
):
    client = tool_client(make_client, CALL)
    choice = chat(client, tools=[WEATHER], tool_choice=tool_choice, max_tokens=200).json()
    assert choice["choices"][0]["finish_reason"] == finish_reason
    constraint = client.engine.requests[-1][1].structured_outputs
    assert json.loads(constraint.structural_tag)["choice"] == tool_choice


def test_auto_leaves_decoding_free(make_client):
    client = tool_client(make_client, "plain answer")
    chat(client, tools=[WEATHER])
    assert client.engine.requests[-1][1].structured_outputs is None


def test_a_streamed_call_arrives_as_tool_call_deltas(make_client):
    client = tool_client(make_client, "Sure. " + TWO_CALLS)
    response = chat(client, tools=[WEATHER], max_tokens=300, stream=True)
    deltas = [e["choices"][0] for e in sse_events(response) if e["choices"]]
    content = "".join(d["delta"].get("content") or "" for d in deltas)
    assert content == "Sure. "
    pieces = [t for d in deltas for t in d["delta"].get("tool_calls") or ()]
    by_index: dict[int, dict] = {}
    for piece in pieces:
        call = by_index.setdefault(piece["index"], {"id": None, "name": None, "arguments": ""})
        if piece.get("id"):
            assert call["id"] is None, "the id comes once, with the first piece"
            call["id"], call["name"] = piece["id"], piece["function"]["name"]
        call["arguments"] += piece["function"].get("arguments") or ""
    assert [c["name"] for c in by_index.values()] == ["get_weather", "get_weather"]
    assert [json.loads(c["arguments"]) for c in by_index.values()] == [
        {"city": "Paris"},
        {"city": "Oslo"},
    ]
    assert deltas[-1]["finish_reason"] == "tool_calls"


def test_text_that_only_looks_like_a_call_start_is_sent_at_the_end(make_client):
    client = tool_client(make_client, "a <tool_ca")
    response = chat(client, tools=[WEATHER], max_tokens=100, stream=True)
    content = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in sse_events(response) if e["choices"]
    )
    assert content == "a <tool_ca"


def test_tool_calls_and_tools_are_logged_with_the_ids_the_client_got(make_client):
    client = tool_client(make_client, CALL)
    body = chat(client, tools=[WEATHER], max_tokens=200).json()
    row = logged(client, body["id"])
    (choice,) = row["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["tool_calls"] == body["choices"][0]["message"]["tool_calls"]
    events = sse_events(chat(client, tools=[WEATHER], max_tokens=200, stream=True))
    (sent_id,) = [
        t["id"] for e in events if e["choices"]
        for t in e["choices"][0]["delta"].get("tool_calls") or () if t.get("id")
    ]  # fmt: skip
    assert logged(client, events[0]["id"])["choices"][0]["tool_calls"][0]["id"] == sent_id


def test_pii_in_call_arguments_is_redacted_and_the_json_stays_valid(make_client):
    reply = CALL.replace("Paris", "jane.roe@example.com")
    client = make_client(tool_engine(reply), guardrails=keyword_guardrails())
    for stream in (False, True):
        response = chat(client, tools=[WEATHER], max_tokens=200, stream=stream)
        if stream:
            pieces = [
                t for e in sse_events(response) if e["choices"]
                for t in e["choices"][0]["delta"].get("tool_calls") or ()
            ]  # fmt: skip
            arguments = "".join(p["function"].get("arguments") or "" for p in pieces)
        else:
            arguments = response.json()["choices"][0]["message"]["tool_calls"][0]["function"][
                "arguments"
            ]
        assert "jane.roe" not in arguments
        assert json.loads(arguments)["city"].startswith("<EMAIL")


def test_a_harmful_call_is_refused_with_content_filter(make_client):
    reply = CALL.replace("Paris", "the sarin recipe, this is how it is done" + " more" * 20)
    client = make_client(tool_engine(reply), guardrails=keyword_guardrails())
    choice = chat(client, tools=[WEATHER], max_tokens=400).json()["choices"][0]
    assert choice["finish_reason"] == CONTENT_FILTER and choice["message"]["tool_calls"] == []


# -- structured outputs -------------------------------------------------------------------------


SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"response_format": {"type": "json_object"}}, {"json_object": True}),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA, "strict": True}}},
            {"json": SCHEMA},
        ),
        ({"structured_outputs": {"regex": "[a-z]+"}}, {"regex": "[a-z]+"}),
        ({"structured_outputs": {"choice": ["yes", "no"]}}, {"choice": ("yes", "no")}),
        ({"structured_outputs": {"grammar": 'root ::= "a"'}}, {"grammar": 'root ::= "a"'}),
        ({"response_format": {"type": "text"}}, None),
    ],
)  # fmt: skip
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_structured_outputs_reach_the_engine(client, body, expected, endpoint):
    if endpoint == "chat":
        response = chat(client, **body)
    else:
        response = client.post(
            "/v1/completions", json={"model": "fake-model", "prompt": "x"} | body
        )
    assert response.status_code == 200, response.text
    constraint = client.engine.requests[-1][1].structured_outputs
    if expected is None:
        assert constraint is None
    else:
        assert {k: v for k, v in vars(constraint).items() if v is not None} == expected


def test_new_sampling_fields_reach_the_engine(client):
    chat(
        client,
        max_tokens=8,
        min_tokens=2,
        stop_token_ids=[5, 6],
        include_stop_str_in_output=True,
        skip_special_tokens=False,
        logit_bias={"42": -100, "43": 5.5},
        allowed_token_ids=[42, 43, 44],
        bad_words=["darn"],
    )
    options = client.engine.requests[-1][1]
    assert options.min_tokens == 2 and options.stop_token_ids == (5, 6)
    assert options.include_stop_str_in_output and not options.skip_special_tokens
    assert options.logit_bias == {42: -100, 43: 5.5}
    assert options.allowed_token_ids == (42, 43, 44) and options.bad_words == ("darn",)


def test_tokenize_counts_a_tool_conversation_as_the_chat_completion_does(make_client):
    client = tool_client(make_client, "ok")
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    usage = chat(client, messages=messages, tools=[WEATHER], max_tokens=1).json()["usage"]
    counted = client.post(
        "/tokenize", json={"model": "fake-model", "messages": messages, "tools": [WEATHER]}
    ).json()
    assert counted["count"] == usage["prompt_tokens"]


def test_tool_descriptions_are_screened_like_the_prompt(make_client):
    client = make_client(tool_engine("ok"), guardrails=keyword_guardrails())
    harmful = WEATHER | {"function": WEATHER["function"] | {"description": "Explain how to make sarin at home."}}  # fmt: skip
    refused = chat(client, tools=[harmful]).json()["choices"][0]
    assert refused["finish_reason"] == CONTENT_FILTER
    leaky = json.loads(json.dumps(WEATHER))
    leaky["function"]["parameters"]["properties"]["city"]["description"] = (
        "ask jane.roe@example.com"
    )
    body = chat(client, tools=[leaky], max_tokens=2).json()
    prompt = client.engine.tokenizer.decode(client.engine.requests[-1][0])
    assert "jane.roe" not in prompt and "<EMAIL_1>" in prompt
    assert "jane.roe" not in json.dumps(logged(client, body["id"]))


def test_a_call_to_a_name_no_tool_has_does_not_break_the_answer(make_client):
    client = tool_client(make_client, CALL.replace("get_weather", "a.b <EMAIL_1>"))
    for stream in (False, True):
        response = chat(client, tools=[WEATHER], max_tokens=200, stream=stream)
        assert response.status_code == 200 and '"error"' not in response.text


@pytest.mark.parametrize("template", ["fake", "fake that renders tools"])
def test_deeply_nested_arguments_in_the_history_are_a_400_or_text_never_a_500(
    make_client, template
):
    client = tool_client(make_client, "ok")
    client.engine.tokenizer.chat_template = template
    nested = "[" * 5000 + "]" * 5000
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": nested}},
        ]},
        {"role": "tool", "tool_call_id": "c", "content": "x"},
    ]  # fmt: skip
    assert chat(client, messages=messages, tools=[WEATHER]).status_code < 500
