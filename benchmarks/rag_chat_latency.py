"""RAG chat latency on one real server: what retrieval adds to a chat's time to first token.

Indexes the CPython language reference topics (``data/rag/pydoc-topics``) as index ``bench`` in a
temporary LLMLOOP_HOME, then for each server variant (safety on, ``--no-safety``) starts one
``llmloop serve`` (default model, ``--no-store``) and runs, streamed, with ``--max-tokens`` each:

  plain   the questions of ``data/rag/questions.jsonl`` without retrieval,
  rag     the same questions with ``rag: {"index": "bench", "top_k": 4}``,

at concurrency 1 and 8, then a multi-turn workload at concurrency 1: conversations over the same
index, each question followed by two follow-ups ("Show a short example of that." ...), the
previous answers kept in the messages. Every run asks its own questions (a slice of the file
not asked before on that server), so neither vLLM's prefix cache nor any cache of the server sees
a repeated question; what they reuse is what real traffic shares (instructions, popular chunks). It prints, per run: TTFT p50/p90 (time to the first
content token), E2E p50, prompt tokens (``usage``), vLLM's prefix-cache hit rate over the run
(``vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total`` deltas) and where a RAG
request's time before its first token went, as means over the run from ``/metrics``:
retrieval (``llmloop:retrieval_duration_seconds``), the harm classifier's batches
(``llmloop:safety_batch_duration_seconds``, per request) and the engine's own TTFT
(``vllm:time_to_first_token_seconds``: queueing and prefill).

    .venv/bin/python benchmarks/rag_chat_latency.py                 # 16 questions, both variants
    .venv/bin/python benchmarks/rag_chat_latency.py --num-questions 8 --variants safety

Runs one server at a time; nothing is left behind.
"""

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from server_process import free_port, running_server  # benchmarks/server_process.py

DATA_DIR = Path(__file__).parent / "data" / "rag"
CORPUS_DIR = DATA_DIR / "pydoc-topics"
QUESTIONS_FILE = DATA_DIR / "questions.jsonl"
INDEX = "bench"
VARIANTS = {"safety": [], "no-safety": ["--no-safety"]}
FOLLOW_UPS = ("Can you give a short code example?", "What is a common mistake with it?")
"""Follow-up turns; the default harm classifier flags "Show a short example of that." as hate."""
METRICS = {
    "retrieval": "llmloop:retrieval_duration_seconds",
    "safety": "llmloop:safety_batch_duration_seconds",
    "engine_ttft": "vllm:time_to_first_token_seconds",
    "prefill": "vllm:request_prefill_time_seconds",
}
REFUSAL = "I can't help with that request."
MODEL = "?"  # the server's base model, asked at start
COUNTERS = {"hits": "vllm:prefix_cache_hits_total", "queries": "vllm:prefix_cache_queries_total"}


@dataclass
class Sample:
    ttft: float
    e2e: float
    prompt_tokens: int
    turn: int = 1


@dataclass
class Run:
    variant: str
    workload: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def main() -> int:
    args = _parse_args()
    questions = [json.loads(line)["question"] for line in QUESTIONS_FILE.read_text().splitlines()]
    if 2.5 * args.num_questions > len(questions) - 1:
        raise SystemExit(f"--num-questions: at most {int((len(questions) - 1) / 2.5)}")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="rag-chat-latency-") as home:
        env = {"LLMLOOP_HOME": home, "LLMLOOP_API_KEY": ""}
        _index(env)
        for variant in args.variants.split(","):
            port = free_port()
            command = [
                sys.executable, "-m", "llmloop.cli", "serve", "--port", str(port), "--no-store",
                *VARIANTS[variant], *args.serve_args.split(),
            ]  # fmt: skip
            with running_server(variant, command, port, args.startup_timeout, env) as server:
                runs += asyncio.run(_bench(server.base_url, variant, questions, args))
    print(format_table(runs))
    if args.out:
        args.out.write_text(json.dumps([_as_json(run) for run in runs], indent=2))
    return 0


def _index(env: dict[str, str]) -> None:
    command = [
        sys.executable,
        "-m",
        "llmloop.cli",
        "rag",
        "index",
        str(CORPUS_DIR),
        "--name",
        INDEX,
    ]
    start = time.monotonic()
    subprocess.run(command, env=os.environ | env, check=True, stdout=subprocess.DEVNULL)
    print(f"[index] {CORPUS_DIR.name} indexed in {time.monotonic() - start:.0f} s", flush=True)


