"""The engine side of what chat and text completions share: context-length checks and running
the engine for one or more prompts, either to the end or as a merged stream. The per-choice
pipeline around it (safety, usage, the request log) is ``pipeline.py``."""

import asyncio
from collections.abc import AsyncIterator

from llmloop.serve.engine_api import (
    Engine,
    EngineOutput,
    EngineOverloadedError,
    EngineRequestError,
    SamplingOptions,
)
from llmloop.serve.errors import BadRequestError, OverloadedError


def resolve_max_tokens(
    requested: int | None, num_prompt_tokens: int, max_model_len: int, param: str
) -> int:
    """The output budget: what was asked for, or the rest of the context; 400 if it cannot fit."""
    room = max_model_len - num_prompt_tokens
    if room < 1:
        raise BadRequestError(
            f"This model's maximum context length is {max_model_len} tokens. However, your prompt "
            f"has {num_prompt_tokens} tokens, which leaves no room for output. Shorten the prompt.",
            param="messages" if param != "max_tokens" else "prompt",
            code="context_length_exceeded",
        )
    if requested is None:
        return room
    if requested > room:
        raise BadRequestError(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{num_prompt_tokens + requested} tokens ({num_prompt_tokens} in the prompt, {requested} "
            f"for the completion). Reduce {param} to at most {room} or shorten the prompt.",
            param=param,
            code="context_length_exceeded",
        )
    return requested


async def generate_all(
    engine: Engine,
    prompts: list[list[int]],
    options: SamplingOptions,
    request_id: str,
    lora: str | None,
) -> list[EngineOutput]:
    """The final output of every prompt (non-streaming requests)."""
    finals: list[EngineOutput | None] = [None] * len(prompts)
    async for i, output in generate_stream(engine, prompts, options, request_id, lora):
        finals[i] = output
    return finals  # type: ignore[return-value]


async def generate_stream(
    engine: Engine,
    prompts: list[list[int]],
    options: SamplingOptions,
    request_id: str,
    lora: str | None,
) -> AsyncIterator[tuple[int, EngineOutput]]:
    """(prompt index, output) as the engine produces them, all prompts interleaved.

    Engine errors become API errors here; closing this iterator aborts every engine request."""
    if len(prompts) == 1:
        iterators = [engine.generate(prompts[0], options, request_id, lora)]
    else:
        iterators = [
            engine.generate(p, options, f"{request_id}-{i}", lora) for i, p in enumerate(prompts)
        ]
    try:
        async for item in _merge(iterators):
            yield item
    except EngineOverloadedError as e:
        raise OverloadedError(
            f"the server is at capacity ({e}); retry later",
            code="server_overloaded",
            headers={"Retry-After": "1"},
        ) from e
    except EngineRequestError as e:
        raise BadRequestError(str(e)) from e


async def _merge(
    iterators: list[AsyncIterator[EngineOutput]],
) -> AsyncIterator[tuple[int, EngineOutput]]:
    if len(iterators) == 1:
        async for output in iterators[0]:
            yield 0, output
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def drain(i: int, iterator: AsyncIterator[EngineOutput]) -> None:
        try:
            async for output in iterator:
                await queue.put((i, output))
        except Exception as e:
            await queue.put(e)
        finally:
            await queue.put(done)

    tasks = [asyncio.create_task(drain(i, it)) for i, it in enumerate(iterators)]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()  # cancelling a drain closes its engine iterator, which aborts the request
        await asyncio.gather(*tasks, return_exceptions=True)
