"""What the server's own /metrics series cost per request (target: <= 1% of E2E p50 at c=16).

The HTTP middleware (``llmloop:http_requests_total``, ``llmloop:http_request_duration_seconds``)
is the only new work on every request; the rest is counted off the hot path (429s, feedback,
safety batches, retrieval) or read at scrape time (the request log). So each run compares the
same server with and without ``--no-http-metrics``, scraping /metrics every
``--scrape-interval`` seconds in both, as Prometheus would.

1. Real engine (default): ``llmloop serve`` started once per variant and round, forward and
   backward in turn (A B B A ...), benchmarked with ``llmloop bench serve`` (vLLM's definitions);
   prints the mean E2E p50 of each variant, their ratio and the server process's CPU seconds.
2. ``--fake-engine``: the app in process on the tests' fake engine, where the server's own work is
   all there is, so the difference is an upper bound on the share in (1). Also the middleware's
   cost per request, in µs, measured directly. A quick smoke run: ``--fake-engine
   --num-requests 200 --rounds 1``.

  .venv/bin/python benchmarks/metrics_overhead.py --rounds 2        # real engine, ~minutes
  .venv/bin/python benchmarks/metrics_overhead.py --fake-engine     # seconds, no model
"""

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' fake engine
sys.path.insert(0, str(Path(__file__).resolve().parent))  # server_process.py

TARGET = 0.01
"""E2E p50 with the HTTP metrics / without - 1."""
VARIANTS = {"without": ["--no-http-metrics"], "with": []}
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi there"}]}


def main() -> None:
    args = _parse_args()
    runs = [v for r in range(args.rounds) for v in (list(VARIANTS)[:: 1 if r % 2 == 0 else -1])]
    bench = _fake_engine_run if args.fake_engine else _real_engine_run
    p50s: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for name in runs:
        p50_s, cpu_s = bench(name, args)
        p50s[name].append(p50_s)
        cpu[name].append(cpu_s)
        print(f"[{name} http metrics] E2E p50 {p50_s * 1e3:.2f} ms", flush=True)
    without, with_ = (statistics.mean(p50s[n]) for n in ("without", "with"))
    engine = "fake engine, in process" if args.fake_engine else f"model {args.model}"
    print(f"\n/metrics overhead, {engine}, concurrency {args.concurrency}, {args.rounds} rounds\n")
    print("| measure | value |\n|---|---|")
    if args.fake_engine:
        print(f"| HTTP metrics middleware, per request | {_middleware_us():.1f} µs |")
    print(f"| E2E p50 without HTTP metrics | {without * 1e3:.2f} ms |")
    print(f"| E2E p50 with HTTP metrics | {with_ * 1e3:.2f} ms |")
    overhead = with_ / without - 1
    verdict = "PASS" if overhead <= TARGET else "FAIL"
    print(f"| overhead | {overhead:+.2%} (target <= {TARGET:.0%}: {verdict}) |")
    if not args.fake_engine:
        cpu_without, cpu_with = (statistics.mean(cpu[n]) for n in ("without", "with"))
        print(f"| server CPU without / with | {cpu_without:.1f} s / {cpu_with:.1f} s |")


def _real_engine_run(name: str, args: argparse.Namespace) -> tuple[float, float]:
    """(E2E p50 in seconds, server process CPU seconds) of one server start."""
    from server_process import free_port, running_server

    from llmloop.evals.bench import BenchConfig, run_benchmark
    from llmloop.models import resolve_model

    port = free_port()
    command = [
        sys.executable, "-m", "llmloop.cli", "serve", "--model", str(resolve_model(args.model)),
        "--public-metrics", "--port", str(port), *args.server_args.split(), *VARIANTS[name],
    ]  # fmt: skip
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "4")}
    with (
        tempfile.TemporaryDirectory(prefix="llmloop-bench-home-") as home,
        running_server(
            name, command, port, args.startup_timeout, env | {"LLMLOOP_HOME": home}
        ) as server,
        _scraping(f"{server.base_url}/metrics", args.scrape_interval),
    ):
        model = httpx.get(f"{server.base_url}/v1/models").json()["data"][0]["id"]
        config = BenchConfig(
            server.base_url,
            model,
            concurrency=args.concurrency,
            num_requests=args.num_requests,
            max_tokens=args.max_tokens,
            prompt_len=args.prompt_len,
            ignore_eos=True,
            seed=args.seed,
        )
        before = server.cpu_seconds()[0]
        result = run_benchmark(config, show_progress=True)
        cpu_s = server.cpu_seconds()[0] - before
    return result.e2el.percentiles_ms["p50"] / 1e3, cpu_s


@contextlib.contextmanager
def _scraping(url: str, interval_s: float):
    """GET ``url`` every ``interval_s`` in a thread until the block ends, as Prometheus would."""
    stop = threading.Event()

    def scrape() -> None:
        while not stop.wait(interval_s):
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(url, timeout=10).raise_for_status()

    thread = threading.Thread(target=scrape, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _fake_engine_run(name: str, args: argparse.Namespace) -> tuple[float, float]:
    return asyncio.run(_through_the_app(name == "with", args)), 0.0


async def _through_the_app(http_metrics: bool, args: argparse.Namespace) -> float:
    from llmloop.serve.app import create_app
    from llmloop.serve.config import ServerConfig
    from tests.serve.fakes import FakeEngine

    db_url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    config = ServerConfig(db_url=db_url, safety=False, http_metrics=http_metrics)

    async def engine_factory():
        return FakeEngine()

    app = create_app(config, engine_factory, batch_worker=False)
    transport = httpx.ASGITransport(app=app)
    latencies: list[float] = []
    body = CHAT | {"max_tokens": args.max_tokens}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench") as client,
    ):
        while (await client.get("/health")).status_code != 200:
            await asyncio.sleep(0.01)
        gate = asyncio.Semaphore(args.concurrency)

        async def one() -> None:
            async with gate:
                start = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body)
                latencies.append(time.perf_counter() - start)
                response.raise_for_status()

        async def scrape() -> None:
            while True:
                await asyncio.sleep(args.scrape_interval)
                (await client.get("/metrics")).raise_for_status()

        scraper = asyncio.create_task(scrape())
        await asyncio.gather(*(one() for _ in range(args.num_requests)))
        scraper.cancel()
    return statistics.median(latencies)


def _middleware_us(num_requests: int = 20_000) -> float:
    """The middleware around an app that answers at once: its own cost per request, in µs."""
    from llmloop.serve.http_metrics import HttpMetricsMiddleware
    from llmloop.serve.metrics import ServerMetrics

    async def app(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message) -> None:
        return None

    class Route:
        path = "/v1/chat/completions"

    async def run(handler) -> float:
        start = time.perf_counter()
        for _ in range(num_requests):
            await handler({"type": "http", "route": Route}, None, send)
        return time.perf_counter() - start

    with_ = asyncio.run(run(HttpMetricsMiddleware(app, ServerMetrics().http)))
    without = asyncio.run(run(app))
    return (with_ - without) / num_requests * 1e6


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fake-engine", action="store_true", help="in process, no model")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model name or dir")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant")
    parser.add_argument("--num-requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128, help="output tokens per request")
    parser.add_argument("--prompt-len", type=int, default=128, help="words per synthetic prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scrape-interval", type=float, default=5.0, help="seconds")
    parser.add_argument(
        "--server-args",
        default="--no-safety",
        help="more `llmloop serve` flags for both variants (one string)",
    )
    parser.add_argument("--startup-timeout", type=float, default=600, help="seconds per server")
    return parser.parse_args()


if __name__ == "__main__":
    main()
