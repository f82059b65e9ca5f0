"""The CPU defaults ``llmloop serve`` picks from the host, measured on this host's CPU.

``--dtype auto`` (bf16 where the CPU has avx512_bf16 or amx_bf16, else fp32) and, on hosts of
at most 4 cores, no core reserved for vLLM's scheduler, no thread binding and OpenMP threads
that sleep when they wait (see ``llmloop.hardware``). Each variant is one ``llmloop serve --no-safety --no-store`` (the engine
and the serving core), loaded twice: prefill-heavy (long prompts, a few output tokens) and
decode-heavy (short prompts, many output tokens), at the same concurrency. The variants run in
turn, forward then backward (A B C D D C B A ...), so that a machine shared with other work
shows up as spread between a variant's runs rather than as a difference between variants;
the table gives each variant's mean and its ratio to the first variant.

  .venv/bin/python benchmarks/cpu_defaults.py --model DIR        # fp32, bf16, vLLM's threads
  .venv/bin/python benchmarks/cpu_defaults.py --variants fp32 bf16 --rounds 1   # quick
  .venv/bin/python benchmarks/cpu_defaults.py --two-servers      # two servers at once

``--two-servers`` instead starts two servers of each variant at once and loads both with the
decode-heavy load at the same time (the test suite runs two servers at once).
``--torch`` also times what fine-tuning and the safety classifier run in PyTorch (not vLLM),
fp32 against bf16: a forward + backward of the model, and MiniLM embeddings.
"""

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from server_process import free_port, running_server  # benchmarks/server_process.py

from llmloop.evals.bench import BenchConfig, run_benchmark
from llmloop.evals.bench_metrics import BenchResult
from llmloop.hardware import cpu_model_name, read_cpuinfo, usable_cores
from llmloop.models import resolve_model

THREAD_ENV = (
    "VLLM_CPU_OMP_THREADS_BIND",
    "VLLM_CPU_NUM_OF_RESERVED_CPU",
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
)
REPORTED_FLAGS = ("avx512_bf16", "amx_bf16", "avx512f", "avx2")


@dataclass(frozen=True)
class Variant:
    dtype: str
    thread_env: dict[str, str]
    """VLLM_CPU_* settings; {} leaves the choice to llmloop serve."""


VARIANTS = {
    # llmloop's defaults (on a host of at most 4 cores: nobind, none reserved, passive waiting)
    "fp32": Variant("float32", {}),
    "bf16": Variant("bfloat16", {}),
    # vLLM's own default, and llmloop's before: model threads bound to the cores but the last,
    # which is reserved for the scheduler (on 2 cores: one model thread, on core 0)
    "fp32 auto r1": Variant(
        "float32", {"VLLM_CPU_OMP_THREADS_BIND": "auto", "VLLM_CPU_NUM_OF_RESERVED_CPU": "1"}
    ),
    # bound, one thread per core, none reserved
    "fp32 auto r0": Variant(
        "float32", {"VLLM_CPU_OMP_THREADS_BIND": "auto", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    ),
    # unbound, one thread per core that spins before it sleeps (libgomp's default waiting)
    "fp32 spin": Variant("float32", {"GOMP_SPINCOUNT": "300000"}),
    # unbound, one model thread
    "fp32 1t": Variant("float32", {"OMP_NUM_THREADS": "1"}),
    "bf16 1t": Variant("bfloat16", {"OMP_NUM_THREADS": "1"}),
}


@dataclass(frozen=True)
class Workload:
    num_requests: int
    prompt_len: int
    """Words per synthetic prompt (about one token each)."""
    max_tokens: int
    seed: int
    """Different per workload, so that one workload's prompts are no cached prefix of another's."""


WORKLOADS = {
    "prefill": Workload(num_requests=8, prompt_len=800, max_tokens=4, seed=1),
    "decode": Workload(num_requests=16, prompt_len=32, max_tokens=64, seed=2),
}


def main() -> int:
    args = _parse_args()
    for name in THREAD_ENV:  # llmloop's defaults apply only where the user set nothing
        if os.environ.pop(name, None) is not None:
            print(f"ignoring {name} from the environment: each variant sets its own")
    model_dir = resolve_model(args.model)
    print(describe_host(), flush=True)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="llmloop-bench-home-") as home:
        env = {"LLMLOOP_HOME": home}
        if args.two_servers:
            print(bench_two_servers(model_dir, args, env))
        elif not args.skip_serve:
            print(bench_variants(model_dir, args, env))
    if args.torch:
        print(bench_torch(model_dir, args.torch_repeats))
    load_after = os.getloadavg()
    print(f"load average (1 min) before: {load_before[0]:.2f}, after: {load_after[0]:.2f}")
    return 0


