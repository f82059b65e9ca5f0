"""Run one task against a server: concurrent requests, a per-sample log, resumable.

A run directory holds ``run.json`` (what was asked: task, model, seed, fingerprint),
``samples.jsonl`` (one record per finished sample, appended as each finishes), and, once every
sample is done, ``results.json`` and the report. Re-running into the same directory reuses the
records whose fingerprint matches, so an interrupted run picks up where it stopped and ends with
the same results as an uninterrupted one (records are aggregated in dataset order).
"""

import hashlib
import json
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from llmloop.evals.client import EvalClient
from llmloop.evals.errors import EvalError, TaskConfigError
from llmloop.evals.task_types import aggregate, score_sample
from llmloop.evals.tasks import TaskConfig, dataset_sha256, fewshot_pool, load_samples

SAMPLES_FILE = "samples.jsonl"
RUN_FILE = "run.json"
RESULTS_FILE = "results.json"


@dataclass(frozen=True)
class RunConfig:
    base_url: str
    """Server root, e.g. http://127.0.0.1:8000."""
    model: str
    """Model (or adapter) name the server knows."""
    out_dir: Path
    """Run directory; an existing one with matching settings is resumed."""
    api_key: str | None = None
    """Bearer token for servers started with --api-key."""
    seed: int = 0
    """Sent as the request seed and used to draw few-shot examples."""
    concurrency: int = 8
    """Requests in flight at once (the server batches them)."""
    max_retries: int = 5
    """Retries per request on connection errors, 429 and 5xx, with exponential backoff."""
    fresh: bool = False
    """Ignore cached sample records in out_dir and start over."""

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_retries < 0:
            raise EvalError("--concurrency must be at least 1 and --max-retries at least 0")


@dataclass
class EvalRun:
    task: TaskConfig
    config: RunConfig
    metrics: dict[str, float]
    records: list[dict] = field(repr=False)
    num_cached: int
    duration_s: float

    @property
    def out_dir(self) -> Path:
        return self.config.out_dir


def run_eval(task: TaskConfig, config: RunConfig, show_progress: bool = False) -> EvalRun:
    """Evaluate ``task`` on the server; writes and returns the run (see the module docstring)."""
    samples = load_samples(task)
    if not samples:
        raise TaskConfigError(f"task {task.name}: the dataset {task.dataset_path()} is empty")
    pool = fewshot_pool(task) if task.num_fewshot else []
    out_dir = config.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = run_fingerprint(task, config)
    cached = {} if config.fresh else _load_cached(out_dir, fingerprint)
    _write_json(out_dir / RUN_FILE, _run_info(task, config, fingerprint))
    todo = [s for s in samples if s.index not in cached]
    client = EvalClient(
        config.base_url,
        config.model,
        config.api_key,
        max_retries=config.max_retries,
        max_connections=config.concurrency + 4,
    )
    start = time.perf_counter()
    mode = "w" if config.fresh or not cached else "a"
    records = dict(cached)
    with (
        open(out_dir / SAMPLES_FILE, mode) as log,
        ThreadPoolExecutor(config.concurrency) as pool_executor,
        tqdm(
            total=len(samples),
            initial=len(cached),
            desc=task.name,
            unit="sample",
            disable=not show_progress,
        ) as progress,
    ):
        if mode == "w" and cached:
            log.truncate()
        futures = {
            pool_executor.submit(score_sample, task, s, client, pool, config.seed) for s in todo
        }
        while futures:
            done, futures = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:  # stop: cancel what has not started, keep what finishes, then raise
                for future in futures:
                    future.cancel()
                done |= wait(futures).done
            for future in done:
                if future.cancelled() or future.exception() is not None:
                    continue
                record = future.result()
                record["fingerprint"] = fingerprint
                log.write(json.dumps(record) + "\n")
                log.flush()
                records[record["index"]] = record
                progress.update(1)
            if failed:
                raise failed[0].exception()
    duration = time.perf_counter() - start
    ordered = [records[s.index] for s in samples]
    run = EvalRun(task, config, aggregate(task.type, ordered), ordered, len(cached), duration)
    _write_json(out_dir / RESULTS_FILE, results_dict(run))
    return run


def run_fingerprint(task: TaskConfig, config: RunConfig) -> str:
    """Identifies what a cached record answers: task settings, data, model and seed."""
    task_settings = task.to_dict() | {"path": None, "limit": None, "description": None}
    key = {
        "task": task_settings,
        "data": dataset_sha256(task),
        "model": config.model,
        "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def results_dict(run: EvalRun) -> dict:
    latencies = [r["latency_s"] for r in run.records if "latency_s" in r]
    return {
        "task": run.task.name,
        "type": run.task.type,
        "model": run.config.model,
        "base_url": run.config.base_url,
        "seed": run.config.seed,
        "num_samples": len(run.records),
        "metrics": run.metrics,
        "latency_s": _latency_summary(latencies),
        "duration_s": run.duration_s,
        "concurrency": run.config.concurrency,
        "num_cached": run.num_cached,
        "task_config": run.task.to_dict(),
    }


def load_records(out_dir: Path) -> list[dict]:
    """A finished run's records in dataset order."""
    by_index = {r["index"]: r for r in _read_records(out_dir / SAMPLES_FILE)}
    return [by_index[i] for i in sorted(by_index)]


def _load_cached(out_dir: Path, fingerprint: str) -> dict[int, dict]:
    records = _read_records(out_dir / SAMPLES_FILE)
    if records and all(r.get("fingerprint") != fingerprint for r in records):
        raise TaskConfigError(
            f"{out_dir} holds a run with other settings (task, data, model or seed); "
            "pass --fresh to overwrite it or --out for a new directory"
        )
    return {r["index"]: r for r in records if r.get("fingerprint") == fingerprint}


def _read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short when the previous run was killed: redo that sample
    return records


def _run_info(task: TaskConfig, config: RunConfig, fingerprint: str) -> dict:
    return {
        "task": task.to_dict(),
        "base_url": config.base_url,
        "model": config.model,
        "seed": config.seed,
        "concurrency": config.concurrency,
        "fingerprint": fingerprint,
    }


def _latency_summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    import numpy as np

    return {
        "mean": float(np.mean(latencies)),
        "p50": float(np.percentile(latencies, 50)),
        "p90": float(np.percentile(latencies, 90)),
        "p99": float(np.percentile(latencies, 99)),
    }


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
