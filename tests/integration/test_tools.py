"""Structured outputs and tool calls on the real vLLM engine (xgrammar, vLLM's hermes parser)
and the default model, through the official openai client."""

import json
from enum import StrEnum

import openai
import pytest
from pydantic import BaseModel

MODEL = "smollm2-135m-instruct"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 20}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]


class Colour(StrEnum):
    red = "red"
    green = "green"
    blue = "blue"


class Address(BaseModel):
    city: str
    country: str


class Person(BaseModel):
    name: str
    age: int
    favourite: Colour
    address: Address


def test_parse_with_nested_and_enum_fields(llmloop_server):
    completion = llmloop_server.client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a person who lives in Rome, as JSON."}],
        response_format=Person,
        max_tokens=120,
        temperature=0,
    )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop", message.content
    person = message.parsed
    assert isinstance(person, Person) and isinstance(person.favourite, Colour)


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_json_schema_streamed_parses_and_matches(llmloop_server, endpoint):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 30}, "sure": {"type": "boolean"}},
        "required": ["answer", "sure"],
        "additionalProperties": False,
    }
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": True},
    }
    client = llmloop_server.client
    if endpoint == "chat":
        stream = client.chat.completions.create(
            model=MODEL, messages=ASK, response_format=response_format, max_tokens=60,
            temperature=0, stream=True,
        )  # fmt: skip
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    else:
        stream = client.completions.create(
            model=MODEL, prompt="Is Paris in France? Answer:", max_tokens=60, temperature=0,
            stream=True, extra_body={"response_format": response_format},
        )  # fmt: skip
        text = "".join(c.choices[0].text for c in stream)
    value = json.loads(text)
    assert set(value) == {"answer", "sure"} and isinstance(value["sure"], bool)


def test_json_object_and_vllm_structured_outputs(llmloop_server):
    client = llmloop_server.client
    landmark = [
        {"role": "user", "content": "Give the city and country of the Eiffel Tower as JSON."}
    ]
    response = client.chat.completions.create(
        model=MODEL, messages=landmark, response_format={"type": "json_object"}, max_tokens=100,
        temperature=0,
    )  # fmt: skip
    assert response.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(response.choices[0].message.content), dict)
    for constraint, check in [
        ({"choice": ["yes", "no"]}, lambda t: t in ("yes", "no")),
        ({"regex": "[a-z]{3}-[a-z]{4}"}, lambda t: len(t) == 8 and t[3] == "-"),
        ({"grammar": 'root ::= "Paris" | "Rome"'}, lambda t: t in ("Paris", "Rome")),
    ]:
        response = client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=20, temperature=0,
            extra_body={"structured_outputs": constraint},
        )  # fmt: skip
        text = response.choices[0].message.content
        assert check(text), (constraint, text)


def test_named_tool_call_streamed_reassembles_into_valid_json(llmloop_server):
    stream = llmloop_server.client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=80, temperature=0, stream=True,
    )  # fmt: skip
    name, arguments, ids, finish = None, "", set(), None
    for chunk in stream:
        if not chunk.choices:
            continue
        for piece in chunk.choices[0].delta.tool_calls or ():
            assert piece.index == 0
            if piece.id:
                ids.add(piece.id)
                name = piece.function.name
            arguments += piece.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert name == "get_weather" and len(ids) == 1
    value = json.loads(arguments)
    assert set(value) == {"city", "unit"} and value["unit"] in ("celsius", "fahrenheit")
    assert finish == "stop"  # OpenAI's finish_reason for a named tool_choice


def test_required_tool_call_and_the_result_back_into_the_conversation(llmloop_server):
    client = llmloop_server.client
    first = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
        parallel_tool_calls=False, max_tokens=80, temperature=0,
    )  # fmt: skip
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name in ("get_weather", "get_time")
    json.loads(call.function.arguments)
    conversation = [
        *ASK,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18, "sky": "clear"}'},
    ]
    second = client.chat.completions.create(
        model=MODEL, messages=conversation, tools=[WEATHER, TIME], tool_choice="none",
        max_tokens=40, temperature=0,
    )  # fmt: skip
    assert second.choices[0].message.content and not second.choices[0].message.tool_calls


def test_auto_tool_choice_is_parsed_by_the_hermes_parser(llmloop_server):
    """The 135M model rarely decides to call a tool on its own; the prompt shows it one call in
    the conversation so that ``auto`` has something to parse."""
    client = llmloop_server.client
    shown = {"id": "call_0", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Rome", "unit": "celsius"}'}}  # fmt: skip
    conversation = [
        {"role": "user", "content": "What is the weather in Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [shown]},
        {"role": "tool", "tool_call_id": "call_0", "content": "21 celsius"},
        {"role": "assistant", "content": "It is 21 degrees in Rome."},
        *ASK,
    ]
    response = client.chat.completions.create(
        model=MODEL, messages=conversation, tools=[WEATHER], max_tokens=60, temperature=0
    )
    choice = response.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls[0].function.name == "get_weather"
        json.loads(choice.message.tool_calls[0].function.arguments)
    else:  # the model answered in text: nothing may look like a half-parsed call
        assert "<tool_call>" not in (choice.message.content or "")


def tokens(llmloop_server, text: str) -> list[int]:
    body = {"model": MODEL, "prompt": text, "add_special_tokens": False}
    with llmloop_server.http() as http:
        return http.post("/tokenize", json=body).json()["tokens"]


def test_token_controls(llmloop_server):
    client = llmloop_server.client
    (end_of_turn,) = tokens(llmloop_server, "<|im_end|>")
    long = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=30,
        temperature=0, extra_body={"min_tokens": 25, "stop_token_ids": [end_of_turn]},
    )  # fmt: skip
    assert long.usage.completion_tokens >= 25
    banned = tokens(llmloop_server, " Paris") + tokens(llmloop_server, "Paris")
    biased = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=20, temperature=0, logit_bias={str(t): -100 for t in banned},
    )  # fmt: skip
    assert "Paris" not in biased.choices[0].message.content
    scored = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=1,
        extra_body={"prompt_logprobs": 2},
    )  # fmt: skip
    first, *rest = scored.model_extra["prompt_logprobs"]
    assert first is None and rest and all(1 <= len(position) <= 3 for position in rest)
    assert scored.usage.prompt_tokens == len(rest) + 1


def test_bad_structured_outputs_are_400_not_500(llmloop_server):
    with pytest.raises(openai.BadRequestError):
        llmloop_server.client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=5,
            extra_body={"structured_outputs": {"grammar": "root ::= ((("}},
        )  # fmt: skip
    with pytest.raises(openai.BadRequestError):
        llmloop_server.client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=5, audio={"voice": "alloy", "format": "wav"}
        )