def describe_host() -> str:
    cpuinfo = read_cpuinfo()
    flags_line = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    flags = set(flags_line.partition(":")[2].split())
    found = " ".join(flag for flag in REPORTED_FLAGS if flag in flags) or "none of them"
    return (
        f"CPU: {cpu_model_name(cpuinfo)}, {usable_cores()} usable cores\n"
        f"flags ({' '.join(REPORTED_FLAGS)}): {found}"
    )


def bench_variants(model_dir: Path, args: argparse.Namespace, env: dict[str, str]) -> str:
    order = [
        name
        for r in range(args.rounds)
        for name in (args.variants if r % 2 == 0 else args.variants[::-1])
    ]
    runs: dict[tuple[str, str], list[Run]] = {}  # (variant, workload) -> its runs
    for i, name in enumerate(order, 1):
        variant, port = VARIANTS[name], free_port()
        command = _serve_command(model_dir, variant.dtype)(port)
        label = f"{name.replace(' ', '_')}.{i}of{len(order)}"  # also names the server's log file
        with running_server(
            label, command, port, args.startup_timeout, env | variant.thread_env
        ) as server:
            model = httpx.get(f"{server.base_url}/v1/models").json()["data"][0]["id"]
            for workload_name, workload in WORKLOADS.items():
                before = sum(server.cpu_seconds())
                result = run_benchmark(_bench_config(server.base_url, model, workload, args))
                run = Run(result, sum(server.cpu_seconds()) - before)
                runs.setdefault((name, workload_name), []).append(run)
                print(f"[{label}] {workload_name}: {_summary(run)}", flush=True)
    return format_table(runs, args.variants)


