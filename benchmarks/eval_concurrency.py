"""How much an eval gains from the server's batching: the same generation task run with one
request in flight, then with ``--concurrency`` in flight.

    .venv/bin/python benchmarks/eval_concurrency.py                  # starts `llmloop serve`
    .venv/bin/python benchmarks/eval_concurrency.py --base-url URL --model NAME

The task is the built-in ``capitals`` questions cycled to ``--num-samples`` (500) and numbered,
so no two prompts are the same. The server started here is a default deployment (safety
filter and request log on). Prints the two runs, the speed-up (target >= 4x) and whether the
greedy answers agree.
"""

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx
from server_process import free_port, running_server  # benchmarks/server_process.py

from llmloop.evals.runner import RunConfig, run_eval
from llmloop.evals.tasks import load_task, read_jsonl
from llmloop.models import resolve_model

TARGET_SPEEDUP = 4.0


def main() -> int:
    args = _parse_args()
    with tempfile.TemporaryDirectory(prefix="llmloop-eval-speed-") as tmp:
        task = numbered_task(Path(tmp), args.num_samples)
        if args.base_url:
            runs = compare(task, args.base_url, args.model, args, Path(tmp))
        else:
            port = free_port()
            command = [
                sys.executable, "-m", "llmloop.cli", "serve", "--model",
                str(resolve_model(args.model)), "--port", str(port),
            ]  # fmt: skip
            env = {"LLMLOOP_HOME": tmp}
            with running_server("llmloop", command, port, args.startup_timeout, env) as server:
                model = httpx.get(f"{server.base_url}/v1/models").json()["data"][0]["id"]
                runs = compare(task, server.base_url, model, args, Path(tmp))
    print(format_table(runs, args.concurrency))
    return 0


def numbered_task(tmp: Path, num_samples: int):
    """The capitals task over ``num_samples`` rows: the questions cycled, each numbered."""
    capitals = load_task("capitals")
    rows = read_jsonl(capitals.dataset_path())
    dataset = tmp / "capitals_numbered.jsonl"
    with dataset.open("w") as f:
        for i in range(num_samples):
            row = rows[i % len(rows)]
            f.write(json.dumps({**row, "id": f"q{i}", "number": i + 1}) + "\n")
    return replace(
        capitals,
        name=f"capitals{num_samples}",
        dataset=str(dataset),
        prompt=f"Question {{number}}. {capitals.prompt}",
    )


def compare(task, base_url: str, model: str, args, tmp: Path) -> dict[int, dict]:
    """concurrency -> {samples, wall_s, metrics, answers} for 1 and ``args.concurrency``."""
    runs = {}
    for concurrency in (1, args.concurrency):
        config = RunConfig(
            base_url, model, out_dir=tmp / f"run-c{concurrency}", concurrency=concurrency
        )
        start = time.perf_counter()
        run = run_eval(task, config, show_progress=True)
        runs[concurrency] = {
            "samples": len(run.records),
            "wall_s": time.perf_counter() - start,
            "metrics": run.metrics,
            "answers": [r.get("response") for r in run.records],
        }
    return runs


def format_table(runs: dict[int, dict], concurrency: int) -> str:
    lines = [
        f"{'concurrency':>11} {'samples':>8} {'wall (s)':>9} {'samples/s':>10} "
        f"{'exact_match':>12} {'contains':>9}"
    ]
    for c, run in runs.items():
        rate = run["samples"] / run["wall_s"]
        lines.append(
            f"{c:>11} {run['samples']:>8} {run['wall_s']:>9.1f} {rate:>10.2f} "
            f"{run['metrics'].get('exact_match', 0):>12.3f} {run['metrics'].get('contains', 0):>9.3f}"
        )
    sequential, batched = runs[1], runs[concurrency]
    speedup = (batched["samples"] / batched["wall_s"]) / (
        sequential["samples"] / sequential["wall_s"]
    )
    same = sum(a == b for a, b in zip(sequential["answers"], batched["answers"], strict=True))
    verdict = "PASS" if speedup >= TARGET_SPEEDUP else "FAIL"
    lines += [
        "",
        f"speed-up concurrency {concurrency} / 1: {speedup:.2f}x   target >= {TARGET_SPEEDUP:g}x   "
        f"{verdict}",
        f"identical answers: {same}/{len(sequential['answers'])}",
    ]
    return "\n".join(lines)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="a running server (default: start `llmloop serve`)")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model name or dir")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--startup-timeout", type=float, default=600, help="seconds")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
