"""Our server against plain vLLM's and a plain transformers ``generate`` loop, same model, same load.

Runs, one after the other (never two at once: the engines would share the CPU cores):
  1. vLLM's own OpenAI server: ``python -m vllm.entrypoints.openai.api_server``;
  2. ``llmloop serve``;
  3. transformers ``model.generate`` on batches of ``--concurrency`` prompts;
and prints one table with the serving metrics of both servers (``llmloop bench serve``, i.e.
vLLM's definitions) and the ratios the project targets:
  ours / vLLM output-token throughput >= 0.95; ours - vLLM TTFT p50 <= 15 ms;
  ours / transformers output-token throughput >= 2.5.

  .venv/bin/python benchmarks/serve_vs_vllm.py                    # 64 requests, concurrency 16
  .venv/bin/python benchmarks/serve_vs_vllm.py --num-requests 8   # a quick smoke run

The overheads (``--with-overheads``) are differences of a few percent between servers run one
after the other, and from one server start to the next the same server varies by about as much
on this machine. ``--rounds N`` runs the llmloop variants N times, forward and backward in
turn (A B C C B A ...), and compares the mean E2E p50 of each variant's runs. The table also
shows each server's CPU seconds (its own process, and vLLM's engine processes): the frontend
CPU a layer adds is its cost with far less noise than latency.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
from server_process import free_port, running_server  # benchmarks/server_process.py

from llmloop.evals.bench import BenchConfig, run_benchmark, synthetic_prompts
from llmloop.evals.bench_metrics import BenchResult
from llmloop.models import resolve_model

TARGETS = {
    "throughput_vs_vllm": 0.95,
    "ttft_p50_delta_ms": 15.0,
    "throughput_vs_transformers": 2.5,
    "logging_overhead": 0.03,
    "safety_overhead": 0.05,
}
# "llmloop" is the serving core compared with plain vLLM; the others add the request log and
# then the safety filter, so the table shows what each layer costs (E2E latency p50).
LLMLOOP_VARIANTS = {
    "llmloop": ["--no-safety", "--no-store"],
    "+log": ["--no-safety"],
    "+log+safety": [],
}


def main() -> int:
    args = _parse_args()
    model_dir = resolve_model(args.model)
    config = dict(
        concurrency=args.concurrency,
        num_requests=args.num_requests,
        max_tokens=args.max_tokens,
        prompt_len=args.prompt_len,
        ignore_eos=True,
        seed=args.seed,
        prompts=args.prompts,
    )
    results: dict[str, BenchResult] = {}  # column name -> result; "+log (2)": the 2nd run
    cpu: dict[str, tuple[float, float]] = {}  # column name -> (server, engine) CPU seconds
    if not args.skip_vllm:
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--dtype", "bfloat16", "--enforce-eager", "--host", "127.0.0.1",
        ]  # fmt: skip
        results["vllm"], cpu["vllm"] = bench_server("vllm", command, config, args)
    if not args.skip_llmloop:
        base = [sys.executable, "-m", "llmloop.cli", "serve", "--model", str(model_dir)]
        variants = list(LLMLOOP_VARIANTS) if args.with_overheads else ["llmloop"]
        runs = [n for r in range(args.rounds) for n in (variants if r % 2 == 0 else variants[::-1])]
        with tempfile.TemporaryDirectory(prefix="llmloop-bench-home-") as home:  # the log's db
            for name in runs:
                count = sum(_run_of(column) == name for column in results)
                column = f"{name} ({count + 1})" if count else name
                command = [*base, *LLMLOOP_VARIANTS[name]]
                results[column], cpu[column] = bench_server(
                    column, command, config, args, {"LLMLOOP_HOME": home}
                )
    transformers_tok_s = None
    if not args.skip_transformers:
        transformers_tok_s = bench_transformers(model_dir, config, args.transformers_dtype)
    print(format_comparison(results, cpu, transformers_tok_s))
    if args.result_json:
        summary = {
            name: r.to_dict() | {"server_cpu_s": cpu[name][0], "engine_cpu_s": cpu[name][1]}
            for name, r in results.items()
        }
        summary["transformers_output_throughput"] = transformers_tok_s
        Path(args.result_json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def bench_server(
    name: str, command: list[str], config: dict, args: argparse.Namespace, env: dict | None = None
) -> tuple[BenchResult, tuple[float, float]]:
    """Start one server on a free port, benchmark it, stop it: the result and the (server,
    engine) CPU seconds the benchmark took."""
    port = free_port()
    # vLLM's CPU backend otherwise reserves 92% of RAM and refuses to start on a shared machine;
    # both servers get the same KV-cache budget.
    kv_cache_gib = os.environ.get("VLLM_CPU_KVCACHE_SPACE", str(args.kv_cache_gib))
    env = {"VLLM_CPU_KVCACHE_SPACE": kv_cache_gib} | (env or {})
    command = [*command, "--port", str(port)]
    with running_server(name, command, port, args.startup_timeout, env) as server:
        model = httpx.get(f"{server.base_url}/v1/models").json()["data"][0]["id"]
        print(f"[{name}] benchmarking model {model!r} at {server.base_url}", flush=True)
        before = server.cpu_seconds()
        result = run_benchmark(BenchConfig(server.base_url, model, **config), show_progress=True)
        after = server.cpu_seconds()
        return result, (after[0] - before[0], after[1] - before[1])


def bench_transformers(model_dir: Path, config: dict, dtype: str) -> float:
    """Output tokens per second of ``model.generate`` on batches of ``concurrency`` chat prompts.

    float32 by default: PyTorch's CPU bf16 matmuls are many times slower than fp32 on CPUs
    without AMX, so a bf16 baseline would flatter the servers.
    """
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    prompts = synthetic_prompts(config["num_requests"], config["prompt_len"], config["seed"])
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]
    batch_size, max_tokens = config["concurrency"], config["max_tokens"]
    num_generated, start = 0, time.perf_counter()
    for i in tqdm(range(0, len(texts), batch_size), desc="transformers", unit="batch"):
        batch = tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True)
        with torch.inference_mode():
            output_ids = model.generate(
                **batch,
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,  # the servers run with ignore_eos
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        num_generated += (output_ids.shape[1] - batch["input_ids"].shape[1]) * len(output_ids)
    return num_generated / (time.perf_counter() - start)


def format_comparison(
    results: dict[str, BenchResult],
    cpu: dict[str, tuple[float, float]],
    transformers_tok_s: float | None,
) -> str:
    names = list(results)
    rows = [
        ("requests completed", lambda r: f"{r.completed}/{r.completed + r.failed}"),
        ("duration (s)", lambda r: f"{r.duration_s:.2f}"),
        ("request throughput (req/s)", lambda r: f"{r.request_throughput:.2f}"),
        ("output throughput (tok/s)", lambda r: f"{r.output_throughput:.1f}"),
        ("total token throughput (tok/s)", lambda r: f"{r.total_token_throughput:.1f}"),
    ]
    for metric in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "p50", "p90", "p99"):
            rows.append((f"{metric.upper()} {stat} (ms)", _stat_getter(metric, stat)))
    lines = [f"{'metric':<32}" + "".join(f"{n:>17}" for n in names)] if names else []
    if names:
        lines += [
            f"{label:<32}" + "".join(f"{get(results[n]):>17}" for n in names) for label, get in rows
        ]
        for label, i in (("server process CPU (s)", 0), ("engine processes CPU (s)", 1)):
            lines.append(f"{label:<32}" + "".join(f"{cpu[n][i]:>17.1f}" for n in names))
    if transformers_tok_s is not None:
        lines.append(f"{'transformers generate (tok/s)':<32}{transformers_tok_s:>14.1f}")
    lines.append("")
    ours, vllm = results.get("llmloop"), results.get("vllm")
    if ours and vllm:
        ratio = ours.output_throughput / vllm.output_throughput
        delta = ours.ttft.percentiles_ms["p50"] - vllm.ttft.percentiles_ms["p50"]
        lines.append(_verdict("throughput ours / vLLM", ratio, ">=", TARGETS["throughput_vs_vllm"]))
        lines.append(
            _verdict("TTFT p50 ours - vLLM (ms)", delta, "<=", TARGETS["ttft_p50_delta_ms"])
        )
    layers = (("logging", "llmloop", "+log"), ("safety", "+log", "+log+safety"))
    for layer, without, with_ in layers:
        if (base := _mean(results, without, _e2e_p50)) and (
            added := _mean(results, with_, _e2e_p50)
        ):
            target = TARGETS[f"{layer}_overhead"]
            lines.append(_verdict(f"E2E p50 overhead of {layer}", added / base - 1, "<=", target))
            server_cpu = _mean(cpu, with_, lambda c: c[0]) - _mean(cpu, without, lambda c: c[0])
            total_cpu = _mean(cpu, with_, sum)
            lines.append(
                f"{'  its server CPU (s), share':<32}{server_cpu:>10.1f}   "
                f"{server_cpu / total_cpu:.1%} of all the CPU the run took"
            )
    if ours and transformers_tok_s:
        ratio = ours.output_throughput / transformers_tok_s
        target = TARGETS["throughput_vs_transformers"]
        lines.append(_verdict("throughput ours / transformers", ratio, ">=", target))
    return "\n".join(lines)


def _run_of(column: str) -> str:
    """The variant a column shows: "+log (2)" -> "+log"."""
    return column.rsplit(" (", 1)[0] if column.endswith(")") else column


def _mean(by_column: dict, name: str, value) -> float | None:
    """The mean of ``value(x)`` over the runs of variant ``name`` (None when it did not run)."""
    values = [value(x) for column, x in by_column.items() if _run_of(column) == name]
    return sum(values) / len(values) if values else None


def _e2e_p50(result: BenchResult) -> float:
    return result.e2el.percentiles_ms["p50"]


def _stat_getter(metric: str, stat: str):
    def get(result: BenchResult) -> str:
        stats = getattr(result, metric)
        value = stats.mean_ms if stat == "mean" else stats.percentiles_ms[stat]
        return f"{value:.2f}"

    return get


def _verdict(label: str, value: float, op: str, target: float) -> str:
    passed = value >= target if op == ">=" else value <= target
    return f"{label:<32}{value:>10.3f}   target {op} {target:g}   {'PASS' if passed else 'FAIL'}"


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model name or dir")
    parser.add_argument("--num-requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128, help="output tokens per request")
    parser.add_argument("--prompt-len", type=int, default=128, help="words per synthetic prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--prompts",
        help='JSONL of {"prompt": ...} instead of synthetic word salad (e.g. '
        "benchmarks/data/benign_prompts.jsonl, which the safety filter lets through)",
    )
    parser.add_argument(
        "--kv-cache-gib", type=int, default=2, help="KV cache per server (VLLM_CPU_KVCACHE_SPACE)"
    )
    parser.add_argument("--startup-timeout", type=float, default=600, help="seconds per server")
    parser.add_argument("--transformers-dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--skip-vllm", action="store_true", help="do not run plain vLLM")
    parser.add_argument("--skip-llmloop", action="store_true", help="do not run llmloop serve")
    parser.add_argument("--skip-transformers", action="store_true", help="no generate baseline")
    parser.add_argument(
        "--with-overheads",
        action="store_true",
        help="also run llmloop with the request log, then with log + safety filter (their cost)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the llmloop variants this many times, forward and backward in turn, and "
        "compare the means (server starts vary by a few percent)",
    )
    parser.add_argument("--result-json", help="also write every figure to this JSON file")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
