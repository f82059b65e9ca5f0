"""The request log's costs: write throughput, UI queries at 100k rows, serving overhead.

  1. write: ``RequestLog.submit`` latency (what a request pays) and rows/s until everything is in
     the database, on SQLite (default) or ``--db postgresql://...``;
  2. ui: the labelling UI's queries (first page, a deep keyset page, filters, count, search) on a
     log of ``--ui-rows`` rows;
  3. overhead (with ``--base-url``): the same chat load at concurrency 16 against a running
     ``llmloop serve``, each request once with ``store: false`` and once logged; prints the
     throughput and latency ratios (target: logging costs <= 3%).

  .venv/bin/python benchmarks/feedback_log.py                       # write + ui on SQLite
  .venv/bin/python benchmarks/feedback_log.py --db postgresql://postgres@127.0.0.1:5432/bench
  .venv/bin/python benchmarks/feedback_log.py --only overhead --base-url http://127.0.0.1:8000 \\
      --model smollm2-135m-instruct --num-requests 256
"""

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from llmloop.feedback.log import RequestLog
from llmloop.feedback.record import CompletionRecord
from llmloop.feedback.store import ConversationFilter, Feedback

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "capital",
    "france",
    "paris",
    "weather",
    "model",
    "answer",
    "please",
    "explain",
    "why",
]


def main() -> None:
    args = _parser().parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llmloop-bench-"))
    db_url = args.db or f"sqlite:///{tmp / 'bench.db'}"
    if args.only in (None, "write"):
        asyncio.run(bench_write(db_url, args.write_rows, tmp / "spool"))
    if args.only in (None, "ui"):
        ui_db = args.db or f"sqlite:///{tmp / 'ui.db'}"
        asyncio.run(bench_ui(ui_db, args.ui_rows, tmp / "spool-ui"))
    if args.only == "overhead" or (args.only is None and args.base_url):
        if not args.base_url:
            raise SystemExit("--only overhead needs --base-url of a running `llmloop serve`")
        asyncio.run(bench_overhead(args))


async def bench_write(db_url: str, num_rows: int, spool_dir: Path) -> None:
    log = RequestLog(db_url, spool_dir=spool_dir, max_queue=num_rows)
    await log.start()
    records = [_record(i) for i in range(num_rows)]
    submit_us = []
    start = time.perf_counter()
    for i, record in enumerate(records):
        t = time.perf_counter()
        log.submit(record)
        submit_us.append((time.perf_counter() - t) * 1e6)
        if i % 16 == 0:
            await asyncio.sleep(0)  # requests interleave with the writer, as in the server
    assert await log.flush(timeout=600), "the log did not catch up"
    elapsed = time.perf_counter() - start
    await log.aclose()
    print(f"write  {_backend(db_url)}: {num_rows} rows in {elapsed:.2f} s = "
          f"{num_rows / elapsed:,.0f} rows/s; submit() p50 {_pct(submit_us, 50):.1f} us, "
          f"p99 {_pct(submit_us, 99):.1f} us; spooled {log.stats.spooled}")  # fmt: skip


