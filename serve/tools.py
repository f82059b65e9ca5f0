"""Tool calls and structured outputs on the way in: the conversation as the chat template takes
it, and the constraint (``StructuredOutputs``) the engine decodes under.

A chat template that knows tools (it reads ``tools``: Qwen2.5/3, Hermes, Llama 3.1, ...) gets
them and the conversation's calls as Hugging Face templates expect (arguments as objects, as
vLLM passes them). One that does not (SmolLM2's) gets the Hermes format spelled out in the
system message, the way Qwen2.5's template writes it, so that vLLM's ``hermes`` parser reads
what the model answers: ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``."""

import json

from llmloop.serve.engine_api import StructuredOutputs, Tokenizer, ToolCalling
from llmloop.serve.errors import BadRequestError
from llmloop.serve.protocol import ChatCompletionRequest, ChatMessage, SamplingRequest

HERMES_TOOLS_PROMPT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


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
    (OpenAI's shape) the model may call."""
    uses_tools = bool(tools) or any(m["role"] == "tool" or "tool_calls" in m for m in messages)
    if not uses_tools:
        return messages, {}
    if "tools" in (getattr(tokenizer, "chat_template", None) or ""):
        native = [_with_argument_objects(m) for m in messages]
        return native, ({"tools": tools} if tools else {})
    if tool_format != "hermes":
        raise BadRequestError(
            f"tools: the model's chat template has no tool calling, and the server's tool-call "
            f"format ({tool_format}) has no prompt to add; serve with --tool-call-parser hermes",
            param="tools",
        )
    return _hermes_messages(messages, tools), {}


def _with_argument_objects(message: dict) -> dict:
    """Hugging Face templates write ``arguments | tojson``: an object, not JSON text."""
    if "tool_calls" not in message:
        return message
    calls = [
        c | {"function": c["function"] | {"arguments": _json_or_text(c["function"]["arguments"])}}
        for c in message["tool_calls"]
    ]
    return message | {"tool_calls": calls}


def _json_or_text(arguments: str):
    try:
        return json.loads(arguments)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's recursion
        return arguments


def _hermes_messages(messages: list[dict], tools: list[dict]) -> list[dict]:
    """The conversation in plain roles, calls and results written in the Hermes format."""
    converted = []
    for m in messages:
        if m["role"] == "tool":
            text = f"<tool_response>\n{m['content']}\n</tool_response>"
            converted.append({"role": "user", "content": text})
        elif "tool_calls" in m:
            calls = [_hermes_call(c["function"]) for c in m["tool_calls"]]
            text = "\n".join(filter(None, [m["content"], *calls]))
            converted.append({"role": "assistant", "content": text})
        else:
            converted.append({"role": m["role"], "content": m["content"]})
    if tools:
        prompt = HERMES_TOOLS_PROMPT.format(tools="\n".join(json.dumps(t) for t in tools))
        if converted and converted[0]["role"] in ("system", "developer"):
            first = converted[0]
            converted[0] = first | {"content": f"{first['content']}\n\n{prompt}"}
        else:
            converted.insert(0, {"role": "system", "content": prompt})
    return converted


def offered_tools(body: ChatCompletionRequest) -> list[dict]:
    """The tools the model is shown: none with tool_choice "none"."""
    if not body.calls_tools():
        return []
    return [t.model_dump(exclude_none=True) for t in body.tools or ()]


def _hermes_call(function: dict) -> str:
    name, arguments = json.dumps(function["name"]), function["arguments"]
    return f'<tool_call>\n{{"name": {name}, "arguments": {arguments}}}\n</tool_call>'


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
