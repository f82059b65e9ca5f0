"""JSON-schema decoding against unconstrained decoding: throughput on one real ``llmloop serve``.

A structured-output request (``response_format={"type": "json_schema", ...}``) makes vLLM's
grammar backend (xgrammar) compute a token mask at every decoding step; this measures what that
costs at concurrency 16 on the default model. Both arms send the same chat prompts (a short
description of a person in a city), the same ``max_tokens`` and ``ignore_eos: true``, so every
request generates exactly ``max_tokens`` tokens; they differ only in the constrained arm's
``response_format``. The schema has no short upper bound on its last string, so the JSON is
usually still open when ``max_tokens`` is reached and the grammar constrains every token (the
table says for how many requests the JSON closed early: after the close, vLLM stops masking).

Order of work, all in ONE server process (``--no-safety --no-store``, the serving core):
  1. one request of each arm alone: "first request latency" (the constrained one compiles the
     grammar; later requests with the same schema hit vLLM's grammar cache);
  2. one untimed warm-up batch of each arm;
  3. ``--rounds`` rounds of both arms, forward then backward in turn (A B B A A B ...), each a
     batch of ``--num-requests`` requests at most ``--concurrency`` in flight.
It prints the median output tokens/s of each arm's batches, their ratio (target >= 0.8) and the
p50 end-to-end latency of all of an arm's requests, and the CPU seconds the server and its engine
processes spent per batch: on a shared machine throughput moves with the other load by more
than the mask costs, and CPU seconds far less.

  .venv/bin/python benchmarks/structured_outputs.py               # 32 requests x 4 rounds
  .venv/bin/python benchmarks/structured_outputs.py --rounds 1    # a quicker run
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

import httpx
from cpu_defaults import describe_host  # benchmarks/cpu_defaults.py
from server_process import free_port, running_server  # benchmarks/server_process.py

from llmloop.models import resolve_model

TARGET_RATIO = 0.8
CITIES = (
    "Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Toronto", "Krakow", "Osaka",
    "Cairo", "Dublin", "Seville", "Quito", "Perth", "Tbilisi", "Dakar", "Montreal",
    "Porto", "Bergen", "Mumbai", "Havana", "Zurich", "Manila", "Accra", "Glasgow",
    "Naples", "Tallinn", "Cusco", "Busan", "Tunis", "Denver", "Ghent", "Hobart",
)  # fmt: skip
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "city": {"type": "string", "maxLength": 40},
        "job": {"type": "string", "enum": ["teacher", "doctor", "engineer", "artist", "farmer"]},
        # long enough that max_tokens (64) usually ends inside it: every token is constrained;
        # within the server's compile-cost cap (docs/api.md: bounds add up to at most 1,024)
        "description": {"type": "string", "maxLength": 900},
    },
    "required": ["name", "age", "city", "job", "description"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "person", "schema": SCHEMA, "strict": True},
}
ARMS = {"unconstrained": None, "json_schema": RESPONSE_FORMAT}


@dataclass
class Batch:
    arm: str
    duration_s: float
    output_tokens: int
    latencies_s: list[float]
    closed_early: int
    """Requests whose JSON was complete before max_tokens (constrained arm only)."""
    errors: list[str] = field(default_factory=list)
    cpu_s: float | None = None
    """CPU seconds the server and its engine processes spent on the batch."""

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.duration_s


def prompts(num_requests: int) -> list[str]:
    return [
        f"Describe a person who lives in {CITIES[i % len(CITIES)]}: their name, age, city, job "
        "and a short description, as JSON."
        for i in range(num_requests)
    ]


def request_body(model: str, prompt: str, arm: str, max_tokens: int) -> dict:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,  # vLLM's extra: exactly max_tokens tokens in both arms
    }
    if ARMS[arm] is not None:
        body["response_format"] = ARMS[arm]
    return body


def json_closed(content: str) -> bool:
    """Whether ``content`` starts with a complete JSON value (the grammar had terminated)."""
    try:
        json.JSONDecoder().raw_decode(content.lstrip())
    except json.JSONDecodeError:
        return False
    return True


async def run_batch(
    client: httpx.AsyncClient, model: str, arm: str, texts: list[str], args: argparse.Namespace
) -> Batch:
    semaphore = asyncio.Semaphore(args.concurrency)

    async def one(prompt: str) -> tuple[float, int, bool, str | None]:
        async with semaphore:
            start = time.perf_counter()
            response = await client.post(
                "/v1/chat/completions", json=request_body(model, prompt, arm, args.max_tokens)
            )
            latency = time.perf_counter() - start
        if response.status_code != 200:
            return latency, 0, False, f"{response.status_code}: {response.text[:300]}"
        data = response.json()
        tokens = data["usage"]["completion_tokens"]
        content = data["choices"][0]["message"]["content"] or ""
        error = None if tokens == args.max_tokens else f"{tokens} tokens, not {args.max_tokens}"
        if arm != "unconstrained" and not content.lstrip().startswith("{"):
            error = f"not constrained to the schema: {content[:80]!r}"
        return latency, tokens, arm != "unconstrained" and json_closed(content), error

    start = time.perf_counter()
    results = await asyncio.gather(*(one(p) for p in texts))
    duration = time.perf_counter() - start
    return Batch(
        arm=arm,
        duration_s=duration,
        output_tokens=sum(r[1] for r in results),
        latencies_s=[r[0] for r in results],
        closed_early=sum(r[2] for r in results),
        errors=[r[3] for r in results if r[3]],
    )


async def bench(
    base_url: str, model: str, args: argparse.Namespace, cpu_seconds=None
) -> tuple[dict, list[Batch]]:
    """``cpu_seconds()``: the server's CPU seconds so far (its own and its engine's), if known."""
    limits = httpx.Limits(max_connections=args.concurrency + 1, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=base_url, timeout=3600, limits=limits) as client:
        texts = prompts(args.num_requests)
        first = {}
        for arm in ARMS:  # alone, before anything else of that arm: includes grammar compilation
            batch = await run_batch(client, model, arm, texts[:1], args)
            if batch.errors:
                raise SystemExit(f"[{arm}] first request failed: {batch.errors[0]}")
            first[arm] = batch.latencies_s[0]
            print(f"[{arm}] first request: {first[arm]:.2f} s", flush=True)
        for arm in ARMS:
            await run_batch(client, model, arm, texts[: args.concurrency], args)
            print(f"[{arm}] warm-up batch done", flush=True)
        names = list(ARMS)
        order = [a for r in range(args.rounds) for a in (names if r % 2 == 0 else names[::-1])]
        batches = []
        for i, arm in enumerate(order, 1):
            cpu_before = cpu_seconds() if cpu_seconds else None
            batch = await run_batch(client, model, arm, texts, args)
            if cpu_seconds:
                batch.cpu_s = cpu_seconds() - cpu_before
            batches.append(batch)
            print(
                f"[{i}/{len(order)} {arm}] {batch.tokens_per_s:.1f} tok/s, "
                f"{batch.duration_s:.1f} s, errors {len(batch.errors)}",
                flush=True,
            )
        return first, batches


def format_table(first: dict, batches: list[Batch], args: argparse.Namespace) -> str:
    names = list(ARMS)
    by_arm = {a: [b for b in batches if b.arm == a] for a in names}
    median_tok_s = {a: statistics.median(b.tokens_per_s for b in by_arm[a]) for a in names}

    def latency_p50_ms(arm: str) -> float:
        return statistics.median(x for b in by_arm[arm] for x in b.latencies_s) * 1e3

    rows = [
        ("output tok/s, median of batches", lambda a: f"{median_tok_s[a]:.1f}"),
        (
            "output tok/s of each batch",
            lambda a: ", ".join(f"{b.tokens_per_s:.1f}" for b in by_arm[a]),
        ),
        ("E2E latency p50 (ms)", lambda a: f"{latency_p50_ms(a):.0f}"),
        ("server + engine CPU s per batch, median", lambda a: _median_cpu(by_arm[a])),
        ("first request latency (ms)", lambda a: f"{first[a] * 1e3:.0f}"),
        (
            "requests with all tokens / failed",
            lambda a: (
                f"{sum(len(b.latencies_s) - len(b.errors) for b in by_arm[a])}"
                f" / {sum(len(b.errors) for b in by_arm[a])}"
            ),
        ),
        (
            "JSON closed before max_tokens",
            lambda a: (
                "-"
                if a == "unconstrained"
                else f"{sum(b.closed_early for b in by_arm[a])}"
                f" of {sum(len(b.latencies_s) for b in by_arm[a])}"
            ),
        ),
    ]
    width = max(len(text) for text in [*names, *(get(a) for _, get in rows for a in names)]) + 3
    lines = [
        f"{args.num_requests} chat requests x {args.rounds} rounds per arm, concurrency "
        f"{args.concurrency}, max_tokens {args.max_tokens} with ignore_eos, temperature 0",
        f"{'metric':<40}" + "".join(f"{a:>{width}}" for a in names),
    ]
    lines += [f"{label:<40}" + "".join(f"{get(a):>{width}}" for a in names) for label, get in rows]
    ratio = median_tok_s["json_schema"] / median_tok_s["unconstrained"]
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    lines.append("")
    lines.append(
        f"{'throughput json_schema / unconstrained':<40}{ratio:.3f}   "
        f"target >= {TARGET_RATIO:g}   {verdict}"
    )
    if all(b.cpu_s for b in batches):
        cpu_ratio = statistics.median(b.cpu_s for b in by_arm["json_schema"]) / statistics.median(
            b.cpu_s for b in by_arm["unconstrained"]
        )
        lines.append(f"{'CPU s json_schema / unconstrained':<40}{cpu_ratio:.3f}")
    errors = [e for b in batches for e in b.errors]
    if errors:
        lines.append(f"first error: {errors[0]}")
    return "\n".join(lines)


def _median_cpu(batches: list[Batch]) -> str:
    if not all(b.cpu_s for b in batches):
        return "-"
    return f"{statistics.median(b.cpu_s for b in batches):.1f}"


def main() -> int:
    args = _parse_args()
    print(describe_host(), flush=True)
    load_before = os.getloadavg()
    if args.base_url:
        base_url = args.base_url.rstrip("/").removesuffix("/v1")
        model = httpx.get(f"{base_url}/v1/models").json()["data"][0]["id"]
        first, batches = asyncio.run(bench(base_url, model, args))
    else:
        model_dir = resolve_model(args.model)
        port = free_port()
        command = [
            sys.executable, "-m", "llmloop.cli", "serve", "--model", str(model_dir),
            "--no-safety", "--no-store", "--port", str(port),
        ]  # fmt: skip
        kv_cache_gib = os.environ.get("VLLM_CPU_KVCACHE_SPACE", str(args.kv_cache_gib))
        with tempfile.TemporaryDirectory(prefix="llmloop-bench-home-") as home:
            env = {"VLLM_CPU_KVCACHE_SPACE": kv_cache_gib, "LLMLOOP_HOME": home}
            with running_server("llmloop", command, port, args.startup_timeout, env) as server:
                model = httpx.get(f"{server.base_url}/v1/models").json()["data"][0]["id"]
                first, batches = asyncio.run(
                    bench(server.base_url, model, args, lambda: sum(server.cpu_seconds()))
                )
    load_after = os.getloadavg()
    print(format_table(first, batches, args))
    print(
        f"load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {', '.join(f'{x:.2f}' for x in load_after)}"
    )
    return 0 if not any(b.errors for b in batches) else 1


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model name or dir")
    parser.add_argument("--concurrency", type=int, default=16, help="most requests in flight")
    parser.add_argument("--num-requests", type=int, default=32, help="requests per batch")
    parser.add_argument(
        "--max-tokens", type=int, default=64, help="output tokens per request (ignore_eos)"
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="timed batches per arm, in A B B A ... order"
    )
    parser.add_argument(
        "--kv-cache-gib", type=int, default=2, help="KV cache (VLLM_CPU_KVCACHE_SPACE)"
    )
    parser.add_argument("--startup-timeout", type=float, default=600, help="seconds")
    parser.add_argument("--base-url", help="benchmark this running server instead of starting one")
    args = parser.parse_args()
    for name in ("concurrency", "num_requests", "max_tokens", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


if __name__ == "__main__":
    sys.exit(main())
