"""A route's live health per version, from the request log over a sliding window, and whether a
canary breaches its thresholds. Every server and ``llmloop deploy status`` judge alike: the
numbers come from the shared log, not from one process's memory.

- errors: answers that ended in ``error`` or ``abort`` (as ``llmloop monitor`` counts them);
- refusals: answers the output filter stopped (``content_filter`` after generated tokens; a
  prompt refused on input never reached the version, so it does not count against it);
- negative feedback: thumbs-down ratings per request;
- latency: the median of the version's request latencies.
"""

import statistics
import time
from dataclasses import asdict, dataclass

from sqlalchemy import Engine, and_, case, func, select

from llmloop.feedback.routes import Canary, Route
from llmloop.feedback.schema import completions

ERROR_FINISH_REASONS = ("error", "abort")
LATENCY_SAMPLE = 2000
"""The latest requests per version whose median latency is taken."""


@dataclass(frozen=True)
class VersionHealth:
    requests: int = 0
    errors: int = 0
    refusals: int = 0
    negative_feedback: int = 0
    rated: int = 0
    latency_p50_s: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def refusal_rate(self) -> float:
        return self.refusals / self.requests if self.requests else 0.0

    @property
    def negative_feedback_rate(self) -> float:
        return self.negative_feedback / self.requests if self.requests else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {
            "error_rate": self.error_rate,
            "refusal_rate": self.refusal_rate,
            "negative_feedback_rate": self.negative_feedback_rate,
        }


def window_start(canary: Canary, now: float | None = None) -> float:
    return max(canary.started, (now or time.time()) - canary.thresholds.window_s)


def version_health(engine: Engine, route: str, since: float) -> dict[str, VersionHealth]:
    """Per version (the log's ``model``) of ``route``, requests since ``since``."""
    c = completions.c
    in_window = and_(c.route == route, c.created >= since)
    counts = (
        select(
            c.model,
            func.count().label("requests"),
            _count_if(c.finish_reason.in_(ERROR_FINISH_REASONS)).label("errors"),
            _count_if(and_(c.finish_reason == "content_filter", c.completion_tokens > 0)).label(
                "refusals"
            ),
            _count_if(c.rating == -1).label("negative_feedback"),
            _count_if(c.rating.is_not(None)).label("rated"),
        )
        .where(in_window)
        .group_by(c.model)
    )
    with engine.connect() as conn:
        rows = conn.execute(counts).mappings().all()
        health = {}
        for row in rows:
            latencies = (
                conn.execute(
                    select(c.latency_s)
                    .where(in_window, c.model == row["model"])
                    .order_by(c.created.desc())
                    .limit(LATENCY_SAMPLE)
                )
                .scalars()
                .all()
            )
            health[row["model"]] = VersionHealth(
                requests=row["requests"],
                errors=int(row["errors"]),
                refusals=int(row["refusals"]),
                negative_feedback=int(row["negative_feedback"]),
                rated=int(row["rated"]),
                latency_p50_s=statistics.median(latencies) if latencies else None,
            )
    return health


def stable_health(route: Route, health: dict[str, VersionHealth]) -> VersionHealth:
    """The stable versions (all but the canary) together; latency: the busiest one's median."""
    canary = route.canary.ref if route.canary else None
    stable = [h for ref, h in health.items() if ref != canary]
    if not stable:
        return VersionHealth()
    busiest = max(stable, key=lambda h: h.requests)
    return VersionHealth(
        requests=sum(h.requests for h in stable),
        errors=sum(h.errors for h in stable),
        refusals=sum(h.refusals for h in stable),
        negative_feedback=sum(h.negative_feedback for h in stable),
        rated=sum(h.rated for h in stable),
        latency_p50_s=busiest.latency_p50_s,
    )


@dataclass(frozen=True)
class Breach:
    """One threshold a canary breaches."""

    threshold: str
    """One of ``BREACH_THRESHOLDS`` (the ``reason`` label of ``llmloop:route_rollbacks_total``)."""
    message: str
    """For people: the measured value, the limit and over how many requests."""


BREACH_THRESHOLDS = ("error_rate", "refusal_rate", "negative_feedback_rate", "latency_ratio")


def breaches(canary: Canary, health: VersionHealth, stable: VersionHealth) -> list[Breach]:
    """Why the canary is worse, one breach per threshold (errors, refusals, negative feedback,
    latency: the first names a rollback in ``/metrics``); [] before ``min_requests`` or when
    healthy."""
    t = canary.thresholds
    if health.requests < t.min_requests:
        return []
    found = []
    for threshold, rate, limit in (
        ("error_rate", health.error_rate, t.max_error_rate),
        ("refusal_rate", health.refusal_rate, t.max_refusal_rate),
        ("negative_feedback_rate", health.negative_feedback_rate, t.max_negative_feedback_rate),
    ):
        if rate > limit:
            name = threshold.replace("_", " ")
            message = f"{name} {rate:.3f} > {limit:g} over {health.requests} requests"
            found.append(Breach(threshold, message))
    if health.latency_p50_s is not None and stable.latency_p50_s:
        ratio = health.latency_p50_s / stable.latency_p50_s
        if ratio > t.max_latency_ratio:
            message = f"latency ratio {ratio:.2f} > {t.max_latency_ratio:g} (p50 vs stable)"
            found.append(Breach("latency_ratio", message))
    return found


def _count_if(condition):
    return func.sum(case((condition, 1), else_=0))
