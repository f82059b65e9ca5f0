"""The engine side of what chat and text completions share: context-length checks and running
the engine for one or more prompts, either to the end or as a merged stream. The per-choice
pipeline around it (safety, usage, the request log) is ``pipeline.py``."""

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from fastapi import Request

from llmloop.serve.admission import Admission
from llmloop.serve.engine_api import (
    Engine,
    EngineOutput,
    EngineOverloadedError,
    EngineRequestError,
    SamplingOptions,
)
from llmloop.serve.errors import BadRequestError, OverloadedError

T = TypeVar("T")


async def off_loop(request: Request, fn: Callable[..., T], *args) -> T:
    """``fn(*args)`` on the tokenizer thread. Templating and tokenizing a long prompt take
    seconds of CPU; on the event loop they would stall every other request, /health included."""
    loop = asyncio.get_running_loop()
    executor = request.app.state.tokenizer_executor
    return await loop.run_in_executor(executor, functools.partial(fn, *args))


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


def check_token_ids(options: SamplingOptions, vocab_size: int) -> None:
    """400 for token ids the model does not have (vLLM would refuse some only once queued)."""
    given = {
        "logit_bias": options.logit_bias.keys(),
        "allowed_token_ids": options.allowed_token_ids or (),
        "stop_token_ids": options.stop_token_ids,
    }
    for param, token_ids in given.items():
        outside = [t for t in token_ids if t >= vocab_size]
        if outside:
            raise BadRequestError(
                f"{param}: token ids must be in the vocabulary, [0, {vocab_size}); got "
                f"{outside[:5]}",
                param=param,
            )


async def generate_all(
    engine: Engine,
    prompts: list[list[int]],
    options: SamplingOptions,
    request_id: str,
    lora: str | None,
    admission: Admission | None = None,
) -> list[EngineOutput]:
    """The final output of every prompt (non-streaming requests)."""
    finals: list[EngineOutput | None] = [None] * len(prompts)
    outputs = generate_stream(engine, prompts, options, request_id, lora, admission)
    async for i, output in outputs:
        finals[i] = output
    return finals  # type: ignore[return-value]


async def generate_stream(
    engine: Engine,
    prompts: list[list[int]],
    options: SamplingOptions,
    request_id: str,
    lora: str | None,
    admission: Admission | None = None,
) -> AsyncIterator[tuple[int, EngineOutput]]:
    """(prompt index, output) as the engine produces them, all prompts interleaved.

    Engine errors become API errors here; closing this iterator aborts every engine request, as
    does a request that ``admission`` finds without a slot in the engine past its bound."""
    if len(prompts) == 1:
        iterators = [engine.generate(prompts[0], options, request_id, lora)]
    else:
        iterators = [
            engine.generate(p, options, f"{request_id}-{i}", lora) for i, p in enumerate(prompts)
        ]
    if admission is not None:
        iterators = [_admitted(admission, it, options.n, options.priority) for it in iterators]
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


async def _admitted(
    admission: Admission, outputs: AsyncIterator[EngineOutput], num_seqs: int, priority: int
) -> AsyncIterator[EngineOutput]:
    """``outputs``; aborted with a 503 if they find no slot in the running batch, nor produce
    anything, within ``admission.max_queue_time_s``."""
    ticket = admission.enter(num_seqs, priority)
    started = asyncio.ensure_future(admission.until_started(ticket))
    waiting = True

    def stop_the_clock(_) -> None:
        if waiting:
            deadline.reschedule(None)

    # A batch line has no deadline: it waits behind interactive requests for as long as it takes.
    timeout_s = admission.max_queue_time_s if priority == 0 else None
    try:
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                started.add_done_callback(stop_the_clock)
                first = await anext(outputs, None)  # cancelled at the deadline: aborts it
        except TimeoutError:
            raise admission.timed_out() from None
        finally:
            waiting = False
        if first is None:
            return
        yield first
        async for output in outputs:
            yield output
    finally:
        started.cancel()
        admission.leave(num_seqs, priority)
        await outputs.aclose()


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
