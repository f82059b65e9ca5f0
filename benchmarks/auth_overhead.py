"""What scoped keys and rate limits cost per request.

1. Per request, in process: ``authenticate`` (bearer → sha256 → keyring lookup) + ``admit`` +
   ``release`` of the rate limiter, for a key with rpm/tpm/concurrency limits. The keyring is
   filled from the log database (SQLite, or ``--db postgresql://...``) with ``--num-keys`` keys.
2. Through the whole app at concurrency 16 (the fake engine from the tests, so the server's own
   work is all there is): E2E p50 with keys and limits against the same server without keys.
   The real engine's E2E p50 at concurrency 16 is ~10 s on the default model (README), so this
   difference is an upper bound on the share auth takes there.

Run: ``.venv/bin/python benchmarks/auth_overhead.py [--db postgresql://...]``
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' fake engine

from llmloop.serve.app import create_app
from llmloop.serve.auth.deps import authenticate
from llmloop.serve.auth.keyring import KeyRing
from llmloop.serve.auth.keys import KeyLimits, KeyStore
from llmloop.serve.auth.ratelimit import RateLimiter
from llmloop.serve.config import ServerConfig
from tests.serve.fakes import FakeEngine

BIG = KeyLimits(rpm=10**9, tpm=2 * 10**9, max_concurrent=10**6)
CHAT = {
    "model": "fake-model",
    "messages": [{"role": "user", "content": "hi there"}],
    "max_tokens": 8,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", help="log database URL (default: a fresh SQLite file)")
    parser.add_argument("--num-keys", type=int, default=1000)
    parser.add_argument("--num-requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    db_url = args.db or f"sqlite:///{tempfile.mkdtemp()}/bench.db"

    store = KeyStore(db_url)
    secrets = [
        store.create(f"bench-{time.time_ns()}-{i}", ["infer"], limits=BIG)[1]
        for i in range(args.num_keys)
    ]
    ring = KeyRing(db_url=db_url)
    start = time.perf_counter()
    ring.refresh()
    refresh_ms = (time.perf_counter() - start) * 1e3
    per_request_us = _in_process(ring, secrets, args.num_requests)

    plain, keyed = (
        asyncio.run(_through_the_app(db_url, header, args.num_requests, args.concurrency))
        for header in (None, {"Authorization": f"Bearer {secrets[0]}"})
    )
    backend = db_url.split(":")[0]
    print(f"\nauth + rate limits, {backend}, {args.num_keys} keys in the keyring\n")
    print("| measure | value |\n|---|---|")
    print(f"| keyring refresh (every 2 s, off the request path) | {refresh_ms:.1f} ms |")
    print(f"| authenticate + admit + release, per request | {per_request_us:.1f} µs |")
    print(f"| app E2E p50, no keys (c={args.concurrency}) | {plain * 1e3:.2f} ms |")
    print(f"| app E2E p50, key + limits (c={args.concurrency}) | {keyed * 1e3:.2f} ms |")
    print(f"| difference per request | {(keyed - plain) * 1e3:+.2f} ms |")
    store.close()
    ring.close()


class _Request:
    """What ``authenticate`` reads from a request."""

    def __init__(self, ring: KeyRing, secret: str):
        self.app = type("App", (), {"state": type("State", (), {"keyring": ring})})
        self.headers = {"authorization": f"Bearer {secret}"}
        self.cookies = {}
        self.state = type("State", (), {})()


def _in_process(ring: KeyRing, secrets: list[str], num_requests: int) -> float:
    limiter = RateLimiter()
    requests = [_Request(ring, secrets[i % len(secrets)]) for i in range(num_requests)]
    start = time.perf_counter()
    for request in requests:
        key = authenticate(request)
        limiter.admit(key)
        limiter.release(key, num_tokens=100)
    return (time.perf_counter() - start) / num_requests * 1e6


async def _through_the_app(db_url: str, headers, num_requests: int, concurrency: int) -> float:
    config = ServerConfig(db_url=db_url, safety=False, store_requests=False)

    async def engine_factory():
        return FakeEngine()

    app = create_app(config, engine_factory)
    if headers is None:  # the same server, without keys
        app.state.keyring = KeyRing()
        app.state.owns_keyring = False
    transport = httpx.ASGITransport(app=app)
    latencies: list[float] = []
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench") as client,
    ):
        while (await client.get("/health")).status_code != 200:
            await asyncio.sleep(0.01)
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                start = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
                latencies.append(time.perf_counter() - start)
                response.raise_for_status()

        await asyncio.gather(*(one() for _ in range(num_requests)))
    return statistics.median(latencies)


if __name__ == "__main__":
    main()