async def bench_ui(db_url: str, num_rows: int, spool_dir: Path) -> None:
    log = RequestLog(db_url, spool_dir=spool_dir)
    await log.start()
    store = log.store
    batch = 5000
    for start in range(0, num_rows, batch):
        store.insert_records(_record(i) for i in range(start, min(start + batch, num_rows)))
    rng = random.Random(0)
    for i in rng.sample(range(num_rows), num_rows // 10):  # a tenth labelled
        store.add_feedback(Feedback(f"chatcmpl-{i:09d}", rating=rng.choice((1, -1))))
    deep_cursor = None
    for _ in range(20):  # 1,000 rows down
        deep_cursor = store.list_conversations(ConversationFilter(), cursor=deep_cursor)[
            "next_cursor"
        ]
    queries = {
        "first page": lambda: store.list_conversations(ConversationFilter()),
        "page 21 (keyset)": lambda: store.list_conversations(
            ConversationFilter(), cursor=deep_cursor
        ),
        "model filter": lambda: store.list_conversations(ConversationFilter(model="adapter-3")),
        "rated -1": lambda: store.list_conversations(ConversationFilter(rating=-1)),
        "unlabelled": lambda: store.list_conversations(ConversationFilter(unlabelled=True)),
        "date range": lambda: store.list_conversations(
            ConversationFilter(since=1.7e9 + num_rows / 2, until=1.7e9 + num_rows / 2 + 3600)
        ),
        "search 'paris'": lambda: store.list_conversations(ConversationFilter(q="paris weather")),
        "search, no match": lambda: store.list_conversations(ConversationFilter(q="zebra")),
        "count (all)": lambda: store.count(ConversationFilter()),
        "count (unlabelled)": lambda: store.count(ConversationFilter(unlabelled=True)),
    }
    print(f"ui     {_backend(db_url)}, {num_rows:,} rows (median of 5, ms):")
    for name, query in queries.items():
        times = []
        for _ in range(5):
            t = time.perf_counter()
            query()
            times.append((time.perf_counter() - t) * 1e3)
        print(f"  {name:<20} {statistics.median(times):8.2f}")
    await log.aclose()


async def bench_overhead(args: argparse.Namespace) -> None:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    async with httpx.AsyncClient(base_url=args.base_url, headers=headers, timeout=600) as client:
        await _load(client, args, store=False, num_requests=args.concurrency)  # warm-up
        results = {}
        # alternate the two conditions so drift (thermal, other load) hits both alike
        for round_ in range(args.rounds):
            for store in (False, True) if round_ % 2 == 0 else (True, False):
                results.setdefault(store, []).append(await _load(client, args, store=store))
    off, on = (_merge(results[False]), _merge(results[True]))
    print(f"overhead at concurrency {args.concurrency}, {args.num_requests} requests x "
          f"{args.rounds} rounds per condition ({args.base_url}):")  # fmt: skip
    for name, stats in (("store: false", off), ("logged", on)):
        print(f"  {name:<13} {stats['rps']:.2f} req/s, latency p50 {stats['p50']:.3f} s, "
              f"p99 {stats['p99']:.3f} s")  # fmt: skip
    print(f"  throughput cost of logging: {(1 - on['rps'] / off['rps']) * 100:+.2f}% "
          f"(target <= 3%); p50 latency {(on['p50'] / off['p50'] - 1) * 100:+.2f}%")  # fmt: skip


async def _load(client, args, *, store: bool, num_requests: int | None = None) -> dict:
    num_requests = num_requests or args.num_requests
    semaphore = asyncio.Semaphore(args.concurrency)
    latencies = []

    async def one(i: int) -> None:
        body = {
            "model": args.model,
            "messages": [{"role": "user", "content": f"Question {i}: {_words(i, 12)}?"}],
            "max_tokens": args.max_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "store": store,
        }
        async with semaphore:
            t = time.perf_counter()
            r = await client.post("/v1/chat/completions", json=body)
            r.raise_for_status()
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(num_requests)))
    return {"elapsed": time.perf_counter() - start, "latencies": latencies}


def _merge(runs: list[dict]) -> dict:
    latencies = [x for run in runs for x in run["latencies"]]
    elapsed = sum(run["elapsed"] for run in runs)
    return {"rps": len(latencies) / elapsed, "p50": _pct(latencies, 50), "p99": _pct(latencies, 99)}


def _record(i: int) -> CompletionRecord:
    prompt = _words(i, 30)
    return CompletionRecord(
        id=f"chatcmpl-{i:09d}",
        created=1.7e9 + i,  # one a second
        endpoint="chat.completions",
        model=f"adapter-{i % 8}",
        base_model="smollm2-135m-instruct",
        adapter=f"adapter-{i % 8}",
        adapter_version=1,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}],
        prompt=None,
        citations=[],
        sampling_params={"temperature": 0.7, "top_p": 0.95, "max_tokens": 128},
        choices=[{"index": 0, "text": _words(i + 1, 80), "finish_reason": "stop"}],
        prompt_tokens=40,
        completion_tokens=100,
        latency_s=0.8,
        api_key_id="key-0123456789ab",
        user=None,
    )


def _words(seed: int, n: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q / 100))]


def _backend(db_url: str) -> str:
    return db_url.split(":", 1)[0]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", choices=("write", "ui", "overhead"), help="Run one part only.")
    p.add_argument("--db", help="Database URL (default: a fresh SQLite file in a temp dir).")
    p.add_argument("--write-rows", type=int, default=20_000, help="Rows for the write benchmark.")
    p.add_argument("--ui-rows", type=int, default=100_000, help="Rows for the UI query benchmark.")
    p.add_argument("--base-url", help="A running `llmloop serve` for the overhead benchmark.")
    p.add_argument("--model", default="smollm2-135m-instruct", help="Model name to request.")
    p.add_argument("--api-key", help="API key if the server has one.")
    p.add_argument("--concurrency", type=int, default=16, help="Requests in flight at once.")
    p.add_argument("--num-requests", type=int, default=128, help="Requests per round.")
    p.add_argument("--rounds", type=int, default=4, help="Rounds per condition (alternated).")
    p.add_argument("--max-tokens", type=int, default=32, help="Tokens per answer.")
    return p


if __name__ == "__main__":
    main()
