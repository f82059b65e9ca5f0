"""``llmloop loop ROUTE``: one turn of the loop for a route, each step printed with its artifact.

1. feedback: corrections and preferences given to the route's completions since the last loop
   (its ``loop`` event) or ``--since``;
2. export: ``sft.jsonl`` and ``dpo.jsonl`` (``llmloop feedback export``'s rows) into the run dir;
3. fine-tune: SFT on the base model of the route's primary version, registered as ``ROUTE@N``;
4. gate: the candidate and the primary version answer the same eval tasks on the running server
   (``--eval`` tasks and one built from the corrections); ``eval compare``'s criteria decide;
5. canary: the candidate serves ``--canary-weight`` % of the route's users.

A failed gate stops before the canary: the registry keeps the version, nothing routes to it, and
no ``loop`` event is written, so the next run learns from the same feedback again.
"""

import argparse
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml
from sqlalchemy.exc import OperationalError

from llmloop import registry
from llmloop.errors import LLMLoopError
from llmloop.evals.compare import Gate, Run, check_release, compare_runs, format_table, load_run
from llmloop.evals.runner import RunConfig, run_eval
from llmloop.evals.tasks import TaskConfig, load_task
from llmloop.feedback.db import redact_url
from llmloop.feedback.errors import EmptyExportError
from llmloop.feedback.export import export
from llmloop.feedback.record import prompt_messages
from llmloop.feedback.routes import Canary, Route, RouteStore, Thresholds, parse_ref
from llmloop.feedback.store import ConversationFilter, FeedbackStore, parse_time
from llmloop.paths import DB_FLAG_HELP, db_url, runs_dir

NUM_STEPS = 5
NUM_RESAMPLES = 1000
"""How a ``loop`` event's reason starts: the time its feedback was read, the next run's start
(the event itself is written minutes later, after training and the gate)."""
EPILOG = """examples:
  llmloop loop support                          # everything new since the last loop
  llmloop loop support --dry-run                # show what is new and export it, then stop
  llmloop loop support --since 2025-01-01 --eval capitals --max-drop 0.02 --gate 'contains>=0.5'
  llmloop loop support --config recipe.yaml --canary-weight 5 --min-requests 200
Then: llmloop deploy status support (watch the canary), llmloop deploy promote|rollback support.
The server at --base-url must share the log database (--db) and $LLMLOOP_HOME's registry, and
run with --enable-lora; --api-key must be an admin key (it loads the candidate for the gate)."""


def main(argv: list[str]) -> int:
    return run_loop(build_parser().parse_args(argv))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmloop loop",
        description="Run the loop once for ROUTE: new feedback -> SFT/DPO export -> fine-tune -> "
        "eval gate against the route's current version -> canary. Exits 1 when the gate fails "
        "(each failure printed), 0 with nothing to do when there is no new feedback.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("route", metavar="ROUTE", help="The route to improve (`deploy status`).")
    parser.add_argument(
        "--since",
        help="Feedback given at or after this time (YYYY-MM-DD or ISO, UTC); default: since "
        "the route's last loop, else all of it.",
    )
    parser.add_argument(
        "--include-infer-feedback",
        action="store_true",
        help="Also learn from feedback that infer keys gave their own answers (by default only "
        "labellers' feedback trains: keys with the label or admin scope, the operator's key, or "
        "a server without keys), e.g. when the route's users are trusted.",
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="The server.")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LLMLOOP_API_KEY"),
        help="An admin key of the server (default: $LLMLOOP_API_KEY).",
    )
    parser.add_argument(
        "--eval",
        action="append",
        default=[],
        metavar="TASK",
        help="An eval task (YAML file or built-in name) the candidate must not do worse on; "
        "repeatable. A task built from the corrections always runs too.",
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        default=0.02,
        metavar="X",
        help="Fail when any metric of any task drops by more than X (default: %(default)s).",
    )
    parser.add_argument(
        "--gate",
        action="append",
        default=[],
        metavar="'METRIC>=VALUE'",
        help="A criterion the candidate must meet on every task reporting METRIC (repeatable).",
    )
    parser.add_argument(
        "--canary-weight",
        type=float,
        default=10.0,
        metavar="PCT",
        help="Percent of the route's users the canary serves (default: %(default)s).",
    )
    parser.add_argument(
        "--min-requests",
        type=int,
        default=Thresholds.min_requests,
        metavar="N",
        help="The canary's requests before its health is judged (default: %(default)s).",
    )
    parser.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="Run dir (default: $LLMLOOP_HOME/runs/loop-ROUTE-<UTC time>).",
    )
    parser.add_argument(
        "--config",
        metavar="RECIPE.yaml",
        help="Fine-tune recipe (`llmloop finetune sft --help`); the base model, data, output "
        "and artifact name come from the loop.",
    )
    parser.add_argument(
        "--db",
        help=DB_FLAG_HELP,
    )
    parser.add_argument("--dry-run", action="store_true", help="Stop after the export.")
    return parser


