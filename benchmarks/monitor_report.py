"""``llmloop monitor report`` on a million-row log: how long each part takes.

Builds a synthetic log of ``--rows`` requests spread over the last 8 days (SQLite by default,
bulk-inserted; ``--db postgresql://...`` loads it with COPY), then times two reports:

  default    the last 24 h (1/8 of the rows) against the 7 days before (the other 7/8);
  whole log  all 8 days against a reference JSONL of 2,000 prompts.

Phases: ``aggregates`` (the SQL: totals, percentiles, time buckets, per version/key/project),
``sample`` (the drift samples drawn in SQL), ``drift`` (MiniLM embeddings of 2 x --sample-size
prompts, MMD with 200 permutations, k-means, language id, KS and z tests), ``write`` (plots,
HTML and JSON). MiniLM's load time is printed on its own.

  nice -n 10 .venv/bin/python benchmarks/monitor_report.py
  nice -n 10 .venv/bin/python benchmarks/monitor_report.py --db postgresql://postgres@127.0.0.1:5432/bench
"""

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from llmloop.feedback.db import normalize_db_url
from llmloop.feedback.monitor.report import ReportConfig, build_report, write_report
from llmloop.feedback.monitor.signals import load_embedder
from llmloop.feedback.monitor.timespec import Window
from llmloop.feedback.store import FeedbackStore

