"""Server-sent events and client-disconnect handling."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from llmloop.serve.errors import APIError, InternalServerError

logger = logging.getLogger(__name__)
T = TypeVar("T")

DONE = "data: [DONE]\n\n"


def sse(event: BaseModel | dict) -> str:
    payload = (
        event.model_dump_json(exclude_unset=False)
        if isinstance(event, BaseModel)
        else json.dumps(event)
    )
    return f"data: {payload}\n\n"


def sse_response(events: AsyncIterator[str]) -> StreamingResponse:
    """Stream ``events``; an error after the first byte is sent as an SSE error event.

    A client that disconnects cancels ``events`` (Starlette cancels the response task), which
    closes the engine iterator and aborts the engine request."""

    async def guarded() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield event
        except APIError as e:
            yield sse(e.to_dict())
            yield DONE
        except Exception:
            logger.exception("stream failed")
            yield sse(InternalServerError("internal error while streaming").to_dict())
            yield DONE

    return StreamingResponse(
        guarded(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run ``work`` but cancel it (aborting its engine requests) if the client goes away first."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                task.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        return await task
    finally:
        watcher.cancel()
