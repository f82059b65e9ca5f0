"""One batch line through the server's own app, in process: the same validation, engine, safety,
RAG, quotas and request log as the HTTP request it stands for, with no socket in between.

The line runs as the key that created its batch. That identity travels in the ASGI scope
(``BATCH_LINE_SCOPE``), which only this module sets: a request from the network is built by the
HTTP server and cannot carry it. Routes see it through ``batch_line_of``: authentication takes the
batch's key from it (``auth/deps.py``), rate limits charge the key's batch budget instead of its
interactive one, and the engine gets the line at ``BATCH_PRIORITY``.
"""

import json
import uuid
from dataclasses import dataclass

import httpx
from starlette.requests import HTTPConnection

from llmloop.serve.batch.protocol import BatchOutputLine, BatchResponse

BATCH_LINE_SCOPE = "llmloop.batch_line"
BATCH_PRIORITY = 1
"""vLLM's request priority for batch lines (lower runs first; interactive requests have 0)."""
_OWNER_HEADER = "x-llmloop-batch-owner"
"""Carries the owner from ``dispatch`` to ``_InProcess``; never reaches the app."""


@dataclass(frozen=True)
class LineOwner:
    batch_id: str
    api_key_id: str | None
    """The key that created the batch; None on a server without keys."""


def batch_line_of(connection: HTTPConnection) -> LineOwner | None:
    """The batch line a request is, or None for a request from the network."""
    return connection.scope.get(BATCH_LINE_SCOPE)


@dataclass(frozen=True)
class Answer:
    """What the app answered: the output line, and how to treat it."""

    line: BatchOutputLine
    retry_after_s: float | None
    """Set for a 429 or 503: the line should run again later."""
    usage: tuple[int, int]
    """(prompt tokens, completion tokens) of a success."""


class Dispatcher:
    def __init__(self, app):
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=_InProcess(app), raise_app_exceptions=False),
            base_url="http://batch.internal",
            timeout=None,  # the server's own bounds apply (queue time, max tokens)
        )

    async def dispatch(self, owner: LineOwner, custom_id: str, url: str, body: str) -> Answer:
        response = await self._client.post(
            url,
            content=body.encode(),
            headers={
                "content-type": "application/json",
                _OWNER_HEADER: json.dumps([owner.batch_id, owner.api_key_id]),
            },
        )
        try:
            answer = response.json()
        except ValueError:
            answer = {"error": {"message": response.text[:1000], "type": "server_error"}}
        if not isinstance(answer, dict):
            answer = {
                "error": {"message": "the endpoint answered a non-object", "type": "server_error"}
            }
        status = response.status_code
        request_id = answer.get("id") if 200 <= status < 300 else None
        line = BatchOutputLine(
            custom_id=custom_id,
            response=BatchResponse(
                status_code=status,
                request_id=str(request_id or f"req_{uuid.uuid4().hex}"),
                body=answer,
            ),
        )
        retry_after_s = None
        if status in (429, 503):
            retry_after_s = _seconds(response.headers.get("retry-after"))
        return Answer(line, retry_after_s, _usage(answer) if line.succeeded else (0, 0))

    async def aclose(self) -> None:
        await self._client.aclose()


class _InProcess:
    """The app, with the owner moved from our private header into the scope."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        headers = [(k, v) for k, v in scope["headers"] if k != _OWNER_HEADER.encode()]
        owner = dict(scope["headers"]).get(_OWNER_HEADER.encode())
        batch_id, api_key_id = json.loads(owner) if owner else (None, None)
        scope = {**scope, "headers": headers, BATCH_LINE_SCOPE: LineOwner(batch_id, api_key_id)}
        await self.app(scope, receive, send)


def _usage(answer: dict) -> tuple[int, int]:
    usage = answer.get("usage") or {}
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def _seconds(retry_after: str | None) -> float:
    try:
        return max(1.0, float(retry_after or 1))
    except ValueError:
        return 1.0
