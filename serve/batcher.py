"""Micro-batching for CPU work shared by concurrent requests (the safety classifier).

Requests ``await submit(items)``; one worker thread runs the batch function over everything
submitted while the previous batch ran, so N streams waiting on a check cost one batched call,
not N calls on N threads, and the event loop never runs the model itself. No timer: a batch
starts as soon as the worker is free, so a lone request waits for nothing. Callers take
turns item by item within a batch, so one request with many texts (64 streamed choices, many
messages) delays a one-text request by at most one batch.
"""

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    def __init__(
        self,
        fn: Callable[[list[Item]], Sequence[Result]],
        executor: ThreadPoolExecutor,
        max_batch_size: int = 64,
        on_batch: Callable[[float], None] | None = None,
    ):
        """``executor``: where ``fn`` runs; batchers that share a one-thread executor never run
        two batches at once. ``on_batch``: called with each batch's seconds (metrics)."""
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.on_batch = on_batch
        self._executor = executor
        self._pending: deque[deque[tuple[Item, asyncio.Future]]] = deque()
        """One queue per waiting caller, in turn order."""
        self._worker: asyncio.Task | None = None

    @property
    def num_pending(self) -> int:
        """Items waiting for a batch (not those in the batch running now)."""
        return sum(len(caller) for caller in self._pending)

    async def submit(self, items: list[Item]) -> list[Result]:
        """``fn``'s results for ``items``, computed in a batch with other callers' items."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._pending.append(deque(zip(items, futures, strict=True)))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return list(await asyncio.gather(*futures))

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch = self._next_batch()
            if not batch:
                continue
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    self._executor, self.fn, [item for item, _ in batch]
                )
            except Exception as e:  # every caller of this batch sees the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            finally:
                if self.on_batch is not None:
                    self.on_batch(time.perf_counter() - start)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    def _next_batch(self) -> list[tuple[Item, asyncio.Future]]:
        """Up to ``max_batch_size`` items, one per caller in turn; cancelled ones dropped."""
        batch = []
        while self._pending and len(batch) < self.max_batch_size:
            caller = self._pending.popleft()
            item, future = caller.popleft()
            if not future.done():
                batch.append((item, future))
            if caller:
                self._pending.append(caller)
        return batch
