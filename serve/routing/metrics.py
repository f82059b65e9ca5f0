"""Route metrics (on ``/metrics`` with the server's own). ``route`` and ``version`` take the
values the operator configured (``llmloop deploy``), never a client's text."""

from prometheus_client import CollectorRegistry, Counter, Gauge

from llmloop.feedback.routes import Route


class RouteMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.weight = Gauge(
            "llmloop:route_weight",
            "Share of a route's users each version gets (0-1; the canary's percent included).",
            ["route", "version"],
            registry=registry,
        )
        self.requests = Counter(
            "llmloop:route_requests",
            "Requests this server sent to each route version (primary traffic; shadow apart).",
            ["route", "version"],
            registry=registry,
        )
        self.rollbacks = Counter(
            "llmloop:route_rollbacks",
            "Canaries this server rolled back on its own, by route and the first threshold "
            "breached (error_rate|refusal_rate|negative_feedback_rate|latency_ratio).",
            ["route", "reason"],
            registry=registry,
        )
        self.promotions = Counter(
            "llmloop:route_promotions",
            "Canaries this server promoted on its own after their healthy requests.",
            ["route"],
            registry=registry,
        )
        self.shadow_requests = Counter(
            "llmloop:route_shadow_requests",
            "Shadow runs by route and outcome (logged|skipped: at the shadow concurrency "
            "limit|failed).",
            ["route", "outcome"],
            registry=registry,
        )
        self.unavailable = Gauge(
            "llmloop:route_versions_unavailable",
            "Versions the routes name that this server could not load (see its log).",
            registry=registry,
        )

    def observe(self, routes: list[Route], unavailable: int) -> None:
        self.weight.clear()
        for route in routes:
            for version, share in shares(route).items():
                self.weight.labels(route.name, version).set(share)
        self.unavailable.set(unavailable)


def shares(route: Route) -> dict[str, float]:
    """Each version's expected share of the route's users."""
    canary = route.canary.weight / 100 if route.canary else 0.0
    total = sum(v.weight for v in route.versions)
    split = {v.ref: (1 - canary) * v.weight / total for v in route.versions}
    if route.canary:
        split[route.canary.ref] = split.get(route.canary.ref, 0.0) + canary
    return split