TOPICS = {
    "cooking": ("How long should I {} the {} at {} degrees?", ["roast", "bake", "grill", "steam"],
                ["chicken", "bread", "salmon", "potatoes", "lamb"]),
    "code": ("How do I {} a {} in {}?", ["sort", "parse", "reverse", "serialize"],
             ["list", "JSON file", "string", "tree", "dictionary"]),
    "travel": ("What should I {} when visiting {} in {}?", ["pack", "see", "eat", "avoid"],
               ["Paris", "Kyoto", "Lisbon", "Seoul", "Lima"]),
}  # fmt: skip
COLUMNS = (
    "id", "created", "endpoint", "model", "base_model", "adapter", "adapter_version", "messages",
    "prompt", "citations", "sampling_params", "choices", "output", "finish_reason",
    "prompt_tokens", "completion_tokens", "latency_s", "api_key_id", "user", "prompt_hash",
    "search_text", "prompt_preview", "rating", "correction", "num_feedback", "project",
)  # fmt: skip
CHUNK = 50_000
DAY = 86_400.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", help="postgresql://... (an empty database); default: a temp SQLite")
    parser.add_argument("--sample-size", type=int, default=1000)
    args = parser.parse_args()

    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        db_url = args.db or f"sqlite:///{Path(tmp) / 'log.db'}"
        started = time.perf_counter()
        build_log(db_url, args.rows, now)
        build_s = time.perf_counter() - started
        reference_file = Path(tmp) / "reference.jsonl"
        write_reference(reference_file, 2000)
        started = time.perf_counter()
        embed = load_embedder()
        load_s = time.perf_counter() - started
        store = FeedbackStore(db_url)
        runs = {
            "default (24h vs 7d)": ReportConfig(
                Window(now - DAY, now), Window(now - 8 * DAY, now - DAY), None, args.sample_size
            ),
            "whole log vs file": ReportConfig(
                Window(now - 8 * DAY - 1, now + 1), reference_file, None, args.sample_size
            ),
        }
        backend = store.engine.dialect.name
        print(
            f"{backend}: built {args.rows:,} rows in {build_s:.0f} s; MiniLM loaded in {load_s:.1f} s"
        )
        print(
            "| backend | report | rows in window | aggregates s | sample s | drift s | write s | total s |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for name, config in runs.items():
            started = time.perf_counter()
            with store.engine.connect() as conn:
                report = build_report(conn, config, embed)
            write_started = time.perf_counter()
            write_report(report, Path(tmp) / "out")
            end = time.perf_counter()
            t = report["timings_s"]
            print(
                f"| {backend} | {name} | {report['requests']:,} | {t['aggregates']:.2f} | "
                f"{t['sample']:.2f} | {t['drift']:.2f} | {end - write_started:.2f} | "
                f"{end - started:.2f} |"
            )
        store.close()


def build_log(db_url: str, num_rows: int, now: float) -> None:
    store = FeedbackStore(db_url)
    store.migrate()
    is_sqlite = store.engine.dialect.name == "sqlite"
    store.close()
    rng = np.random.default_rng(0)
    if is_sqlite:
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"))
        conn.execute("PRAGMA synchronous=OFF")
        insert = (
            f"INSERT INTO completions ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})"
        )
        for start in range(0, num_rows, CHUNK):
            conn.executemany(insert, rows(rng, start, min(CHUNK, num_rows - start), num_rows, now))
            conn.commit()
        conn.execute("ANALYZE")
        conn.close()
        return
    import psycopg

    columns = ",".join(f'"{c}"' for c in COLUMNS)  # "user" is a reserved word in PostgreSQL
    with psycopg.connect(normalize_db_url(db_url).replace("+psycopg", "")) as conn:
        with conn.cursor() as cursor:
            for start in range(0, num_rows, CHUNK):
                with cursor.copy(f"COPY completions ({columns}) FROM STDIN") as copy:
                    for row in rows(rng, start, min(CHUNK, num_rows - start), num_rows, now):
                        copy.write_row(row)
        conn.execute("ANALYZE completions")


def rows(rng: np.random.Generator, start: int, count: int, total: int, now: float):
    """``count`` rows from index ``start``, evenly spread over the 8 days before ``now``; the
    last day asks more about code than the reference days (a drift to find)."""
    created = (
        now - 8 * DAY + (np.arange(start, start + count) + rng.random(count)) * (8 * DAY / total)
    )
    latency = rng.lognormal(-1.0, 0.6, count)
    prompt_tokens = rng.poisson(40, count) + 5
    completion_tokens = rng.poisson(120, count) + 1
    finish = rng.choice(
        ["stop", "length", "content_filter", "abort"], count, p=[0.9, 0.07, 0.02, 0.01]
    )
    rating = rng.choice([None, 1, -1], count, p=[0.9, 0.07, 0.03])
    pii = rng.random(count) < 0.03
    pools = {name: prompt_pool(name, np.random.default_rng(7)) for name in TOPICS}
    recent = created > now - DAY
    topics = np.where(
        recent,
        rng.choice(len(TOPICS), count, p=[0.2, 0.6, 0.2]),
        rng.choice(len(TOPICS), count, p=[0.4, 0.2, 0.4]),
    )
    picks = rng.integers(0, POOL, count)
    versions = rng.integers(1, 4, count)
    names = list(TOPICS)
    for i in range(count):
        prompt = pools[names[topics[i]]][picks[i]]
        if pii[i]:
            prompt += " Reply to <EMAIL_1>."
        version = int(versions[i])
        yield (
            f"chatcmpl-{start + i:010d}", float(created[i]), "chat.completions", "tuned",
            "smollm2-135m-instruct", "tuned", version,
            json.dumps([{"role": "user", "content": prompt}]), None, "[]", "{}",
            json.dumps([{"index": 0, "text": "an answer", "finish_reason": str(finish[i])}]),
            "an answer", str(finish[i]), int(prompt_tokens[i]), int(completion_tokens[i]),
            float(latency[i]), f"key-{i % 40:012x}", None, f"{start + i:064x}",
            prompt.lower() + " an answer", prompt[:200],
            rating[i], "a better answer" if rating[i] == -1 and i % 3 == 0 else None,
            int(rating[i] is not None), f"project-{i % 7}",
        )  # fmt: skip


POOL = 500


def prompt_pool(topic: str, rng: np.random.Generator) -> list[str]:
    template, verbs, nouns = TOPICS[topic]
    return [
        template.format(rng.choice(verbs), rng.choice(nouns), int(rng.integers(100, 250)))
        for _ in range(POOL)
    ]


def write_reference(path: Path, count: int) -> None:
    rng = np.random.default_rng(1)
    with path.open("w") as out:
        for _ in range(count):
            template, verbs, nouns = TOPICS[rng.choice(list(TOPICS), p=[0.4, 0.2, 0.4])]
            prompt = template.format(rng.choice(verbs), rng.choice(nouns), 180)
            out.write(json.dumps({"messages": [{"role": "user", "content": prompt}]}) + "\n")


if __name__ == "__main__":
    main()
