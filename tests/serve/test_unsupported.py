"""Parameters we do not support are refused with a 400 naming them, never silently dropped;
the new ones (tools, structured outputs, token controls) are bounded and checked."""

import pytest

from llmloop.serve.protocol import REFUSED as REFUSED_PARAMETERS
from tests.serve.test_errors import CHAT, OK_CHAT, assert_openai_error
from tests.serve.test_tools import WEATHER

COMPLETIONS = "/v1/completions"
OK_COMPLETION = {"model": "fake-model", "prompt": "hi"}
REFUSED = sorted(REFUSED_PARAMETERS)


@pytest.mark.parametrize("name", REFUSED)
@pytest.mark.parametrize(("path", "ok_body"), [(CHAT, OK_CHAT), (COMPLETIONS, OK_COMPLETION)])
def test_each_unsupported_parameter_is_a_400_naming_it(client, name, path, ok_body):
    error = assert_openai_error(client.post(path, json=ok_body | {name: {"x": 1}}), 400, name)
    assert "not supported" in error["message"]


def test_harmless_values_of_refused_parameters_pass(client):
    body = OK_CHAT | {"modalities": ["text"], "service_tier": "auto", "audio": None}
    assert client.post(CHAT, json=body).status_code == 200


def test_unknown_fields_are_ignored_as_vllm_does(client):
    assert client.post(CHAT, json=OK_CHAT | {"some_future_field": 1}).status_code == 200


def deep(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
        ({"tools": [WEATHER] * 129}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": deep(40)}}]}, "tools[0].function.parameters"),
        ({"tools": [WEATHER], "tool_choice": NAMED, "response_format": {"type": "json_object"}}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": deep(40)}}}, "response_format.json_schema.schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {"enum": ["x" * 70_000]}}}}, "response_format.json_schema.schema"),
        ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs"),
        ({"structured_outputs": {}}, "structured_outputs"),
        ({"structured_outputs": {"regex": "a"}, "response_format": {"type": "json_object"}}, None),
        ({"logit_bias": {"x": 1}}, "logit_bias.x"),
        ({"logit_bias": {"5": 101}}, "logit_bias"),
        ({"min_tokens": 9, "max_tokens": 3}, None),
        ({"stop_token_ids": [-1]}, "stop_token_ids[0]"),
        ({"prompt_logprobs": 21}, "prompt_logprobs"),
        ({"messages": [{"role": "tool", "content": "18C"}]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": "x", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]}]}, "messages[0]"),
    ],
)  # fmt: skip
def test_bad_tools_and_constraints_are_400(client, extra, param):
    assert_openai_error(client.post(CHAT, json=OK_CHAT | extra), 400, param)


def test_a_logit_bias_past_the_vocabulary_is_a_400(client):
    error = assert_openai_error(
        client.post(CHAT, json=OK_CHAT | {"logit_bias": {"9999999": 1}}), 400, "logit_bias"
    )
    assert "vocabulary" in error["message"]


def test_vllm_structured_outputs_options_we_do_not_take_are_400(client):
    body = OK_CHAT | {"structured_outputs": {"regex": "a", "structural_tag": "{}"}}
    error = assert_openai_error(client.post(CHAT, json=body), 400, "structured_outputs")
    assert "structural_tag" in error["message"]


def json_schema(schema: dict) -> dict:
    return {
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    }


def tool_with(parameters: dict, name: str = "f") -> dict:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


PROPERTIES_300 = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(300)}}
LONG_FIELD = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 700}}}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (json_schema({"type": "string", "pattern": "[a-z]{0,20000}"}), "response_format.json_schema.schema"),
        (json_schema({"type": "string", "maxLength": 5000}), "response_format.json_schema.schema"),
        (json_schema(PROPERTIES_300), "response_format.json_schema.schema"),
        ({"structured_outputs": {"regex": "(.{0,256}){0,256}"}}, "structured_outputs.regex"),
        ({"structured_outputs": {"grammar": 'root ::= ("a"{0,100}){0,100}'}}, "structured_outputs.grammar"),
        ({"tools": [tool_with(LONG_FIELD, "f"), tool_with(LONG_FIELD, "g")]}, "tools"),
    ],
)  # fmt: skip
def test_schemas_that_would_compile_for_long_are_400(client, extra, param):
    error = assert_openai_error(client.post(CHAT, json=OK_CHAT | extra), 400, param)
    assert "compile" in error["message"] or "properties" in error["message"]


@pytest.mark.parametrize(
    "extra",
    [
        json_schema({"type": "string", "pattern": "[a-z]{1,64}@[a-z]{1,64}\\.[a-z]{2,8}"}),
        json_schema({"type": "string"}),  # unbounded strings cost nothing to compile
        json_schema(LONG_FIELD),
        {"structured_outputs": {"regex": "[0-9]{3}-[0-9]{4}"}},
    ],
)
def test_ordinary_schemas_pass(client, extra):
    assert client.post(CHAT, json=OK_CHAT | extra).status_code == 200


def test_what_vllm_router_adds_to_every_body_is_accepted(client):
    """vllm-router (``llmloop cluster``) rebuilds request bodies with these defaults."""
    chat = {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
        "max_tokens": 5,
        "logprobs": False,
        "no_stop_trim": False,
        "ignore_eos": False,
        "continue_final_message": False,
        "skip_special_tokens": True,
        "separate_reasoning": True,
        "stream_reasoning": True,
        "return_hidden_states": False,
        "include_reasoning": True,
    }
    assert client.post("/v1/chat/completions", json=chat).status_code == 200
    completion = {
        "model": "fake-model",
        "prompt": "hi",
        "max_tokens": 5,
        "stream": False,
        "echo": False,
        "no_stop_trim": False,
        "ignore_eos": False,
        "skip_special_tokens": True,
        "return_hidden_states": False,
    }
    assert client.post("/v1/completions", json=completion).status_code == 200
