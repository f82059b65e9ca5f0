"""Tool calls in a chat template's input, the same for serving and for fine-tuning (so a model
is trained on the prompt it will be served with).

A template that renders ``tools`` (Qwen2.5/3, Hermes, Llama 3.1, ...) gets them, and the
conversation's calls with arguments as objects, as Hugging Face templates and vLLM pass them.
One that does not (SmolLM2's) gets the Hermes format spelled out, as Qwen2.5's template writes
it: the tools in the system message, calls as ``<tool_call>{"name", "arguments"}</tool_call>``
in the assistant's text, results as ``<tool_response>`` user turns; vLLM's ``hermes`` parser
reads what the model answers."""

import json
from typing import Any

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


def renders_tools(chat_template: str | None) -> bool:
    """Whether a chat template reads ``tools`` itself."""
    return "tools" in (chat_template or "")


def uses_tools(messages: list[dict], tools: list[dict]) -> bool:
    return bool(tools) or any(m["role"] == "tool" or m.get("tool_calls") for m in messages)


def native_messages(messages: list[dict]) -> list[dict]:
    """``messages`` with each call's arguments as an object: templates write
    ``arguments | tojson``."""
    converted = []
    for message in messages:
        if message.get("tool_calls"):
            calls = [
                c
                | {
                    "function": c["function"]
                    | {"arguments": _as_object(c["function"]["arguments"])}
                }
                for c in message["tool_calls"]
            ]
            message = message | {"tool_calls": calls}
        converted.append(message)
    return converted


def hermes_messages(messages: list[dict], tools: list[dict]) -> list[dict]:
    """The conversation in plain roles, calls and results written in the Hermes format; with
    ``tools``, their prompt joins the first system message (or becomes one, first)."""
    converted = []
    for m in messages:
        content = m.get("content") or ""
        if m["role"] == "tool":
            converted.append(
                {"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"}
            )
        elif m.get("tool_calls"):
            calls = [hermes_call(c["function"]) for c in m["tool_calls"]]
            converted.append(
                {"role": "assistant", "content": "\n".join(filter(None, [content, *calls]))}
            )
        else:
            converted.append({"role": m["role"], "content": content})
    if tools:
        prompt = HERMES_TOOLS_PROMPT.format(tools="\n".join(json.dumps(t) for t in tools))
        if converted and converted[0]["role"] in ("system", "developer"):
            first = converted[0]
            converted[0] = first | {"content": f"{first['content']}\n\n{prompt}"}
        else:
            converted.insert(0, {"role": "system", "content": prompt})
    return converted


def hermes_call(function: dict) -> str:
    """One call as the Hermes format writes it; arguments as JSON text or an object."""
    arguments = function["arguments"]
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    name = json.dumps(function["name"])
    return f'<tool_call>\n{{"name": {name}, "arguments": {arguments}}}\n</tool_call>'


def _as_object(arguments: Any) -> Any:
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's recursion
        return arguments
