"""Replicas behind vLLM's router on this machine (``llmloop cluster``).

1. Throughput: 32 short chats at concurrency 8 against 1 replica directly and against 2 replicas
   behind the router (round_robin): requests/s and output tokens/s.
2. Prefix-cache hit rate on a multi-turn workload (8 users x 4 turns, a long shared system
   prompt; each user's turns in order, users concurrently) behind the router with round_robin,
   cache_aware and consistent_hash: ``vllm:prefix_cache_hits_total / _queries_total`` summed over
   the replicas' /metrics (a fresh cluster per policy, so caches start empty).

    nice -n 10 .venv/bin/python benchmarks/cluster.py --db postgresql://...   (or --postgres)

On two CPU cores the absolute throughput gain is small; the hit rates carry to a GPU cluster.
"""

import argparse
import concurrent.futures
import os
import tempfile
import time

import httpx

from llmloop.serve import cluster

KEY = "llmloop-bench-key"
MODEL = "smollm2-135m-instruct"
SERVE_ARGS = ["--api-key", KEY, "--max-num-seqs", "4", "--kv-cache-memory-bytes", str(512 << 20)]
SERVE_ARGS += ["--max-model-len", "2048", "--no-safety", "--disable-access-log"]
SYSTEM = (
    "You are the support assistant of a hardware shop. Policies: returns within 30 days with a "
    "receipt; repairs under warranty for two years; shipping is free above 50 euros; the shop "
    "opens 9 to 18 on weekdays and 10 to 16 on Saturdays. Answer briefly and politely. "
) * 6
HEADERS = {"Authorization": f"Bearer {KEY}"}


def chat(url: str, messages: list[dict], max_tokens: int, user: str | None = None) -> tuple:
    body = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    if user:
        body["user"] = user
    r = httpx.post(f"{url}/v1/chat/completions", json=body, headers=HEADERS, timeout=300)
    r.raise_for_status()
    data = r.json()
    return data["choices"][0]["message"]["content"], data["usage"]["completion_tokens"]


def throughput(url: str, n: int = 32, concurrency: int = 8) -> tuple[float, float]:
    def one(i: int) -> int:
        q = f"Write one sentence about the number {i}."
        return chat(url, [{"role": "user", "content": q}], 32)[1]

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(one, range(n)))
    elapsed = time.monotonic() - start
    return n / elapsed, tokens / elapsed


def multi_turn(url: str, users: int = 8, turns: int = 4) -> None:
    def conversation(u: int) -> None:
        messages = [{"role": "system", "content": SYSTEM}]
        for t in range(turns):
            messages.append({"role": "user", "content": f"Customer {u}, question {t}: can I?"})
            text, _ = chat(url, messages, 16, user=f"user-{u}")
            messages.append({"role": "assistant", "content": text})

    with concurrent.futures.ThreadPoolExecutor(users) as pool:
        list(pool.map(conversation, range(users)))


def cache_counters(urls: list[str]) -> tuple[float, float]:
    hits = queries = 0.0
    for url in urls:
        for line in httpx.get(f"{url}/metrics", headers=HEADERS, timeout=10).text.splitlines():
            if line.startswith("vllm:prefix_cache_hits_total"):
                hits += float(line.rsplit(" ", 1)[1])
            elif line.startswith("vllm:prefix_cache_queries_total"):
                queries += float(line.rsplit(" ", 1)[1])
    return hits, queries


def with_cluster(replicas: int, policy: str, db_url: str):
    return cluster.up(
        replicas, db_url=db_url, policy=policy, port=cluster.free_port(), serve_args=SERVE_ARGS,
        progress=lambda line: print("  " + line, flush=True),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="A PostgreSQL URL the replicas share.")
    parser.add_argument("--policies", default="round_robin,cache_aware,consistent_hash")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("LLMLOOP_HOME", os.path.expanduser("~/.llmloop"))
    directory = tempfile.mkdtemp(prefix="llmloop-bench-cluster-")
    cluster.cluster_dir = lambda: __import__("pathlib").Path(directory)  # not the user's cluster
    rows = []
    if not args.skip_throughput:
        for replicas in (1, 2):
            state = with_cluster(replicas, "round_robin", args.db)
            try:
                throughput(state.url, n=8)  # warm-up
                rps, tps = throughput(state.url)
                rows.append((f"{replicas} replica(s), router round_robin", rps, tps))
            finally:
                cluster.down(progress=lambda _: None)
    hit_rows = []
    for policy in args.policies.split(","):
        state = with_cluster(2, policy, args.db)
        try:
            urls = [r.url for r in state.replicas]
            before = cache_counters(urls)
            start = time.monotonic()
            multi_turn(state.url)
            elapsed = time.monotonic() - start
            after = cache_counters(urls)
            hits, queries = after[0] - before[0], after[1] - before[1]
            hit_rows.append((policy, hits / queries if queries else 0.0, elapsed))
        finally:
            cluster.down(progress=lambda _: None)
    if rows:
        print("\n| setup (c=8, 32 chats, 32 tokens) | requests/s | output tok/s |")
        print("|---|---|---|")
        for name, rps, tps in rows:
            print(f"| {name} | {rps:.2f} | {tps:.1f} |")
    print("\n| policy (2 replicas, 8 users x 4 turns) | prefix-cache hit rate | wall s |")
    print("|---|---|---|")
    for policy, rate, elapsed in hit_rows:
        print(f"| {policy} | {rate:.1%} | {elapsed:.1f} |")


if __name__ == "__main__":
    main()