async def _bench(base_url: str, variant: str, questions: list[str], args) -> list[Run]:
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        global MODEL
        MODEL = (await client.get("/v1/models")).json()["data"][0]["id"]
        # warm-up: loads the embedder and the classifier, compiles what the engine compiles
        for rag in (False, True):
            await _chat(client, [_user(questions[-1])], rag, args.max_tokens)
        runs = []
        n = args.num_questions
        for offset, concurrency in ((0, 1), (n, 8)):
            for workload in ("plain", "rag"):
                conversations = [[_user(q)] for q in questions[offset : offset + n]]
                runs.append(
                    await _measure(
                        client, Run(variant, workload, concurrency), conversations, args.max_tokens
                    )
                )
                print(format_table(runs[-1:], header=False), flush=True)
        multi = questions[2 * n : 2 * n + max(1, n // 2)]
        runs.append(await _multi_turn(client, Run(variant, "multi-turn", 1), multi, args))
        print(format_table(runs[-1:], header=False), flush=True)
        return runs


async def _measure(
    client: httpx.AsyncClient, run: Run, conversations: list[list[dict]], max_tokens: int
) -> Run:
    before = await _scrape(client)
    gate = asyncio.Semaphore(run.concurrency)

    async def one(messages: list[dict]) -> Sample:
        async with gate:
            sample, _ = await _chat(client, messages, run.workload == "rag", max_tokens)
            return sample

    run.samples = list(await asyncio.gather(*(one(m) for m in conversations)))
    run.metrics = _delta(before, await _scrape(client), len(run.samples))
    return run


async def _multi_turn(client: httpx.AsyncClient, run: Run, questions: list[str], args) -> Run:
    """Each question, then its follow-ups, the answers so far kept: one conversation at a time."""
    before = await _scrape(client)
    for question in questions:
        messages = [_user(question)]
        for turn, follow_up in enumerate((None, *FOLLOW_UPS), start=1):
            if follow_up is not None:
                messages.append(_user(follow_up))
            sample, answer = await _chat(client, messages, True, args.max_tokens)
            sample.turn = turn
            if answer == REFUSAL:
                raise SystemExit(f"refused on turn {turn}: {messages}")
            run.samples.append(sample)
            messages.append({"role": "assistant", "content": answer})
    run.metrics = _delta(before, await _scrape(client), len(run.samples))
    return run


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


async def _chat(
    client: httpx.AsyncClient, messages: list[dict], rag: bool, max_tokens: int
) -> tuple[Sample, str]:
    body: dict = {
        "model": MODEL,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if rag:
        body["rag"] = {"index": INDEX, "top_k": 4}
    start = time.perf_counter()
    ttft, prompt_tokens, text = None, 0, []
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise SystemExit(f"chat failed {response.status_code}: {await response.aread()}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise SystemExit(f"chat failed in its stream: {event}")
            for choice in event.get("choices") or []:
                if content := (choice.get("delta") or {}).get("content"):
                    ttft = ttft if ttft is not None else time.perf_counter() - start
                    text.append(content)
            if usage := event.get("usage"):
                prompt_tokens = usage["prompt_tokens"]
    e2e = time.perf_counter() - start
    return Sample(ttft if ttft is not None else e2e, e2e, prompt_tokens), "".join(text)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


async def _scrape(client: httpx.AsyncClient) -> dict[str, float]:
    """Sums over labels of the ``_sum``/``_count`` series of ``METRICS`` and of ``COUNTERS``."""
    text = (await client.get("/metrics")).text
    wanted = {f"{m}_sum" for m in METRICS.values()} | {f"{m}_count" for m in METRICS.values()}
    wanted |= set(COUNTERS.values())
    totals: dict[str, float] = dict.fromkeys(wanted, 0.0)
    for line in text.splitlines():
        if (match := _SAMPLE.match(line)) and match[1] in wanted:
            totals[match[1]] += float(match[3])
    return totals


def _delta(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """Per run: the mean seconds per request of each of ``METRICS`` (the safety batches per
    request, a request's checks may take several), the prefix-cache hit rate."""
    diff = {name: after[name] - before[name] for name in after}
    out = {key: diff[f"{name}_sum"] / max(1, requests) for key, name in METRICS.items()}
    out["safety_batches"] = diff[f"{METRICS['safety']}_count"] / max(1, requests)
    queries = diff[COUNTERS["queries"]]
    out["prefix_hit_rate"] = diff[COUNTERS["hits"]] / queries if queries else float("nan")
    return out


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def format_table(runs: list[Run], header: bool = True) -> str:
    cols = (
        f"{'variant':<10} {'workload':<12} {'conc':>4} {'n':>3} {'ttft p50':>9} {'ttft p90':>9} "
        f"{'e2e p50':>8} {'prompt':>6} {'hit %':>6} {'retr ms':>8} {'safety ms':>9} "
        f"{'eng ttft':>8} {'prefill':>8}"
    )
    lines = [cols, "-" * len(cols)] if header else []
    for run in runs:
        groups = [("", run.samples)]
        if run.workload == "multi-turn":
            turns = sorted({s.turn for s in run.samples})
            groups += [(f" t{t}", [s for s in run.samples if s.turn == t]) for t in turns]
        for suffix, samples in groups:
            ttfts = [s.ttft for s in samples]
            m = run.metrics
            lines.append(
                f"{run.variant:<10} {run.workload + suffix:<12} {run.concurrency:>4} "
                f"{len(samples):>3} {_pct(ttfts, 0.5) * 1e3:>7.0f}ms {_pct(ttfts, 0.9) * 1e3:>7.0f}ms "
                f"{statistics.median(s.e2e for s in samples):>7.2f}s "
                f"{statistics.mean(s.prompt_tokens for s in samples):>6.0f} "
                + (
                    f"{m['prefix_hit_rate'] * 100:>5.0f}% {m['retrieval'] * 1e3:>8.0f} "
                    f"{m['safety'] * 1e3:>9.0f} {m['engine_ttft'] * 1e3:>6.0f}ms "
                    f"{m['prefill'] * 1e3:>6.0f}ms"
                    if not suffix
                    else ""
                )
            )
    return "\n".join(lines)


def _as_json(run: Run) -> dict:
    return {
        "variant": run.variant,
        "workload": run.workload,
        "concurrency": run.concurrency,
        "samples": [vars(s) for s in run.samples],
        "metrics": run.metrics,
    }


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-questions", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--variants", default="safety,no-safety", help="of: " + ",".join(VARIANTS))
    parser.add_argument("--serve-args", default="", help="more `llmloop serve` flags, one string")
    parser.add_argument("--startup-timeout", type=float, default=600)
    parser.add_argument("--out", type=Path, help="also write every sample to this JSON file")
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(main())
