"""``llmloop eval run|compare|list``: evaluate a model behind an OpenAI-compatible server."""

import argparse
import re
import sys
from dataclasses import fields
from pathlib import Path

from llmloop.config_flags import add_field_flags
from llmloop.evals.compare import Gate, check_release, compare_runs, format_table, load_run
from llmloop.evals.report import write_report
from llmloop.evals.runner import RunConfig, results_dict, run_eval
from llmloop.evals.tasks import builtin_task_names, load_task
from llmloop.paths import runs_dir

# RunConfig fields without a flag of their own (tests/evals/test_cli_flags.py holds the others)
FIELDS_WITHOUT_FLAG = {"out_dir": "--out, whose default depends on TASK and --model"}


def main(argv: list[str]) -> int:
    args = _build_parser().parse_args(argv)
    return args.handler(args)


def run_command(args: argparse.Namespace) -> int:
    task = load_task(args.task, limit=args.limit)
    out_dir = Path(args.out) if args.out else default_run_dir(task.name, args.model)
    config = RunConfig(
        **{
            f.name: getattr(args, f.name)
            for f in fields(RunConfig)
            if f.name not in FIELDS_WITHOUT_FLAG
        },
        out_dir=out_dir,
    )
    run = run_eval(task, config, show_progress=sys.stderr.isatty())
    md_path, html_path = write_report(results_dict(run), run.records, out_dir)
    if run.num_cached:
        print(f"reused {run.num_cached} cached samples from {out_dir} (--fresh to redo them)")
    print(
        f"{task.name} ({task.type}) on {config.model}: {len(run.records)} samples, "
        f"{run.duration_s:.1f} s"
    )
    for name, value in run.metrics.items():
        print(f"  {name:<22} {value:.4f}")
    print(f"results: {out_dir / 'results.json'}\nreport:  {md_path}  {html_path}")
    return 0


def compare_command(args: argparse.Namespace) -> int:
    runs = [load_run(Path(d)) for d in args.run_dirs]
    gates = [Gate.parse(spec) for spec in args.gate]
    print(format_table(runs, compare_runs(runs, args.num_resamples)))
    failures = check_release(runs, gates, args.max_drop)
    for failure in failures:
        print(f"FAIL {failure}")
    if (gates or args.max_drop is not None) and not failures:
        print("PASS every release criterion")
    return 1 if failures else 0


def list_command(args: argparse.Namespace) -> int:
    for name in builtin_task_names():
        task = load_task(name)
        print(f"{name:<20} {task.type:<16} {task.description}")
    return 0


def default_run_dir(task_name: str, model: str) -> Path:
    """Stable per task and model, so re-running resumes: ``$LLMLOOP_HOME/runs/evals/...``."""
    safe_model = re.sub(r"[^\w.-]+", "_", model).strip("_")
    return runs_dir() / "evals" / f"{task_name}--{safe_model}"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmloop eval",
        description="Evaluate a model behind an OpenAI-compatible server (llmloop serve, vLLM) "
        "on a task, and compare runs before promoting an adapter.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="Evaluate one task against a running server.",
        description="Send every sample of TASK to the server, score it, and write results.json, "
        "samples.jsonl and a Markdown + HTML report into the run directory. Re-running into the "
        "same directory reuses finished samples (resume). Example: llmloop eval run capitals "
        "--base-url http://127.0.0.1:8000 --model smollm2-135m-instruct",
    )
    run.add_argument(
        "task",
        metavar="TASK",
        help=f"task YAML file, or a built-in task name ({', '.join(builtin_task_names())})",
    )
    add_field_flags(run, RunConfig, "base_url", "model")
    run.add_argument(
        "--out",
        metavar="DIR",
        help="Run directory (default: "
        "$LLMLOOP_HOME/runs/evals/TASK--MODEL); an unfinished run there resumes.",
    )
    add_field_flags(run, RunConfig, "api_key", "concurrency", "seed", "max_retries")
    run.add_argument("--limit", type=int, help="Evaluate only the first N samples.")
    add_field_flags(run, RunConfig, "fresh")
    run.set_defaults(handler=run_command)

    compare = sub.add_parser(
        "compare",
        help="Compare runs side by side; gate a release.",
        description="Print the runs' metrics side by side, each later run's delta against the "
        "first (the baseline) with a 95%% bootstrap confidence interval. With --gate or "
        "--max-drop, exit 1 when a criterion fails, e.g. in CI before promoting an adapter: "
        "llmloop eval compare runs/base runs/adapter --gate 'acc>=0.3' --max-drop 0.02",
    )
    compare.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="Run directories; the first is the baseline."
    )
    compare.add_argument(
        "--gate",
        action="append",
        default=[],
        metavar="'METRIC>=VALUE'",
        help="A criterion every run after the baseline must meet (repeatable; "
        "operators >= <= > < ==).",
    )
    compare.add_argument(
        "--max-drop",
        type=float,
        metavar="X",
        help="Fail when any metric is "
        "worse than the baseline's by more than X (perplexities: higher is worse).",
    )
    compare.add_argument(
        "--num-resamples",
        type=int,
        default=1000,
        help="Bootstrap resamples for the confidence intervals.",
    )
    compare.set_defaults(handler=compare_command)

    listing = sub.add_parser(
        "list", help="List the built-in tasks.", description="List the tasks shipped with llmloop."
    )
    listing.set_defaults(handler=list_command)
    return parser
