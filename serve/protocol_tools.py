"""Request and response models for structured outputs and tool calls: OpenAI's
``response_format``, ``tools`` and ``tool_choice``, and vLLM's ``structured_outputs`` extra.

What they ask of the engine is ``StructuredOutputs`` (``serve/engine_api.py``); turning a request
into one is ``serve/tools.py``."""

import json
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from llmloop.serve.protocol_base import OpenAIModel, Refused, refuse_unsupported

MAX_SCHEMA_CHARS = 1 << 16
"""A JSON schema, grammar or regex, serialised: 64 KiB."""
MAX_SCHEMA_DEPTH = 32
"""Objects and arrays nested in a schema (vLLM refuses deeper ones in the engine)."""
MAX_GRAMMAR_COST = 1024
"""What a request's schemas, regexes and grammars may cost xgrammar to compile, in the units of
``grammar_cost`` (about the states of the expanded pattern). xgrammar compiles in the engine
before the first token, and its time grows with bounded repetitions, not with text size;
measured on one core: ``maxLength: 4096`` 1.95 s, ``(.{0,256}){0,256}`` 1.9 s, ``[a-z]{0,20000}``
39 s, 1,000 properties in one object 6 s, 256 properties 0.14 s. Unbounded strings and arrays
cost nothing: leave long fields without ``maxLength``."""
MAX_PROPERTIES = 256
"""Properties of one object in a schema."""
MAX_TOOLS = 128
"""Tools per request: OpenAI's documented maximum."""
MAX_TOOLS_CHARS = 1 << 18
"""All tools of a request, serialised: 256 KiB."""
MAX_CHOICE_OPTIONS = 1024
"""Strings in ``structured_outputs.choice``."""
MAX_TOOL_CALLS = 128
"""Tool calls in one assistant message of the conversation."""

_NAME = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")]
_DESCRIPTION = Annotated[str, Field(max_length=MAX_SCHEMA_CHARS)]
_BOUND_KEYWORDS = ("maxLength", "minLength", "maxItems", "minItems", "maxProperties")
_QUANTIFIER = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


def check_schema(schema: Any) -> Any:
    """A JSON schema bounded in depth, size and compile cost (walked iteratively: no recursion
    on client input, and depth first, before anything serialises it)."""
    nodes = schema_nodes(schema)  # the depth first: serialising a deeper one could recurse
    if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
        raise ValueError(f"at most {MAX_SCHEMA_CHARS} characters once serialised")
    if nodes_cost(nodes) > MAX_GRAMMAR_COST:
        raise ValueError(too_costly("its bounds"))
    return schema


def schema_nodes(schema: Any) -> list:
    """Every dict and list in ``schema``, breadth first; a ValueError past MAX_SCHEMA_DEPTH."""
    level, depth, nodes = [schema], 0, []
    while level:
        depth += 1
        if depth > MAX_SCHEMA_DEPTH:
            raise ValueError(f"nested at most {MAX_SCHEMA_DEPTH} levels deep")
        nodes += level
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
    return nodes


def schema_cost(schema: Any) -> int:
    """``grammar_cost`` of a schema: its length bounds, the quantifiers of its patterns and its
    properties, added up."""
    return nodes_cost(schema_nodes(schema))


def nodes_cost(nodes: list) -> int:
    """``schema_cost`` from the dicts and lists ``schema_nodes`` found."""
    cost = 0
    for node in nodes:
        if not isinstance(node, dict):
            continue
        for keyword in _BOUND_KEYWORDS:
            if isinstance(node.get(keyword), int):
                cost += min(max(node[keyword], 0), MAX_GRAMMAR_COST + 1)
        if isinstance(node.get("pattern"), str):
            cost += grammar_cost(node["pattern"])
        if isinstance(node.get("properties"), dict):
            if len(node["properties"]) > MAX_PROPERTIES:
                raise ValueError(f"at most {MAX_PROPERTIES} properties in one object")
            cost += len(node["properties"])
    return cost


def grammar_cost(pattern: str) -> int:
    """About the states of a regex (or EBNF) with its bounded repetitions expanded: each atom
    counts 1, ``X{m,n}`` counts ``n`` times X, nested groups multiply. One linear pass."""
    totals = [0]  # cost of each open group, innermost last
    last = 1  # cost of the atom or group just read: what a quantifier repeats
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "(":
            totals.append(0)
            i += 1
            continue
        if char == ")" and len(totals) > 1:
            last = max(totals.pop(), 1)
            totals[-1] += last
            i += 1
            continue
        if char == "{" and (quantifier := _QUANTIFIER.match(pattern, i)):
            low, high = quantifier.groups()
            times = _bound(high or low)
            totals[-1] += last * max(times - 1, 0)
            last = min(last * times, MAX_GRAMMAR_COST + 1)
            i = quantifier.end()
            continue
        i += 2 if char == "\\" else 1
        last = 1
        totals[-1] += 1
    return sum(totals)


def _bound(digits: str) -> int:
    return int(digits) if len(digits) <= 6 else MAX_GRAMMAR_COST + 1


def too_costly(what: str) -> str:
    return (
        f"{what} would take too long to compile into a grammar (cost over {MAX_GRAMMAR_COST}: "
        "bounded repetitions such as maxLength or {m,n} add up, nested ones multiply); "
        "leave long fields unbounded"
    )


def _check_spec(spec: str) -> str:
    if grammar_cost(spec) > MAX_GRAMMAR_COST:
        raise ValueError(too_costly("this pattern"))
    return spec


_SPEC = Annotated[
    str, Field(min_length=1, max_length=MAX_SCHEMA_CHARS), AfterValidator(_check_spec)
]
_TEXT = Annotated[str, Field(min_length=1, max_length=MAX_SCHEMA_CHARS)]
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


REFUSED_OPTIONS = {
    "structural_tag": Refused("structural tags (tool calls are forced with tool_choice)"),
    "disable_any_whitespace": Refused("disable_any_whitespace"),
    "disable_additional_properties": Refused("disable_additional_properties"),
    "whitespace_pattern": Refused("whitespace_pattern"),
}


class StructuredOutputsOptions(OpenAIModel):
    """vLLM's ``structured_outputs`` extra: exactly one constraint."""

    json_: _Schema | _SPEC | None = Field(None, alias="json")
    regex: _SPEC | None = None
    choice: Annotated[list[_TEXT], Field(min_length=1, max_length=MAX_CHOICE_OPTIONS)] | None = None
    grammar: _SPEC | None = None
    json_object: bool | None = None

    _refuse = model_validator(mode="before")(refuse_unsupported(REFUSED_OPTIONS))

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
    name: Annotated[str, Field(max_length=256)]
    """Whatever name the model wrote (a tool's, unless decoding forced it, may differ)."""
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
