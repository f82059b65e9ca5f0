"""What the report counts, computed by the database: one query per table or plot, each a single
pass over the window's rows (the ``created`` index bounds it), so a million-row log takes seconds
and nothing is looped over in Python.

Percentiles are nearest-rank (the smallest latency with at least p of the rows at or below it):
PostgreSQL's ``percentile_disc``; on SQLite, which has no ordered-set aggregates, a
``row_number()`` window over the sorted latencies picks the same rows.
"""

from dataclasses import dataclass

from sqlalchemy import Connection, Float, Text, case, cast, func, literal_column, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from llmloop.feedback.schema import completions
from llmloop.safety.pii import PII_TYPES

REFUSED = "content_filter"
"""The finish_reason of an answer the safety layer withheld."""
ERROR_FINISH_REASONS = ("abort", "error")
"""A logged request whose generation did not finish (client gone, engine failure)."""
PERCENTILES = (50, 95, 99)
MAX_GROUPS = 50
"""Rows per table (keys, projects, versions): the biggest, by requests or tokens."""


@dataclass(frozen=True)
class Scope:
    since: float
    until: float
    model: str | None = None

    def where(self) -> list[ColumnElement]:
        conditions = [completions.c.created >= self.since, completions.c.created < self.until]
        if self.model is not None:
            conditions.append(completions.c.model == self.model)
        return conditions


class time_bucket(FunctionElement):
    """``created`` floored to a multiple of ``width_s``: the start of its bucket, unix seconds."""

    type = Float()
    inherit_cache = True
    name = "time_bucket"


@compiles(time_bucket)
def _floor_bucket(element: time_bucket, compiler, **kw) -> str:
    column, width = (compiler.process(c, **kw) for c in element.clauses)
    return f"(floor({column} / {width}) * {width})"


@compiles(time_bucket, "sqlite")
def _sqlite_bucket(element: time_bucket, compiler, **kw) -> str:
    # SQLite's floor() needs the optional math functions; CAST truncates, which is floor for the
    # positive unix times of the log
    column, width = (compiler.process(c, **kw) for c in element.clauses)
    return f"(CAST({column} / {width} AS INTEGER) * {width})"


def bucket_of(width_s: int) -> time_bucket:
    # the width is ours, an int: a literal keeps SELECT and GROUP BY the same expression on
    # PostgreSQL (two bound parameters would count as two expressions)
    return time_bucket(completions.c.created, literal_column(str(int(width_s))))


def pii_condition() -> ColumnElement:
    """The prompt holds a redaction placeholder (``<EMAIL_1>``) or hash (``<EMAIL:3f2a…>``).
    The cheap ``'<'`` test first spares the per-type patterns on most rows."""
    text = func.coalesce(completions.c.prompt, cast(completions.c.messages, Text))
    patterns = [f"%<{t}!_%" for t in PII_TYPES] + [f"%<{t}:%" for t in PII_TYPES]
    return text.like("%<%") & or_(*(text.like(p, escape="!") for p in patterns))


def _count_if(condition: ColumnElement) -> ColumnElement:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def totals(conn: Connection, scope: Scope) -> dict:
    """Requests, rates, tokens and feedback counts of the window."""
    c = completions.c
    row = (
        conn.execute(
            select(
                func.count().label("requests"),
                _count_if(c.finish_reason.in_(ERROR_FINISH_REASONS)).label("errors"),
                _count_if(c.finish_reason == REFUSED).label("refusals"),
                _count_if(pii_condition()).label("pii"),
                func.avg(c.latency_s).label("latency_mean"),
                func.coalesce(func.sum(c.prompt_tokens), 0).label("prompt_tokens"),
                func.coalesce(func.sum(c.completion_tokens), 0).label("completion_tokens"),
                _count_if(c.rating.is_not(None)).label("rated"),
                _count_if(c.rating > 0).label("thumbs_up"),
                _count_if(c.rating < 0).label("thumbs_down"),
                _count_if(c.correction.is_not(None)).label("corrections"),
            ).where(*scope.where())
        )
        .mappings()
        .one()
    )
    out = {k: int(v) for k, v in row.items() if k != "latency_mean"}
    mean = row["latency_mean"]
    out["latency_mean"] = float(mean) if mean is not None else None
    n = out["requests"]
    out["rates"] = {
        "error": _rate(out["errors"], n),
        "refusal": _rate(out["refusals"], n),
        "pii": _rate(out["pii"], n),
        "negative_feedback": _rate(out["thumbs_down"], out["rated"]),
    }
    return out


