"""Interactive latency while a batch runs: does batch work stay below interactive traffic?

One real ``llmloop serve`` (default model, ``--no-safety --no-store``). Interactive load is
``--concurrency`` clients (4) each sending streamed chat requests back to back; its time to first
token (TTFT) is measured

  1. alone, with no batch (after a warm-up);
  2. twice while a ``--batch-lines``-line batch (2,000 by default) runs on the same server,
     submitted through the Files + Batches API;
  3. alone again, once the batch is cancelled;

the p50 of each kind pools its phases, so drift on a shared machine hits both sides. The batch's
progress is read from ``/v1/batches/{id}`` around each phase of 2, and over a window of the same
length between them with no interactive load: the batch's lines/s with interactive traffic
against its lines/s without. Targets (issue #14): interactive TTFT p50 with the batch at most
1.3x the p50 alone, while the batch keeps using the spare capacity. Every request generates
exactly ``max_tokens`` tokens (``ignore_eos``).

  .venv/bin/python benchmarks/batch_priority.py
  .venv/bin/python benchmarks/batch_priority.py --batch-busy-concurrency 2   # a server flag
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

import httpx
from cpu_defaults import describe_host  # benchmarks/cpu_defaults.py
from server_process import free_port, running_server  # benchmarks/server_process.py

from llmloop.models import resolve_model

TARGET_TTFT_RATIO = 1.3
TOPICS = (
    "rivers", "volcanoes", "bridges", "owls", "glaciers", "deserts", "comets", "tea",
    "bicycles", "lighthouses", "coral reefs", "violins", "maps", "bees", "clocks", "salt",
)  # fmt: skip


@dataclass
class Phase:
    name: str
    ttfts_s: list[float]
    duration_s: float
    errors: list[str]
    batch_done_before: int | None = None
    batch_done_after: int | None = None

    @property
    def batch_lines_per_s(self) -> float | None:
        if self.batch_done_before is None or self.batch_done_after is None:
            return None
        return (self.batch_done_after - self.batch_done_before) / self.duration_s


def chat_body(model: str, i: int, max_tokens: int, stream: bool) -> dict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"Tell me three facts about {TOPICS[i % 16]}."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }


async def interactive(
    client: httpx.AsyncClient, model: str, args: argparse.Namespace, name: str
) -> Phase:
    """``--interactive-requests`` streamed chats, ``--concurrency`` at a time; TTFT of each."""
    queue = list(range(args.interactive_requests))
    ttfts, errors = [], []

    async def worker() -> None:
        while queue:
            i = queue.pop()
            start = time.perf_counter()
            body = chat_body(model, i, args.max_tokens, stream=True)
            try:
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    if response.status_code != 200:
                        errors.append(f"{response.status_code}: {(await response.aread())[:200]!r}")
                        continue
                    first = None
                    async for line in response.aiter_lines():
                        if first is None and _has_content(line):
                            first = time.perf_counter() - start
                    ttfts.append(first if first is not None else time.perf_counter() - start)
            except httpx.HTTPError as e:
                errors.append(repr(e))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return Phase(name, ttfts, time.perf_counter() - start, errors)


def _has_content(line: str) -> bool:
    """Whether an SSE line carries generated text (the first chunk has only the role)."""
    if not line.startswith("data: {"):
        return False
    choices = json.loads(line[6:]).get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


async def submit_batch(client: httpx.AsyncClient, model: str, args: argparse.Namespace) -> str:
    lines = [
        json.dumps(
            {
                "custom_id": f"line-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": chat_body(model, i, args.batch_max_tokens, stream=False),
            }
        )
        for i in range(args.batch_lines)
    ]
    upload = await client.post(
        "/v1/files",
        files={"file": ("batch.jsonl", "\n".join(lines).encode())},
        data={"purpose": "batch"},
    )
    upload.raise_for_status()
    created = await client.post(
        "/v1/batches",
        json={
            "input_file_id": upload.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    created.raise_for_status()
    return created.json()["id"]


async def batch_done(client: httpx.AsyncClient, batch_id: str) -> tuple[str, int]:
    batch = (await client.get(f"/v1/batches/{batch_id}")).json()
    counts = batch["request_counts"]
    return batch["status"], counts["completed"] + counts["failed"]


async def bench(base_url: str, model: str, args: argparse.Namespace) -> list[Phase]:
    """alone, with the batch, batch alone, with the batch, alone (after cancelling it): each
    side measured before and after the other, so drift on a shared machine cancels out."""
    limits = httpx.Limits(max_connections=args.concurrency + 4)
    async with httpx.AsyncClient(base_url=base_url, timeout=3600, limits=limits) as client:
        warm = argparse.Namespace(**vars(args) | {"interactive_requests": args.concurrency})
        await interactive(client, model, warm, "warm-up")
        phases = [await interactive(client, model, args, "interactive alone")]
        _report(phases[-1])

        batch_id = await submit_batch(client, model, args)
        while True:  # until lines flow: the batch is validated and the engine is busy with it
            status, done = await batch_done(client, batch_id)
            if status not in ("validating", "in_progress") or done > 0:
                break
            await asyncio.sleep(0.5)
        if status != "in_progress":
            raise SystemExit(f"the batch is {status}, not running")
        for _ in range(2):
            await asyncio.sleep(args.settle_s)  # the batch takes the whole engine back
            _, before = await batch_done(client, batch_id)
            during = await interactive(client, model, args, "interactive with the batch")
            _, after = await batch_done(client, batch_id)
            during.batch_done_before, during.batch_done_after = before, after
            phases.append(during)
            _report(during)
            if len(phases) == 2:  # the batch alone, for as long as the interactive phase took
                await asyncio.sleep(args.settle_s)
                _, quiet_before = await batch_done(client, batch_id)
                await asyncio.sleep(during.duration_s)
                status, quiet_after = await batch_done(client, batch_id)
                phases.append(
                    Phase("batch alone", [], during.duration_s, [], quiet_before, quiet_after)
                )
                _report(phases[-1])
        await client.post(f"/v1/batches/{batch_id}/cancel")
        while (await batch_done(client, batch_id))[0] != "cancelled":
            await asyncio.sleep(0.5)
        await asyncio.sleep(args.settle_s)
        phases.append(await interactive(client, model, args, "interactive alone"))
        _report(phases[-1])
        return phases


def _report(phase: Phase) -> None:
    ttft = f"TTFT p50 {_p(phase.ttfts_s, 50) * 1e3:.0f} ms" if phase.ttfts_s else ""
    rate = phase.batch_lines_per_s
    print(f"[{phase.name}] {ttft} {f'{rate:.2f} batch lines/s' if rate else ''}", flush=True)


def _p(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def format_table(phases: list[Phase], args: argparse.Namespace) -> str:
    lines = [
        f"interactive: {args.interactive_requests} streamed chats per phase, concurrency "
        f"{args.concurrency}, max_tokens {args.max_tokens}; batch: {args.batch_lines} chat lines, "
        f"max_tokens {args.batch_max_tokens}; all ignore_eos, temperature 0",
        f"{'phase':<30}{'TTFT p50 ms':>13}{'TTFT p99 ms':>13}{'seconds':>9}{'batch lines/s':>15}",
    ]
    for phase in phases:
        rate = phase.batch_lines_per_s
        p50 = f"{_p(phase.ttfts_s, 50) * 1e3:.0f}" if phase.ttfts_s else "-"
        p99 = f"{_p(phase.ttfts_s, 99) * 1e3:.0f}" if phase.ttfts_s else "-"
        lines.append(
            f"{phase.name:<30}{p50:>13}{p99:>13}{phase.duration_s:>9.1f}"
            + (f"{rate:>15.2f}" if rate is not None else f"{'-':>15}")
        )
    alone = [t for p in phases if p.name == "interactive alone" for t in p.ttfts_s]
    during = [t for p in phases if p.name == "interactive with the batch" for t in p.ttfts_s]
    ratio = _p(during, 50) / _p(alone, 50)
    verdict = "PASS" if ratio <= TARGET_TTFT_RATIO else "FAIL"
    lines.append("")
    lines.append(
        f"{'TTFT p50, all phases of each kind':<40}alone {_p(alone, 50) * 1e3:.0f} ms, "
        f"with the batch {_p(during, 50) * 1e3:.0f} ms"
    )
    lines.append(
        f"{'TTFT p50 with batch / alone':<40}{ratio:.2f}   target <= {TARGET_TTFT_RATIO}   {verdict}"
    )
    lines.append(f"{'TTFT p99 with batch / alone':<40}{_p(during, 99) / _p(alone, 99):.2f}")
    rates = [p.batch_lines_per_s for p in phases if p.name == "interactive with the batch"]
    quiet = next(p.batch_lines_per_s for p in phases if p.name == "batch alone")
    if quiet:
        share = statistics.mean(r for r in rates if r is not None) / quiet
        lines.append(f"{'batch lines/s with interactive / alone':<40}{share:.2f}")
    errors = [e for p in phases for e in p.errors]
    if errors:
        lines.append(f"{len(errors)} interactive errors; first: {errors[0]}")
    return "\n".join(lines)


def main() -> int:
    args = _parse_args()
    print(describe_host(), flush=True)
    load_before = os.getloadavg()
    if args.base_url:
        base_url = args.base_url.rstrip("/").removesuffix("/v1")
        model = httpx.get(f"{base_url}/v1/models").json()["data"][0]["id"]
        phases = asyncio.run(bench(base_url, model, args))
    else:
        model_dir = resolve_model(args.model)
        port = free_port()
        command = [
            sys.executable, "-m", "llmloop.cli", "serve", "--model", str(model_dir),
            "--no-safety", "--no-store", "--port", str(port),
            "--max-num-seqs", str(args.max_num_seqs),
        ]  # fmt: skip
        if args.batch_concurrency:
            command += ["--batch-concurrency", str(args.batch_concurrency)]
        if args.batch_busy_concurrency:
            command += ["--batch-busy-concurrency", str(args.batch_busy_concurrency)]
        with tempfile.TemporaryDirectory(prefix="llmloop-bench-home-") as home:
            env = {"LLMLOOP_HOME": home}
            with running_server("llmloop", command, port, args.startup_timeout, env) as server:
                model = httpx.get(f"{server.base_url}/v1/models").json()["data"][0]["id"]
                phases = asyncio.run(bench(server.base_url, model, args))
    load_after = os.getloadavg()
    print(format_table(phases, args))
    print(
        f"load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {', '.join(f'{x:.2f}' for x in load_after)}"
    )
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model name or dir")
    parser.add_argument("--concurrency", type=int, default=4, help="interactive clients")
    parser.add_argument(
        "--interactive-requests", type=int, default=48, help="interactive requests per phase"
    )
    parser.add_argument("--max-tokens", type=int, default=32, help="interactive output tokens")
    parser.add_argument("--batch-lines", type=int, default=2000, help="lines in the batch")
    parser.add_argument("--batch-max-tokens", type=int, default=32, help="batch output tokens")
    parser.add_argument("--max-num-seqs", type=int, default=32, help="the server's engine batch")
    parser.add_argument("--batch-concurrency", type=int, help="the server flag (default: its own)")
    parser.add_argument(
        "--batch-busy-concurrency", type=int, help="the server flag (default: its own)"
    )
    parser.add_argument(
        "--settle-s", type=float, default=5.0, help="seconds between a change and a measurement"
    )
    parser.add_argument("--startup-timeout", type=float, default=600, help="seconds")
    parser.add_argument("--base-url", help="benchmark this running server instead of starting one")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
