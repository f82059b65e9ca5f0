"""``llmloop deploy compare ROUTE``: a route's shadow answers against the primary answers to the
same requests, as the eval harness compares runs.

Each pair is one request: its primary row in ``completions`` and the shadow's row in
``shadow_completions`` (joined by ``completion_id``). Both sides become an eval ``Run`` whose
samples are the pairs in the same order with the same ids, so ``evals/compare.py`` resamples them
together (a paired bootstrap): the deltas' 95% intervals come from the same requests on both sides.
"""

import json
import time
from dataclasses import dataclass

from sqlalchemy import Engine, select

from llmloop.evals.compare import Run, compare_runs, format_table
from llmloop.feedback.monitor.timespec import iso, parse_moment
from llmloop.feedback.schema import completions, shadow_completions

MAX_PAIRS = 500
"""The latest pairs compared: the eval harness's bootstrap aggregates every metric per resample
and metric, so its time grows with pairs x resamples (1000 x 1000: 29 s, 500 x 500: 5 s on a
busy 2-core machine). 500 pairs already put a rate's 95% interval within about +-0.04."""
NUM_RESAMPLES = 500
METRICS = ("refused", "error", "output_chars", "completion_tokens", "latency_s", "agreement")
ERROR_FINISH_REASONS = ("error", "abort")


@dataclass(frozen=True)
class Answer:
    model: str
    output: str
    finish_reason: str | None
    completion_tokens: int
    latency_s: float


@dataclass(frozen=True)
class Pair:
    completion_id: str
    primary: Answer
    shadow: Answer


def run_compare(engine: Engine, route: str, since: str, as_json: bool = False) -> int:
    now = time.time()
    start = parse_moment(since, name="--since", now=now)
    pairs = load_pairs(engine, route, start)
    if not pairs:
        print(
            f"No shadow answers for route {route!r} since {iso(start)}: give the route a shadow "
            f"(`llmloop deploy set {route} NAME@V=100 --shadow NAME@V:0.1`), send it traffic, "
            "and compare again."
        )
        return 0
    runs = to_runs(route, pairs)
    deltas = compare_runs(runs, NUM_RESAMPLES)
    if as_json:
        report = {
            "route": route,
            "since": iso(start),
            "pairs": len(pairs),
            "primary": {"model": runs[0].results["model"], "metrics": runs[0].metrics},
            "shadow": {"model": runs[1].results["model"], "metrics": runs[1].metrics},
            "deltas": {
                metric: {"value": d.value, "ci_low": d.ci_low, "ci_high": d.ci_high}
                for metric, d in deltas["shadow"].items()
            },
        }
        print(json.dumps(report))
        return 0
    latest = f" (the latest {MAX_PAIRS})" if len(pairs) == MAX_PAIRS else ""
    print(f"route {route}: {len(pairs)} requests answered by both since {iso(start)}{latest}")
    print(format_table(runs, deltas))
    return 0


def load_pairs(engine: Engine, route: str, since: float) -> list[Pair]:
    """The latest ``MAX_PAIRS`` shadow answers of ``route`` since ``since`` with their primary's,
    oldest first."""
    s, c = shadow_completions.c, completions.c
    query = (
        select(
            s.completion_id,
            c.model,
            c.output,
            c.finish_reason,
            c.completion_tokens,
            c.latency_s,
            s.model.label("shadow_model"),
            s.output.label("shadow_output"),
            s.finish_reason.label("shadow_finish_reason"),
            s.completion_tokens.label("shadow_completion_tokens"),
            s.latency_s.label("shadow_latency_s"),
        )
        .join(completions, c.id == s.completion_id)
        .where(s.route == route, s.created >= since)
        .order_by(s.created.desc(), s.id.desc())
        .limit(MAX_PAIRS)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        Pair(
            completion_id=row["completion_id"],
            primary=Answer(
                row["model"],
                row["output"],
                row["finish_reason"],
                row["completion_tokens"],
                row["latency_s"],
            ),
            shadow=Answer(
                row["shadow_model"],
                row["shadow_output"],
                row["shadow_finish_reason"],
                row["shadow_completion_tokens"],
                row["shadow_latency_s"],
            ),
        )
        for row in reversed(rows)
    ]


def to_runs(route: str, pairs: list[Pair]) -> list[Run]:
    """The primary (baseline) and the shadow as two eval runs over the same samples."""
    runs = []
    for side in ("primary", "shadow"):
        records = [
            {"id": p.completion_id, "metrics": answer_metrics(p, side == "shadow")} for p in pairs
        ]
        models = sorted({getattr(p, side).model for p in pairs})
        results = {
            "task": f"route:{route}",
            "type": "generation",
            "model": ",".join(models),
            "metrics": {m: sum(r["metrics"][m] for r in records) / len(records) for m in METRICS},
        }
        runs.append(Run(side, results, records))
    return runs


def answer_metrics(pair: Pair, shadow: bool) -> dict[str, float]:
    answer, other = (pair.shadow, pair.primary) if shadow else (pair.primary, pair.shadow)
    return {
        "refused": float(answer.finish_reason == "content_filter"),
        "error": float(answer.finish_reason in ERROR_FINISH_REASONS),
        "output_chars": float(len(answer.output)),
        "completion_tokens": float(answer.completion_tokens),
        "latency_s": answer.latency_s,
        "agreement": float(answer.output.strip() == other.output.strip()),
    }
