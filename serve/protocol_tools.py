"""Request and response models for structured outputs and tool calls: OpenAI's
``response_format``, ``tools`` and ``tool_choice``, and vLLM's ``structured_outputs`` extra.

What they ask of the engine is ``StructuredOutputs`` (``serve/engine_api.py``); turning a request
into one is ``serve/tools.py``."""

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from llmloop.serve.protocol_base import OpenAIModel, refused

MAX_SCHEMA_CHARS = 1 << 16
"""A JSON schema, grammar or regex, serialised: 64 KiB. xgrammar compiles it before the first
token; this bounds that work (a 64 KiB schema compiles in well under a second)."""
MAX_SCHEMA_DEPTH = 32
"""Objects and arrays nested in a schema (vLLM refuses deeper ones in the engine)."""
MAX_TOOLS = 128
"""Tools per request: OpenAI's documented maximum."""
MAX_CHOICE_OPTIONS = 1024
"""Strings in ``structured_outputs.choice``."""
MAX_TOOL_CALLS = 128
"""Tool calls in one assistant message of the conversation."""

_NAME = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")]
_DESCRIPTION = Annotated[str, Field(max_length=MAX_SCHEMA_CHARS)]
_SPEC = Annotated[str, Field(min_length=1, max_length=MAX_SCHEMA_CHARS)]


def check_schema(schema: Any) -> Any:
    """A JSON schema bounded in size and depth (iteratively: no recursion on client input)."""
    if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
        raise ValueError(f"at most {MAX_SCHEMA_CHARS} characters once serialised")
    level, depth = [schema], 0
    while level:
        depth += 1
        if depth > MAX_SCHEMA_DEPTH:
            raise ValueError(f"nested at most {MAX_SCHEMA_DEPTH} levels deep")
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
    return schema


_Schema = Annotated[dict[str, Any], AfterValidator(check_schema)]


# --- response_format (OpenAI) and structured_outputs (vLLM) ---


class JsonSchemaFormat(OpenAIModel):
    name: _NAME
    description: _DESCRIPTION | None = None
    json_schema: _Schema | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(OpenAIModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _check_schema_given(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError('type "json_schema" needs a json_schema')
        return self


class StructuredOutputsOptions(OpenAIModel):
    """vLLM's ``structured_outputs`` extra: exactly one constraint."""

    json_: _Schema | _SPEC | None = Field(None, alias="json")
    regex: _SPEC | None = None
    choice: Annotated[list[_SPEC], Field(min_length=1, max_length=MAX_CHOICE_OPTIONS)] | None = None
    grammar: _SPEC | None = None
    json_object: bool | None = None
    structural_tag: refused("structural tags (tool calls are forced with tool_choice)") = None
    disable_any_whitespace: refused("disable_any_whitespace") = None
    disable_additional_properties: refused("disable_additional_properties") = None
    whitespace_pattern: refused("whitespace_pattern") = None

    @model_validator(mode="after")
    def _check_one(self):
        names = ("json_", "regex", "choice", "grammar", "json_object")
        given = [name for name in names if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of json, regex, choice, grammar, json_object")
        if sum(map(len, self.choice or ())) > MAX_SCHEMA_CHARS:
            raise ValueError(f"choice: at most {MAX_SCHEMA_CHARS} characters in all")
        return self


# --- tools ---


class FunctionDefinition(OpenAIModel):
    name: _NAME
    description: _DESCRIPTION | None = None
    parameters: _Schema | None = None
    strict: bool | None = None


class ChatCompletionTool(OpenAIModel):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(OpenAIModel):
    name: _NAME


class NamedToolChoice(OpenAIModel):
    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class FunctionCall(OpenAIModel):
    name: _NAME
    arguments: Annotated[str, Field(max_length=1 << 20)]
    """JSON text, as the model wrote it."""


class ToolCall(OpenAIModel):
    id: Annotated[str, Field(min_length=1, max_length=256)]
    type: Literal["function"] = "function"
    function: FunctionCall


class DeltaFunctionCall(OpenAIModel):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(OpenAIModel):
    """One piece of a streamed tool call: the first carries ``id``, ``type`` and the name."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall | None = None