def run_loop(args: argparse.Namespace) -> int:
    url = db_url(args.db)
    store = FeedbackStore(url)
    try:
        return _run(args, store, RouteStore(store.engine))
    except OperationalError as e:
        raise LLMLoopError(
            f"cannot read the log at {redact_url(url)} ({str(e.orig).strip()}); check --db"
        ) from e
    finally:
        store.close()


def _run(args: argparse.Namespace, store: FeedbackStore, routes: RouteStore) -> int:
    store.migrate()
    route = routes.require(args.route)
    gates = [Gate.parse(spec) for spec in args.gate]
    tasks = [load_task(name) for name in args.eval]
    cutoff = time.time()

    since, since_text = feedback_since(routes, route.name, args.since)
    filters = ConversationFilter(
        route=route.name, labelled_since=since, labellers_only=not args.include_infer_feedback
    )
    news = read_news(store, filters)
    who = "from every key" if args.include_infer_feedback else "from labellers"
    step(1, "feedback", f"{route.name} since {since_text}, {who}")
    print(
        f"      {len(news.corrections)} corrections, {news.num_preferences} preferences, "
        f"{news.num_upvoted} answers rated +1"
    )
    if not news.corrections and not news.num_preferences and not news.num_upvoted:
        print(f"nothing new to learn since {since_text}")
        return 0

    run_dir = args.output or default_run_dir(route.name, cutoff)
    step(2, "export", str(run_dir))
    data = export_data(store, filters, run_dir)
    if args.dry_run:
        print("--dry-run: stopping after the export")
        return 0
    if not data.num_sft:
        print("no SFT rows (corrections or answers rated +1): nothing to fine-tune on")
        return 0

    base = base_model(route)
    step(3, "fine-tune", f"SFT on {base}, registered as {route.name}")
    if data.num_dpo:
        print(
            f"      {data.num_dpo} preference pairs kept in {data.dpo_path} for later: "
            "`llmloop finetune dpo` starts from the base model, not from this SFT adapter"
        )
    artifact = train_adapter(base, data.sft_path, run_dir / "adapter", route.name, args.config)
    candidate = f"{artifact.name}@{artifact.version}"
    print(f"      artifact {artifact.path} -> {candidate}")

    tasks.append(corrections_task(news.corrections, run_dir / "gate"))
    step(4, "gate", f"{candidate} against {route.primary} on {', '.join(t.name for t in tasks)}")
    failures, summary = run_gate(args, tasks, gates, route.primary, candidate, run_dir / "gate")
    if failures:
        for failure in failures:
            print(f"FAIL {failure}")
        print(
            f"gate failed: {candidate} stays in the registry, nothing routes to it "
            f"({len(failures)} failure(s) above)"
        )
        return 1

    step(5, "canary", f"{candidate} at {args.canary_weight:g}% of {route.name}'s users")
    thresholds = Thresholds(min_requests=args.min_requests)
    canary = Canary(
        candidate, weight=args.canary_weight, started=time.time(), thresholds=thresholds
    )
    if routes.start_canary(route.name, canary, "loop", expected_revision=route.revision) is None:
        raise LLMLoopError(
            f"route {route.name!r} changed while the loop ran (`llmloop deploy status "
            f"{route.name}`); {candidate} passed the gate against {route.primary} and stays "
            "registered: start its canary with `llmloop deploy canary` if it still applies"
        )
    reason = (
        f"{len(news.corrections)} corrections, "
        f"{news.num_preferences} preferences, {news.num_upvoted} rated +1; "
        f"{data.num_sft} SFT rows; {candidate} ({artifact.path}); gate: {summary}"
    )
    routes.record(route.name, "loop", "loop", reason, detail={"feedback_until": cutoff})
    print(
        f"canary {candidate} at {args.canary_weight:g}% of users; "
        f"watch it with llmloop deploy status {route.name}"
    )
    return 0


