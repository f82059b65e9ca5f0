"""MicroBatcher: concurrent callers share batches on one worker thread, off the event loop."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from llmloop.serve.batcher import MicroBatcher


class Recorder:
    """Doubles its inputs; records each batch and the thread it ran on."""

    def __init__(self, delay_s: float = 0.02):
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.delay_s = delay_s

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        threading.Event().wait(self.delay_s)  # the "model"
        return [2 * i for i in items]


def test_concurrent_callers_share_batches_and_get_their_own_results():
    fn = Recorder()

    async def main():
        with ThreadPoolExecutor(1, thread_name_prefix="test-batcher") as executor:
            batcher = MicroBatcher(fn, executor)
            return await asyncio.gather(*(batcher.submit([i, 100 + i]) for i in range(20)))

    results = asyncio.run(main())
    assert results == [[2 * i, 200 + 2 * i] for i in range(20)]
    assert len(fn.batches) < 20  # callers that arrived while a batch ran went in the next one
    assert sorted(x for batch in fn.batches for x in batch) == sorted(
        [i for i in range(20)] + [100 + i for i in range(20)]
    )
    assert all(name.startswith("test-batcher") for name in fn.threads) and len(fn.threads) == 1


def test_batches_are_capped_at_max_batch_size():
    fn = Recorder()

    async def main():
        batcher = MicroBatcher(fn, ThreadPoolExecutor(1), max_batch_size=4)
        await asyncio.gather(*(batcher.submit([i]) for i in range(10)))

    asyncio.run(main())
    assert max(len(batch) for batch in fn.batches) <= 4


def test_an_error_reaches_every_caller_of_its_batch_and_later_batches_still_run():
    calls = []

    def fn(items):
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("model failed")
        return items

    async def main():
        batcher = MicroBatcher(fn, ThreadPoolExecutor(1))
        first = await asyncio.gather(batcher.submit(["a"]), return_exceptions=True)
        second = await batcher.submit(["b"])
        return first, second

    first, second = asyncio.run(main())
    assert isinstance(first[0], RuntimeError) and second == ["b"]


def test_a_cancelled_caller_is_dropped_from_the_next_batch():
    fn = Recorder(delay_s=0.1)

    async def main():
        batcher = MicroBatcher(fn, ThreadPoolExecutor(1))
        running = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.sleep(0.02)  # batch [1] is running
        gone = asyncio.ensure_future(batcher.submit([2]))
        kept = asyncio.ensure_future(batcher.submit([3]))
        await asyncio.sleep(0)
        gone.cancel()
        return await running, await kept

    assert asyncio.run(main()) == ([2], [6])
    assert fn.batches == [[1], [3]]


@pytest.mark.parametrize("items", [[], [7]])
def test_a_lone_call_runs_at_once(items):
    fn = Recorder(delay_s=0)
    assert asyncio.run(MicroBatcher(fn, ThreadPoolExecutor(1)).submit(items)) == [
        2 * i for i in items
    ]


def test_batchers_sharing_a_one_thread_executor_never_run_at_once():
    running, overlaps = [0], []

    def fn(items):
        running[0] += 1
        overlaps.append(running[0])
        threading.Event().wait(0.01)
        running[0] -= 1
        return items

    async def main():
        with ThreadPoolExecutor(1) as executor:
            a, b = MicroBatcher(fn, executor), MicroBatcher(fn, executor)
            await asyncio.gather(*(m.submit([i]) for i in range(10) for m in (a, b)))

    asyncio.run(main())
    assert max(overlaps) == 1 and len(overlaps) >= 2


def test_a_caller_with_many_items_does_not_starve_a_single_item_caller():
    fn = Recorder(delay_s=0.01)

    async def main():
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(fn, executor, max_batch_size=4)
            many = asyncio.ensure_future(batcher.submit(list(range(100))))
            one = asyncio.ensure_future(batcher.submit([1000]))
            await asyncio.gather(many, one)

    asyncio.run(main())
    batch_of_one = next(i for i, batch in enumerate(fn.batches) if 1000 in batch)
    assert batch_of_one == 0  # callers take turns item by item, not in arrival order
    assert [len(b) for b in fn.batches] == [4] * 25 + [1]
