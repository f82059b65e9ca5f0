"""Tool calls and structured outputs on the way in: the conversation as the chat template takes
it (``llmloop.chat_tools``, shared with fine-tuning), what the safety layer screens, and the
constraint (``StructuredOutputs``) the engine decodes under."""

import json

from llmloop.chat_tools import hermes_messages, native_messages, renders_tools, uses_tools
from llmloop.serve.engine_api import StructuredOutputs, Tokenizer, ToolCalling
from llmloop.serve.errors import BadRequestError
from llmloop.serve.protocol import ChatCompletionRequest, ChatMessage, SamplingRequest


def request_messages(messages: list[ChatMessage]) -> list[dict]:
    """The conversation in OpenAI's shape, content as plain text: what is screened and logged."""
    converted = []
    for m in messages:
        message = {"role": m.role, "content": m.text()}
        if m.tool_calls:
            message["tool_calls"] = [c.model_dump() for c in m.tool_calls]
        if m.tool_call_id is not None:
            message["tool_call_id"] = m.tool_call_id
        converted.append(message)
    return converted


def message_texts(messages: list[dict]) -> list[str]:
    """Every text of the conversation the safety layer screens: each message's content, then
    each tool call's arguments (JSON text: a redaction placeholder keeps it valid JSON)."""
    contents = [m["content"] for m in messages]
    arguments = [c["function"]["arguments"] for m in messages for c in m.get("tool_calls", ())]
    return contents + arguments


def with_texts(messages: list[dict], texts: list[str]) -> list[dict]:
    """``messages`` with the texts ``message_texts`` listed replaced by ``texts`` (screened)."""
    contents, arguments = iter(texts[: len(messages)]), iter(texts[len(messages) :])
    replaced = []
    for message in messages:
        message = message | {"content": next(contents)}
        if "tool_calls" in message:
            message["tool_calls"] = [
                c | {"function": c["function"] | {"arguments": next(arguments)}}
                for c in message["tool_calls"]
            ]
        replaced.append(message)
    return replaced


def tool_texts(tools: list[dict]) -> list[str]:
    """The tools' prose the safety layer screens: each description, the function's and its
    parameters' (names and schemas are the app's code, left as they are)."""
    return [holder["description"] for holder in _described(tools)]


def with_tool_texts(tools: list[dict], texts: list[str]) -> list[dict]:
    """``tools`` with the texts ``tool_texts`` listed replaced by ``texts`` (screened)."""
    copied = json.loads(json.dumps(tools))
    for holder, text in zip(_described(copied), texts, strict=True):
        holder["description"] = text
    return copied


def _described(tools: list[dict]) -> list[dict]:
    """Every dict in ``tools`` with a string "description", in a fixed order (iteratively: the
    schemas were bounded in depth when the request was read)."""
    found, pending = [], list(reversed(tools))
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if isinstance(node.get("description"), str):
                found.append(node)
            pending.extend(reversed([v for v in node.values() if isinstance(v, dict | list)]))
        elif isinstance(node, list):
            pending.extend(reversed([v for v in node if isinstance(v, dict | list)]))
    return found


def template_inputs(
    messages: list[dict], tools: list[dict], tokenizer: Tokenizer, tool_format: str
) -> tuple[list[dict], dict]:
    """(messages, extra ``apply_chat_template`` arguments) for ``messages`` and the ``tools``
    (OpenAI's shape) the model may call (``llmloop.chat_tools``)."""
    if not uses_tools(messages, tools):
        return messages, {}
    if renders_tools(getattr(tokenizer, "chat_template", None)):
        return native_messages(messages), ({"tools": tools} if tools else {})
    if tool_format != "hermes":
        raise BadRequestError(
            f"tools: the model's chat template has no tool calling, and the server's tool-call "
            f"format ({tool_format}) has no prompt to add; serve with --tool-call-parser hermes",
            param="tools",
        )
    return hermes_messages(messages, tools), {}


def offered_tools(body: ChatCompletionRequest) -> list[dict]:
    """The tools the model is shown: none with tool_choice "none"."""
    if not body.calls_tools():
        return []
    return [t.model_dump(exclude_none=True) for t in body.tools or ()]


def structured_outputs(
    body: SamplingRequest, tool_calling: ToolCalling | None = None
) -> StructuredOutputs | None:
    """What the engine must generate: a forced tool call (or strict tools' arguments), else
    the ``response_format``, else vLLM's ``structured_outputs``; None: anything."""
    if isinstance(body, ChatCompletionRequest) and body.calls_tools() and tool_calling:
        tools = offered_tools(body)
        choice = body.effective_tool_choice()
        constraint = tool_calling.constraint(
            tools,
            choice if isinstance(choice, str) else choice.model_dump(),
            body.parallel_tool_calls,
        )
        if constraint is not None:
            if _response_format_constraint(body) is not None:
                raise BadRequestError(
                    "response_format: cannot be combined with strict tools", param="response_format"
                )
            return constraint
    return _response_format_constraint(body)


def _response_format_constraint(body: SamplingRequest) -> StructuredOutputs | None:
    if body.response_format is not None:
        if body.response_format.type == "json_object":
            return StructuredOutputs(json_object=True)
        if body.response_format.type == "json_schema":
            schema = body.response_format.json_schema
            return StructuredOutputs(json=(schema.json_schema if schema else None) or {})
    options = body.structured_outputs
    if options is None:
        return None
    return StructuredOutputs(
        json=options.json_,
        regex=options.regex,
        choice=tuple(options.choice) if options.choice is not None else None,
        grammar=options.grammar,
        json_object=options.json_object,
    )
