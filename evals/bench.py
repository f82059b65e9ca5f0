"""``llmloop bench serve``: load an OpenAI-compatible server and report vLLM's serving metrics.

Same load shape as ``vllm bench serve --request-rate inf --max-concurrency N``: every request is
queued at once and at most ``concurrency`` are in flight; one untimed request first checks the
set-up (as vLLM's initial test run does). Metrics: see ``evals.bench_metrics``.
"""

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import httpx
from tqdm import tqdm

from llmloop.config_docs import field_docs
from llmloop.evals.bench_metrics import LATENCY_METRICS, BenchResult, calculate_metrics
from llmloop.evals.bench_requests import RequestInput, RequestOutput, send_streaming_request
from llmloop.evals.errors import EvalError, ServerError, TaskConfigError

HTTP_TIMEOUT_S = 6 * 60 * 60  # vLLM's AIOHTTP_TIMEOUT: a long run must not time out mid-stream


@dataclass(frozen=True)
class BenchConfig:
    base_url: str
    """Server root, e.g. http://127.0.0.1:8000 (a trailing /v1 is accepted)."""
    model: str
    """Model name to send in each request (a base model or an adapter the server lists)."""
    concurrency: int = 16
    """Most requests in flight at once (vLLM's --max-concurrency)."""
    num_requests: int = 64
    """Requests in the timed run."""
    max_tokens: int = 128
    """Output tokens asked per request (exactly this many with --ignore-eos)."""
    prompt_len: int = 128
    """Words per synthetic prompt (about one token each); ignored with --prompts."""
    ignore_eos: bool = False
    """Keep generating past the end-of-sequence token, so every request yields --max-tokens."""
    endpoint: str = "chat"
    """chat (/v1/chat/completions) or completions (/v1/completions)."""
    api_key: str | None = None
    """Bearer token for servers started with --api-key."""
    seed: int = 0
    """Seed for the synthetic prompts: the same seed gives the same prompts."""
    prompts: str | None = None
    """JSONL file of prompts ({"prompt": ...} per line, cycled) instead of synthetic ones."""

    def __post_init__(self) -> None:
        for name in ("concurrency", "num_requests", "max_tokens", "prompt_len"):
            if getattr(self, name) < 1:
                raise EvalError(f"--{name.replace('_', '-')} must be at least 1")
        if self.endpoint not in ("chat", "completions"):
            raise EvalError(f"--endpoint must be chat or completions, not {self.endpoint!r}")


def main(argv: list[str]) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in fields(BenchConfig)}
    config = BenchConfig(**values)
    result = run_benchmark(config, show_progress=sys.stderr.isatty())
    print(format_table(result, config))
    if args.result_json:
        Path(args.result_json).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"wrote {args.result_json}")
    return 0 if result.completed else 1


def run_benchmark(
    config: BenchConfig,
    show_progress: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
) -> BenchResult:
    """Run the benchmark described by ``config``; ``transport`` swaps the network in tests."""
    prompts = load_prompts(config)
    return asyncio.run(_run(config, prompts, show_progress, transport))


def load_prompts(config: BenchConfig) -> list[str]:
    """``num_requests`` prompts: the JSONL file's (cycled) or deterministic synthetic ones."""
    if config.prompts:
        return _read_prompt_file(Path(config.prompts), config.num_requests)
    return synthetic_prompts(config.num_requests, config.prompt_len, config.seed)


def synthetic_prompts(num_prompts: int, prompt_len: int, seed: int) -> list[str]:
    """Random-word prompts; each starts with its own index so no two share a cached prefix."""
    rng = random.Random(seed)
    words = _WORD_TEXT.split()
    return [
        f"{i}: " + " ".join(rng.choices(words, k=max(prompt_len - 2, 1)))
        for i in range(num_prompts)
    ]


async def _run(
    config: BenchConfig,
    prompts: list[str],
    show_progress: bool,
    transport: httpx.AsyncBaseTransport | None,
) -> BenchResult:
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    limits = httpx.Limits(max_connections=config.concurrency + 1, max_keepalive_connections=None)
    async with httpx.AsyncClient(
        base_url=config.base_url.rstrip("/").removesuffix("/v1"),
        headers=headers,
        timeout=HTTP_TIMEOUT_S,
        limits=limits,
        transport=transport,
    ) as client:
        requests = [
            RequestInput(p, config.max_tokens, config.model, config.ignore_eos) for p in prompts
        ]
        probe = await send_streaming_request(client, requests[0], config.endpoint)
        if not probe.success:
            raise ServerError(
                f"the test request to {config.base_url} failed ({probe.error}); check --base-url, "
                "--model (see GET /v1/models) and --api-key"
            )
        semaphore = asyncio.Semaphore(config.concurrency)
        progress = tqdm(total=len(requests), desc="bench", unit="req", disable=not show_progress)

        async def limited(request: RequestInput) -> RequestOutput:
            async with semaphore:
                output = await send_streaming_request(client, request, config.endpoint)
            progress.update(1)
            return output

        start = time.perf_counter()
        outputs = await asyncio.gather(*(limited(r) for r in requests))
        duration = time.perf_counter() - start
        progress.close()
    result = calculate_metrics(list(outputs), duration)
    result.config = asdict(config) | {"api_key": None}
    return result