def bench_two_servers(model_dir: Path, args: argparse.Namespace, env: dict[str, str]) -> str:
    """Two servers of each variant at once, both loaded with the decode workload at once."""
    order = [
        name
        for r in range(args.rounds)
        for name in (args.variants if r % 2 == 0 else args.variants[::-1])
    ]
    lines = ["two servers at once, both loaded with the decode workload at the same time"]
    for i, name in enumerate(order, 1):
        variant = VARIANTS[name]
        with contextlib.ExitStack() as stack:
            servers = []
            for j in range(2):
                port = free_port()
                command = _serve_command(model_dir, variant.dtype)(port)
                label = f"{name.replace(' ', '_')}.{i}of{len(order)}.server{j + 1}"
                server = running_server(
                    label, command, port, args.startup_timeout, env | variant.thread_env
                )
                servers.append(stack.enter_context(server))
            model = httpx.get(f"{servers[0].base_url}/v1/models").json()["data"][0]["id"]
            configs = [_bench_config(s.base_url, model, WORKLOADS["decode"], args) for s in servers]
            before = sum(sum(s.cpu_seconds()) for s in servers)
            with ThreadPoolExecutor(len(configs)) as pool:
                results = list(pool.map(run_benchmark, configs))
            cpu_s = sum(sum(s.cpu_seconds()) for s in servers) - before
        total = sum(r.output_throughput for r in results)
        each = " + ".join(f"{r.output_throughput:.1f}" for r in results)
        e2e = " / ".join(f"{r.e2el.percentiles_ms['p50']:.0f}" for r in results)
        lines.append(
            f"{name:<14} output {total:6.1f} tok/s ({each}), E2E p50 {e2e} ms, "
            f"{cpu_s:.1f} CPU s  [run {i}]"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Run:
    result: BenchResult
    cpu_s: float
    """CPU seconds the server and its engine processes took for the workload: unlike latency
    and throughput, barely changed by other work sharing the cores."""


def format_table(runs: dict[tuple[str, str], list[Run]], variants: list[str]) -> str:
    """Per workload and variant: the mean over its runs, each run's tok/s, and the ratios of
    the mean output throughput and CPU seconds to the first variant's."""
    header = (
        f"{'workload':<9}{'variant':<14}{'output tok/s':>13}{'ratio':>7}"
        f"{'TTFT p50 ms':>13}{'E2E p50 ms':>12}{'CPU s':>8}{'ratio':>7}"
        "   tok/s of each run"
    )
    lines = [header, "-" * len(header)]
    for workload in WORKLOADS:
        base = runs[(variants[0], workload)]
        base_tok_s = _mean(base, lambda r: r.result.output_throughput)
        base_cpu_s = _mean(base, lambda r: r.cpu_s)
        for name in variants:
            results = runs[(name, workload)]
            tok_s = _mean(results, lambda r: r.result.output_throughput)
            ttft = _mean(results, lambda r: r.result.ttft.percentiles_ms["p50"])
            e2e = _mean(results, lambda r: r.result.e2el.percentiles_ms["p50"])
            cpu_s = _mean(results, lambda r: r.cpu_s)
            each = ", ".join(f"{r.result.output_throughput:.1f}" for r in results)
            lines.append(
                f"{workload:<9}{name:<14}{tok_s:>13.1f}{tok_s / base_tok_s:>7.2f}"
                f"{ttft:>13.0f}{e2e:>12.0f}{cpu_s:>8.1f}{cpu_s / base_cpu_s:>7.2f}   {each}"
            )
    return "\n".join(lines)


def bench_torch(model_dir: Path, repeats: int) -> str:
    """Median CPU seconds per call, fp32 and bf16, alternated, on one thread: a forward +
    backward of the model (a fine-tuning step without the optimizer; bf16 as ``finetune
    --mixed-precision bf16`` runs it: bf16 weights under autocast) and 32 MiniLM embeddings (the
    harm classifier's encoder, on one thread as the server runs it). One thread and CPU time,
    because on a shared machine several threads and wall time measure the other work."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForCausalLM

    from llmloop.models import embedder_dir

    torch.set_num_threads(1)
    dtypes = (torch.float32, torch.bfloat16)
    lm = {dtype: AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype) for dtype in dtypes}
    input_ids = torch.randint(100, 10_000, (2, 128))  # [batch, seq]

    def train_step(dtype: torch.dtype) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = lm[dtype](input_ids=input_ids, labels=input_ids).loss
        loss.backward()

    encoder = {
        dtype: SentenceTransformer(str(embedder_dir()), device="cpu").to(dtype) for dtype in dtypes
    }
    texts = [f"{i}: how do I reset the password of my account on the website" for i in range(32)]

    def embed(dtype: torch.dtype) -> None:
        with torch.inference_mode():
            encoder[dtype].encode(texts, batch_size=32, show_progress_bar=False)

    lines = [f"PyTorch {torch.__version__}, 1 thread, median CPU s per call ({repeats} calls)"]
    for label, call in (
        ("model forward+backward, batch 2x128 tokens", train_step),
        ("MiniLM embeddings, 32 texts", embed),
    ):
        times: dict[torch.dtype, list[float]] = {dtype: [] for dtype in dtypes}
        call(torch.float32), call(torch.bfloat16)  # warm-up: allocation, oneDNN kernel choice
        for r in range(repeats):
            for dtype in dtypes[:: 1 if r % 2 == 0 else -1]:
                start = time.process_time()
                call(dtype)
                times[dtype].append(time.process_time() - start)
        fp32, bf16 = (statistics.median(times[dtype]) for dtype in dtypes)
        lines.append(
            f"  {label:<44} fp32 {fp32:7.3f}  bf16 {bf16:7.3f}  fp32/bf16 {fp32 / bf16:.2f}"
        )
    return "\n".join(lines)


def _serve_command(model_dir: Path, dtype: str):
    def command(port: int) -> list[str]:
        return [
            sys.executable, "-m", "llmloop.cli", "serve", "--model", str(model_dir),
            "--dtype", dtype, "--no-safety", "--no-store", "--port", str(port),
        ]  # fmt: skip

    return command


def _bench_config(
    base_url: str, model: str, workload: Workload, args: argparse.Namespace
) -> BenchConfig:
    return BenchConfig(
        base_url,
        model,
        concurrency=args.concurrency,
        num_requests=args.num_requests or workload.num_requests,
        max_tokens=workload.max_tokens,
        prompt_len=workload.prompt_len,
        ignore_eos=True,
        seed=workload.seed,
    )


def _summary(run: Run) -> str:
    result = run.result
    return (
        f"{result.completed}/{result.completed + result.failed} ok, "
        f"{result.output_throughput:.1f} tok/s, TTFT p50 {result.ttft.percentiles_ms['p50']:.0f} "
        f"ms, E2E p50 {result.e2el.percentiles_ms['p50']:.0f} ms, {run.cpu_s:.1f} CPU s"
    )


def _mean(results: list, value) -> float:
    return statistics.fmean(value(r) for r in results)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model name or dir")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=["fp32", "bf16", "fp32 auto r1"],
        help="which servers to compare; the first is the ratios' base",
    )
    parser.add_argument("--rounds", type=int, default=2, help="runs per variant, in turn")
    parser.add_argument(
        "--num-requests", type=int, help="per workload and run (default: 8 prefill, 16 decode)"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--startup-timeout", type=float, default=600, help="seconds per server")
    parser.add_argument("--skip-serve", action="store_true", help="only --torch")
    parser.add_argument("--two-servers", action="store_true", help="see above")
    parser.add_argument("--torch", action="store_true", help="also time PyTorch fp32 vs bf16")
    parser.add_argument("--torch-repeats", type=int, default=5)
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
