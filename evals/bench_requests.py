"""One streaming request, timed the way vLLM's ``vllm bench serve`` times it.

Follows ``vllm/benchmarks/lib/endpoint_request_func.py``: the request streams with
``stream_options.include_usage``; ITL is the gap between consecutive chunks carrying choices; the
request's latency ends at its last such chunk (the trailing usage chunk carries no token); the
output token count is the server's ``usage.completion_tokens``. One deliberate refinement: TTFT
is taken at the first chunk that carries content (or finishes the choice), so a server that
sends the assistant-role chunk before prefill cannot report a TTFT it has not earned. vLLM's own
server sends the role chunk together with the first token, so on it both readings agree.
"""

import json
import time
from dataclasses import dataclass, field
from typing import Literal

import httpx

Endpoint = Literal["chat", "completions"]
ENDPOINT_PATHS: dict[str, str] = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


@dataclass
class RequestInput:
    prompt: str
    max_tokens: int
    model: str
    ignore_eos: bool = False


@dataclass
class RequestOutput:
    """What one request measured; times in seconds from ``time.perf_counter``."""

    success: bool = False
    generated_text: str = ""
    latency: float = 0.0
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    output_tokens: int = 0
    """``usage.completion_tokens``; 0 when the server sent no usage."""
    prompt_tokens: int = 0
    num_chunks: int = 0
    """Chunks carrying choices: the output token count when the server sends no usage."""
    start_time: float = 0.0
    error: str = ""


def build_payload(request: RequestInput, endpoint: Endpoint) -> dict:
    """The JSON body vLLM's benchmark sends for ``endpoint``."""
    payload: dict = {"model": request.model, "stream": True}
    if endpoint == "chat":
        payload["messages"] = [{"role": "user", "content": request.prompt}]
        payload["max_completion_tokens"] = request.max_tokens
    else:
        payload["prompt"] = request.prompt
        payload["max_tokens"] = request.max_tokens
        payload["repetition_penalty"] = 1.0
    payload["stream_options"] = {"include_usage": True}
    if request.ignore_eos:
        payload["ignore_eos"] = True
    return payload


async def send_streaming_request(
    client: httpx.AsyncClient, request: RequestInput, endpoint: Endpoint
) -> RequestOutput:
    """Send one streaming request and time its chunks; never raises (failures are recorded)."""
    output = RequestOutput()
    start = most_recent = time.perf_counter()
    output.start_time = start
    first_token_seen = False
    try:
        payload = build_payload(request, endpoint)
        async with client.stream("POST", ENDPOINT_PATHS[endpoint], json=payload) as response:
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")
                output.error = f"HTTP {response.status_code}: {body[:500]}"
                return output
            async for line in response.aiter_lines():
                data = _sse_data(line)
                if data is None or data == "[DONE]":
                    continue
                chunk = json.loads(data)
                now = time.perf_counter()
                if choices := chunk.get("choices"):
                    text = _choice_text(choices[0], endpoint)
                    if not first_token_seen:
                        if not text and choices[0].get("finish_reason") is None:
                            continue  # the role-only chunk: no token yet
                        first_token_seen = True
                        output.ttft = now - start
                    else:
                        output.itl.append(now - most_recent)
                    most_recent = now
                    output.num_chunks += 1
                    output.generated_text += text
                if usage := chunk.get("usage"):
                    output.output_tokens = usage.get("completion_tokens") or 0
                    output.prompt_tokens = usage.get("prompt_tokens") or 0
        output.latency = most_recent - start
        output.success = first_token_seen
        if not first_token_seen:
            output.error = "the stream ended without a token, so TTFT is undefined"
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        output.error = f"{type(e).__name__}: {e}"
    return output


def _sse_data(line: str) -> str | None:
    """The payload of an SSE ``data:`` line; None for comments, blank lines and other fields."""
    if not line.startswith("data:"):
        return None
    return line[len("data:") :].strip()


def _choice_text(choice: dict, endpoint: Endpoint) -> str:
    if endpoint == "chat":
        return (choice.get("delta") or {}).get("content") or ""
    return choice.get("text") or ""