def step(number: int, name: str, what: str) -> None:
    print(f"[{number}/{NUM_STEPS}] {name}: {what}", flush=True)


# -- 1. feedback ------------------------------------------------------------------------------


@dataclass(frozen=True)
class News:
    corrections: list[dict]
    """``{"id", "prompt", "answer"}``: the last user turn and its correction."""
    num_preferences: int
    num_upvoted: int


def feedback_since(routes: RouteStore, name: str, since: str | None) -> tuple[float | None, str]:
    """``(unix seconds or None, how to say it)``: --since, else the last loop's cut-off."""
    if since:
        return parse_time(since, name="--since"), since
    last = routes.events(name, limit=1, kind="loop")
    if not last:
        return None, "the beginning (no earlier loop)"
    when = (last[0]["detail"] or {}).get("feedback_until", last[0]["created"])
    return when, f"{_iso(when)} (the last loop)"


def read_news(store: FeedbackStore, filters: ConversationFilter) -> News:
    corrections, num_upvoted = [], 0
    for row in store.iter_labelled(filters):
        if row["correction"]:
            turns = prompt_messages(row["messages"], row["prompt"])
            users = [m for m in turns if m.get("role") == "user"]
            prompt = users[-1]["content"] if users else ""
            if isinstance(prompt, str) and prompt:
                corrections.append({"id": row["id"], "prompt": prompt, "answer": row["correction"]})
        elif row["rating"] == 1:
            num_upvoted += 1
    return News(corrections, len(store.preferences(filters)), num_upvoted)


# -- 2. export --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportedData:
    sft_path: Path
    num_sft: int
    dpo_path: Path
    num_dpo: int


def default_run_dir(route: str, when: float) -> Path:
    stamp = datetime.fromtimestamp(when, UTC).strftime("%Y%m%dT%H%M%SZ")
    return runs_dir() / f"loop-{route}-{stamp}"


def export_data(store: FeedbackStore, filters: ConversationFilter, run_dir: Path) -> ExportedData:
    counts = {}
    for fmt in ("sft", "dpo"):
        path = run_dir / f"{fmt}.jsonl"
        try:
            counts[fmt] = export(store, fmt, path, filters)["rows"]
        except EmptyExportError:
            counts[fmt] = 0
        print(f"      {path}: {counts[fmt]} rows" if counts[fmt] else f"      {fmt}: no rows")
    return ExportedData(run_dir / "sft.jsonl", counts["sft"], run_dir / "dpo.jsonl", counts["dpo"])


# -- 3. fine-tune -----------------------------------------------------------------------------


def base_model(route: Route) -> str:
    """The base model under the route's primary version: an adapter's base, or the model."""
    name, version = parse_ref(route.primary)
    artifact = registry.resolve(name, version) if version is not None else None
    if artifact is None:
        return route.primary  # the served base model's own name
    if artifact.kind == "base":
        return artifact.name
    if artifact.base is None:
        raise LLMLoopError(f"{route.primary} has no base model in the registry; re-register it")
    return artifact.base


def train_adapter(
    base: str, data: Path, output: Path, name: str, recipe: str | None
) -> registry.Artifact:
    """SFT as `llmloop finetune sft` runs it (defaults resolved from the model and the data)."""
    from llmloop.finetune.config import SFTConfig, load_recipe
    from llmloop.finetune.sft import sft

    settings = load_recipe(recipe) if recipe else {}
    settings |= {"base": base, "data": str(data), "output": str(output), "name": name}
    artifact = registry.find_by_path(sft(SFTConfig.from_flat(settings)))
    if artifact is None:
        raise LLMLoopError(f"the fine-tune did not register {output}; see `llmloop models list`")
    return artifact


# -- 4. gate ----------------------------------------------------------------------------------


