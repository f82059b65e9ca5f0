"""The gate that lets prompt-logprob requests run alone in the engine."""

import asyncio

from llmloop.serve.engine_gate import EngineGate


def test_exclusive_waits_for_shared_and_blocks_new_shared():
    async def scenario() -> list[str]:
        gate, events = EngineGate(), []
        first_in, release_first = asyncio.Event(), asyncio.Event()

        async def shared(name: str, hold: asyncio.Event | None = None):
            async with gate.shared():
                events.append(f"{name} in")
                if hold is not None:
                    first_in.set()
                    await hold.wait()
                events.append(f"{name} out")

        async def exclusive():
            async with gate.exclusive():
                events.append("exclusive in")
                await asyncio.sleep(0)
                events.append("exclusive out")

        first = asyncio.create_task(shared("a", release_first))
        await first_in.wait()
        excl = asyncio.create_task(exclusive())
        await asyncio.sleep(0)
        late = asyncio.create_task(shared("b"))  # arrives while the exclusive one waits
        await asyncio.sleep(0)
        release_first.set()
        await asyncio.gather(first, excl, late)
        return events

    assert asyncio.run(scenario()) == [
        "a in",
        "a out",
        "exclusive in",
        "exclusive out",
        "b in",
        "b out",
    ]


def test_shared_requests_run_together():
    async def scenario() -> int:
        gate, inside, most = EngineGate(), 0, 0

        async def shared():
            nonlocal inside, most
            async with gate.shared():
                inside += 1
                most = max(most, inside)
                await asyncio.sleep(0.01)
                inside -= 1

        await asyncio.gather(*(shared() for _ in range(5)))
        return most

    assert asyncio.run(scenario()) == 5
