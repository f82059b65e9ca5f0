"""Offline batch throughput: ``llmloop batch run`` against ``vllm run-batch`` on the same file.

Both read one OpenAI batch file (``--lines`` chat requests, ``max_tokens`` each with
``ignore_eos``, temperature 0) and write the answers, each starting its own vLLM engine on the
default model with the same dtype, ``--max-num-seqs``, ``--max-model-len`` and CPU thread
settings (``llmloop.hardware.vllm_cpu_thread_env``, which ``llmloop`` applies to itself). Each
tool runs twice: on a one-line file (start-up: loading the model, and for llmloop also the app)
and on the whole file; lines/s = (lines - 1) / (whole - one-line), so start-up does not count.
``llmloop batch run`` runs with ``--no-safety --no-store`` here (the same work as vLLM's tool);
``--with-safety`` adds a run with the safety layer on. Target (issue #14): llmloop >= 0.95x.

  .venv/bin/python benchmarks/batch_run_vs_vllm.py
  .venv/bin/python benchmarks/batch_run_vs_vllm.py --lines 128 --max-tokens 16   # quicker
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cpu_defaults import describe_host  # benchmarks/cpu_defaults.py

from llmloop.hardware import usable_cores, vllm_cpu_thread_env
from llmloop.models import resolve_model

TARGET_RATIO = 0.95
SERVED_NAME = "bench-model"
TOPICS = ("rivers", "owls", "bridges", "comets", "tea", "maps", "bees", "salt")


def write_input(path: Path, lines: int, max_tokens: int) -> None:
    with path.open("w") as f:
        for i in range(lines):
            body = {
                "model": SERVED_NAME,
                "messages": [{"role": "user", "content": f"Three facts about {TOPICS[i % 8]}."}],
                "max_tokens": max_tokens,
                "temperature": 0,
                "ignore_eos": True,
            }
            request = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions"}
            f.write(json.dumps(request | {"body": body}) + "\n")


def commands(tool: str, model_dir: Path, args: argparse.Namespace, inp: Path, out: Path):
    engine = [
        "--max-num-seqs", str(args.max_num_seqs), "--max-model-len", str(args.max_model_len),
        "--dtype", args.dtype,
    ]  # fmt: skip
    if tool == "vllm run-batch":
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.run_batch", "-i", str(inp),
            "-o", str(out), "--model", str(model_dir), "--served-model-name", SERVED_NAME,
            "--enforce-eager", *engine,
        ]  # fmt: skip
    safety = [] if tool.endswith("+ safety") else ["--no-safety"]
    return [
        sys.executable, "-m", "llmloop.cli", "batch", "run", str(inp), "-o", str(out),
        "--model", str(model_dir), "--served-model-name", SERVED_NAME, "--no-store",
        *safety, *engine,
    ]  # fmt: skip


def timed_run(command: list[str], env: dict, out: Path, expected: int, log: Path) -> float:
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    with log.open("w") as f:
        process = subprocess.run(command, env=env, stdout=f, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"{command[:5]} exited {process.returncode}:\n{log.read_text()[-3000:]}")
    answers = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    ok = sum((a.get("response") or {}).get("status_code") == 200 for a in answers)
    if ok != expected:
        raise SystemExit(f"{command[:5]}: {ok} of {expected} lines answered 200 (see {log})")
    return elapsed


def main() -> int:
    args = _parse_args()
    print(describe_host(), flush=True)
    model_dir = resolve_model(args.model)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env |= vllm_cpu_thread_env(os.environ, usable_cores())
    tools = ["vllm run-batch", "llmloop batch run"]
    if args.with_safety:
        tools.append("llmloop batch run + safety")
    results = {}
    with tempfile.TemporaryDirectory(prefix="llmloop-batch-bench-") as tmp:
        tmp_path = Path(tmp)
        env["LLMLOOP_HOME"] = str(tmp_path / "home")
        one, whole = tmp_path / "one.jsonl", tmp_path / "whole.jsonl"
        write_input(one, 1, args.max_tokens)
        write_input(whole, args.lines, args.max_tokens)
        for tool in tools:
            out, log = tmp_path / "out.jsonl", tmp_path / f"{tool.replace(' ', '_')}.log"
            start_s = timed_run(commands(tool, model_dir, args, one, out), env, out, 1, log)
            total_s = timed_run(
                commands(tool, model_dir, args, whole, out), env, out, args.lines, log
            )
            rate = (args.lines - 1) / max(total_s - start_s, 1e-9)
            results[tool] = (start_s, total_s, rate)
            print(f"[{tool}] start-up {start_s:.1f} s, whole {total_s:.1f} s, {rate:.2f} lines/s")
    print(
        f"\n{args.lines} chat lines, max_tokens {args.max_tokens} (ignore_eos), "
        f"--max-num-seqs {args.max_num_seqs}, --dtype {args.dtype}"
    )
    print(f"{'tool':<30}{'one line s':>12}{'whole file s':>14}{'lines/s':>10}{'tok/s':>10}")
    for tool, (start_s, total_s, rate) in results.items():
        print(
            f"{tool:<30}{start_s:>12.1f}{total_s:>14.1f}{rate:>10.2f}{rate * args.max_tokens:>10.0f}"
        )
    ratio = results["llmloop batch run"][2] / results["vllm run-batch"][2]
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"\nllmloop / vllm lines/s: {ratio:.3f}   target >= {TARGET_RATIO}   {verdict}")
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model name or dir")
    parser.add_argument("--lines", type=int, default=256, help="chat requests in the file")
    parser.add_argument("--max-tokens", type=int, default=32, help="output tokens per line")
    parser.add_argument("--max-num-seqs", type=int, default=64, help="both engines' batch")
    parser.add_argument("--max-model-len", type=int, default=1024, help="both engines'")
    parser.add_argument("--dtype", default="bfloat16", help="both engines' (see docs/serving.md)")
    parser.add_argument("--with-safety", action="store_true", help="also llmloop with safety on")
    args = parser.parse_args()
    if args.lines < 2:
        parser.error("--lines must be at least 2")
    return args


if __name__ == "__main__":
    sys.exit(main())
