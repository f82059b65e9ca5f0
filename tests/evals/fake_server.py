"""A tiny OpenAI-compatible server for unit tests, served by uvicorn on a free port in a thread.

Tokens are whitespace-led words (`` word``); a prompt token's logprob is ``-len(token) / 10``
so tests can compute expected log-likelihoods by hand. ``answer(prompt_text)`` decides replies.
"""

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

TOKEN_PATTERN = re.compile(r"\s*\S+|\s+$")


def split_tokens(text: str) -> list[str]:
    return TOKEN_PATTERN.findall(text)


def token_logprob(token: str) -> float:
    return -len(token) / 10


@dataclass
class FakeServerState:
    answer: Callable[[str], str] = lambda prompt: "Paris"
    finish_reason: Callable[[str], str] = lambda prompt: "stop"
    fail_first: int = 0
    """Answer this many requests with HTTP 503 first (to exercise retries)."""
    reject: Callable[[str], bool] = lambda prompt: False
    """Answer HTTP 400 to prompts for which this is true (a failure retries cannot fix)."""
    requests: list[dict] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def create_app(state: FakeServerState) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        prompt = "\n".join(m["content"] for m in body["messages"])
        return await _respond(state, body, prompt, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        return await _respond(state, body, body["prompt"], chat=False)

    return app


async def _respond(state: FakeServerState, body: dict, prompt: str, chat: bool):
    import asyncio

    with state.lock:
        state.requests.append(body)
        if state.fail_first > 0:
            state.fail_first -= 1
            return JSONResponse({"error": {"message": "busy", "type": "x"}}, status_code=503)
        if state.reject(prompt):
            return JSONResponse({"error": {"message": "rejected", "type": "x"}}, status_code=400)
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
    try:
        if state.delay_s:
            await asyncio.sleep(state.delay_s)  # simulated decode time, not synchronisation
        return _build_response(state, body, prompt, chat)
    finally:
        with state.lock:
            state.in_flight -= 1


def _build_response(state: FakeServerState, body: dict, prompt: str, chat: bool):
    answer = state.answer(prompt)
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 16
    tokens = split_tokens(answer)[:max_tokens]
    finish = state.finish_reason(prompt)
    usage = {
        "prompt_tokens": len(split_tokens(prompt)),
        "completion_tokens": len(tokens),
        "total_tokens": len(split_tokens(prompt)) + len(tokens),
    }
    if body.get("stream"):
        return StreamingResponse(
            _stream(tokens, finish, usage, chat), media_type="text/event-stream"
        )
    choice: dict = {"index": 0, "finish_reason": finish}
    if chat:
        choice["message"] = {"role": "assistant", "content": "".join(tokens)}
    else:
        text = "".join(tokens)
        if body.get("echo"):
            text = prompt + text
        choice["text"] = text
        if body.get("logprobs") is not None:
            choice["logprobs"] = _logprobs(prompt if body.get("echo") else "", tokens)
    response = {
        "id": "cmpl-fake",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [choice],
        "usage": usage,
    }
    if "rag" in body:
        response["citations"] = [
            {"source": "paris.md", "chunk_id": "paris.md#0", "score": 0.9, "text": "Paris..."}
        ]
    return response


def _logprobs(prompt: str, generated: list[str]) -> dict:
    tokens = split_tokens(prompt) + generated
    offsets, position = [], 0
    for token in tokens:
        offsets.append(position)
        position += len(token)
    logprobs = [token_logprob(t) for t in tokens]
    if prompt:
        logprobs[0] = None
    return {
        "tokens": tokens,
        "token_logprobs": logprobs,
        "top_logprobs": [
            None if lp is None else {t: lp} for t, lp in zip(tokens, logprobs, strict=False)
        ],
        "text_offset": offsets,
    }


def _stream(tokens: list[str], finish: str, usage: dict, chat: bool) -> Iterator[str]:
    def chunk(choices: list, **extra) -> str:
        return f"data: {json.dumps({'id': 'x', 'choices': choices, **extra})}\n\n"

    if chat:
        yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}])
    for i, token in enumerate(tokens):
        last = i == len(tokens) - 1
        choice = {"index": 0, "delta": {"content": token}} if chat else {"index": 0, "text": token}
        choice["finish_reason"] = finish if last else None
        yield chunk([choice])
    yield chunk([], usage=usage)
    yield "data: [DONE]\n\n"


@dataclass
class RunningServer:
    base_url: str
    state: FakeServerState


@contextmanager
def serve_fake(state: FakeServerState | None = None) -> Iterator[RunningServer]:
    """Run the fake app on a free port in a daemon thread for the duration of the block."""
    state = state or FakeServerState()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(state), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:  # polls a readiness flag; fails loudly if it never comes up
        if time.monotonic() > deadline:
            raise RuntimeError("fake server did not start")
        time.sleep(0.005)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", state)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