def format_table(result: BenchResult, config: BenchConfig | None = None) -> str:
    """The result as the plain-text table ``vllm bench serve`` prints."""
    rows = [("Successful requests:", result.completed), ("Failed requests:", result.failed)]
    if config is not None:
        rows.append(("Maximum request concurrency:", config.concurrency))
    rows += [
        ("Benchmark duration (s):", f"{result.duration_s:.2f}"),
        ("Total input tokens:", result.total_input_tokens),
        ("Total generated tokens:", result.total_output_tokens),
        ("Request throughput (req/s):", f"{result.request_throughput:.2f}"),
        ("Output token throughput (tok/s):", f"{result.output_throughput:.2f}"),
        ("Total token throughput (tok/s):", f"{result.total_token_throughput:.2f}"),
    ]
    lines = ["{:=^50}".format(" Serving Benchmark Result ")]
    lines += [f"{label:<40} {value:<10}" for label, value in rows]
    headers = {
        "ttft": "Time to First Token",
        "tpot": "Time per Output Token (excl. 1st token)",
        "itl": "Inter-token Latency",
        "e2el": "End-to-end Latency",
    }
    for name in LATENCY_METRICS:
        stats = getattr(result, name)
        label = name.upper()
        lines.append(f"{headers[name]:-^50}")
        lines.append(f"{f'Mean {label} (ms):':<40} {stats.mean_ms:<10.2f}")
        lines.append(f"{f'Median {label} (ms):':<40} {stats.median_ms:<10.2f}")
        for key, value in stats.percentiles_ms.items():
            lines.append(f"{f'{key.upper()} {label} (ms):':<40} {value:<10.2f}")
    lines.append("=" * 50)
    if result.errors:
        lines.append(f"first error: {result.errors[0]}")
    return "\n".join(lines)


def _read_prompt_file(path: Path, num_prompts: int) -> list[str]:
    if not path.is_file():
        raise TaskConfigError(f"--prompts {path}: no such file")
    prompts = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            prompts.append(str(json.loads(line)["prompt"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise TaskConfigError(
                f'--prompts {path}: line {line_no} is not a JSON object with a "prompt" field'
            ) from None
    if not prompts:
        raise TaskConfigError(f"--prompts {path}: the file holds no prompts")
    return [prompts[i % len(prompts)] for i in range(num_prompts)]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmloop bench",
        description="Benchmark an OpenAI-compatible server with the metrics `vllm bench serve` "
        "reports: TTFT, TPOT, ITL and end-to-end latency (mean, p50/p90/p99 in ms), request "
        "and token throughput.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="serve")
    serve = sub.add_parser(
        "serve",
        help="Stream requests at a running server and time them.",
        description="Send --num-requests streaming requests, at most --concurrency at a time, "
        "to a running server and print vLLM's serving metrics. Example: llmloop bench serve "
        "--base-url http://127.0.0.1:8000 --model smollm2-135m-instruct --ignore-eos",
    )
    docs = field_docs(BenchConfig)
    serve.add_argument("--base-url", required=True, help=docs["base_url"])
    serve.add_argument("--model", required=True, help=docs["model"])
    defaults = BenchConfig(base_url="", model="")
    for name in ("concurrency", "num_requests", "max_tokens", "prompt_len", "seed"):
        serve.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=getattr(defaults, name),
            help=f"{docs[name]} (default: %(default)s)",
        )
    serve.add_argument("--ignore-eos", action="store_true", help=docs["ignore_eos"])
    serve.add_argument(
        "--endpoint", choices=("chat", "completions"), default="chat", help=docs["endpoint"]
    )
    serve.add_argument("--api-key", help=docs["api_key"])
    serve.add_argument("--prompts", metavar="FILE.jsonl", help=docs["prompts"])
    serve.add_argument("--result-json", metavar="FILE", help="Also write the metrics as JSON.")
    return parser


# Common English words, each one token for most tokenizers: prompts of known rough length.
_WORD_TEXT = (
    "the of and to in is was for on that with as by at from his her they this had are not but "
    "have were which one all their she there been has when who more will would if no out so "
    "said what up its about than into them can only other new some could time these two may "
    "then first any my now such like our over man me even most made after also did many before "
    "must through back years where much your way well down should because each just those "
    "people how too little state good very make world still own see men work long get here "
    "between both life being under never day same another know while last might us great old "
    "year off come since against go came right used take three"
)