def latency_percentiles(conn: Connection, scope: Scope, num_rows: int) -> dict[str, float | None]:
    """``{"p50": s, "p95": s, "p99": s}`` of ``latency_s`` (nearest rank)."""
    if num_rows == 0:
        return {f"p{p}": None for p in PERCENTILES}
    latency = completions.c.latency_s
    if conn.dialect.name == "postgresql":
        values = conn.execute(
            select(
                *(func.percentile_disc(p / 100).within_group(latency) for p in PERCENTILES)
            ).where(*scope.where())
        ).one()
        return {f"p{p}": float(v) for p, v in zip(PERCENTILES, values, strict=True)}
    ranks = {p: _nearest_rank(p, num_rows) for p in PERCENTILES}
    ranked = (
        select(latency, func.row_number().over(order_by=latency).label("rank"))
        .where(*scope.where())
        .subquery()
    )
    found = dict(
        conn.execute(
            select(ranked.c.rank, ranked.c.latency_s).where(ranked.c.rank.in_(set(ranks.values())))
        ).all()
    )
    return {f"p{p}": float(found[rank]) for p, rank in ranks.items()}


def timeseries(conn: Connection, scope: Scope, width_s: int) -> list[dict]:
    """Per bucket of ``width_s`` seconds that has requests: its start, requests, refusals,
    errors, mean and p50/p95 latency (one partitioned window sort)."""
    c = completions.c
    bucket = bucket_of(width_s)
    ranked = (
        select(
            bucket.label("bucket"),
            c.latency_s,
            c.finish_reason,
            func.row_number().over(partition_by=bucket, order_by=c.latency_s).label("rank"),
            func.count().over(partition_by=bucket).label("n"),
        )
        .where(*scope.where())
        .subquery()
    )
    r = ranked.c

    def at_rank(p: int) -> ColumnElement:
        # nearest rank ceil(p * n / 100) in integer arithmetic, the same on both databases
        return func.max(case((r.rank == (r.n * p + 99) // 100, r.latency_s)))

    rows = conn.execute(
        select(
            r.bucket,
            func.count().label("requests"),
            _count_if(r.finish_reason == REFUSED).label("refusals"),
            _count_if(r.finish_reason.in_(ERROR_FINISH_REASONS)).label("errors"),
            func.avg(r.latency_s).label("latency_mean"),
            at_rank(50).label("latency_p50"),
            at_rank(95).label("latency_p95"),
        )
        .group_by(r.bucket)
        .order_by(r.bucket)
    ).mappings()
    return [
        {
            "start": float(row["bucket"]),
            "requests": int(row["requests"]),
            "refusals": int(row["refusals"]),
            "errors": int(row["errors"]),
            "latency_mean": float(row["latency_mean"]),
            "latency_p50": float(row["latency_p50"]),
            "latency_p95": float(row["latency_p95"]),
        }
        for row in rows
    ]


def feedback_by_version(conn: Connection, scope: Scope) -> list[dict]:
    """Per model and adapter version: requests, thumbs up/down, corrections and their rates."""
    c = completions.c
    rows = conn.execute(
        select(
            c.model,
            c.adapter_version,
            func.count().label("requests"),
            _count_if(c.rating.is_not(None)).label("rated"),
            _count_if(c.rating > 0).label("thumbs_up"),
            _count_if(c.rating < 0).label("thumbs_down"),
            _count_if(c.correction.is_not(None)).label("corrections"),
        )
        .where(*scope.where())
        .group_by(c.model, c.adapter_version)
        .order_by(func.count().desc(), c.model)
        .limit(MAX_GROUPS)
    ).mappings()
    out = []
    for row in rows:
        item = {k: (int(v) if k not in ("model", "adapter_version") else v) for k, v in row.items()}
        item["up_rate"] = _rate(item["thumbs_up"], item["rated"])
        item["down_rate"] = _rate(item["thumbs_down"], item["rated"])
        item["correction_rate"] = _rate(item["corrections"], item["requests"])
        out.append(item)
    return out


def token_usage(conn: Connection, scope: Scope, by: str) -> list[dict]:
    """Per ``api_key_id`` or ``project``: requests and tokens, the biggest users first."""
    c = completions.c
    column = {"api_key_id": c.api_key_id, "project": c.project}[by]
    total = func.sum(c.prompt_tokens + c.completion_tokens)
    rows = conn.execute(
        select(
            column.label(by),
            func.count().label("requests"),
            func.sum(c.prompt_tokens).label("prompt_tokens"),
            func.sum(c.completion_tokens).label("completion_tokens"),
            total.label("total_tokens"),
        )
        .where(*scope.where())
        .group_by(column)
        .order_by(total.desc(), column)
        .limit(MAX_GROUPS)
    ).mappings()
    return [{k: (v if k == by else int(v)) for k, v in row.items()} for row in rows]


def bucket_width(window_s: float) -> int:
    """A round bucket width giving at most ~100 buckets over the window."""
    for width in (60, 300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86_400, 7 * 86_400):
        if window_s / width <= 100:
            return width
    return int(window_s // 100) + 1


def _nearest_rank(p: int, n: int) -> int:
    return max(1, (n * p + 99) // 100)


def _rate(count: int, total: int) -> float | None:
    return count / total if total else None