def corrections_task(corrections: list[dict], gate_dir: Path) -> TaskConfig:
    """A generation task whose references are the corrected answers (its YAML is kept, so
    `llmloop eval run` can rerun it)."""
    gate_dir.mkdir(parents=True, exist_ok=True)
    with open(gate_dir / "corrections.jsonl", "w") as f:
        for row in corrections:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    longest = max(len(row["answer"]) for row in corrections)
    task = {
        "name": "corrections",
        "type": "generation",
        "description": "The prompts users corrected; the corrected answer is the reference.",
        "dataset": "corrections.jsonl",
        "prompt": "{prompt}",
        "target": "answer",
        "metrics": ["contains", "f1"],
        "max_tokens": min(512, longest // 3 + 8),  # ~4 characters a token, with room to spare
    }
    (gate_dir / "corrections.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    return load_task(gate_dir / "corrections.yaml")


def run_gate(
    args: argparse.Namespace,
    tasks: list[TaskConfig],
    gates: list[Gate],
    current: str,
    candidate: str,
    gate_dir: Path,
) -> tuple[list[str], str]:
    """``(failures, one-line summary)``; the candidate is loaded for the gate only."""
    server = ServerAdmin(args.base_url, args.api_key)
    server.load_adapter(candidate)
    try:
        runs = {
            task.name: [
                evaluate(args, task, ref, gate_dir / task.name) for ref in (current, candidate)
            ]
            for task in tasks
        }
    finally:
        server.unload_adapter(candidate)
    failures, summary = [], []
    for name, pair in runs.items():
        deltas = compare_runs(pair, NUM_RESAMPLES)[pair[1].name]
        print(format_table(pair, {pair[1].name: deltas}))
        gated = [g for g in gates if g.metric in pair[1].metrics]
        failures += [f"{name}: {f}" for f in check_release(pair, gated, args.max_drop)]
        if name == "corrections":
            failures += learned_corrections(pair)
        summary += [
            f"{name} {m} {pair[1].metrics[m]:.3f} ({d.value:+.3f})" for m, d in deltas.items()
        ]
    reported = {m for pair in runs.values() for m in pair[1].metrics}
    failures += [
        f"--gate {g.metric}{g.op}{g.threshold:g}: no task reports {g.metric!r}"
        for g in gates
        if g.metric not in reported
    ]
    return failures, "; ".join(summary) or "no metrics"


def learned_corrections(pair: list[Run]) -> list[str]:
    """The candidate must answer more of what users corrected than the current version."""
    before, after = (run.metrics.get("contains", 0.0) for run in pair)
    if after > before:
        return []
    return [
        f"corrections: {pair[1].name} gives {after:.0%} of the corrected answers, "
        f"{pair[0].name} {before:.0%}: it did not learn what it was corrected on "
        "(more steps or a higher learning rate in --config?)"
    ]


def evaluate(args: argparse.Namespace, task: TaskConfig, ref: str, task_dir: Path) -> Run:
    out_dir = task_dir / re.sub(r"[^\w.@-]+", "_", ref)
    config = RunConfig(
        base_url=args.base_url, model=ref, out_dir=out_dir, api_key=args.api_key, fresh=True
    )
    run_eval(task, config)
    return load_run(out_dir)


class ServerAdmin:
    """The server's adapter endpoints (admin scope)."""

    def __init__(self, base_url: str, api_key: str | None):
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=300)

    def load_adapter(self, ref: str) -> None:
        self._post("/v1/load_lora_adapter", {"lora_name": ref, "lora_path": ref})

    def unload_adapter(self, ref: str) -> None:
        self._post("/v1/unload_lora_adapter", {"lora_name": ref})

    def _post(self, path: str, body: dict) -> None:
        try:
            response = self.http.post(path, json=body)
        except httpx.TransportError as e:
            raise LLMLoopError(
                f"cannot reach the server at {self.base_url} ({e}); check --base-url"
            ) from e
        if response.status_code in (401, 403):
            raise LLMLoopError(f"{self.base_url}{path} refused the key: pass an admin --api-key")
        if response.status_code != 200:
            raise LLMLoopError(
                f"{self.base_url}{path} answered {response.status_code}: {response.text}"
            )


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")
