"""The canary watch: every ``interval_s`` each server judges its routes' canaries from the shared
request log (``feedback/route_health.py``) and rolls back a canary that breaches a threshold, or
promotes one that has served ``promote_after`` healthy requests.

Every server sharing the database runs a watch and they all read the same log, so they reach the
same verdict; the change is a compare-and-set on the route's ``revision`` (``RouteStore``), so
exactly one of them applies it and the others, like a server racing an operator's own
``llmloop deploy rollback``, find the route changed and do nothing.
"""

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine as DbEngine

from llmloop.feedback.route_health import (
    BREACH_THRESHOLDS,
    Breach,
    VersionHealth,
    breaches,
    stable_health,
    version_health,
    window_start,
)
from llmloop.feedback.routes import Route, RouteError, RouteStore
from llmloop.serve.engine_api import Engine
from llmloop.serve.routing.metrics import RouteMetrics
from llmloop.serve.routing.table import RouteTable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """A canary as the log shows it now."""

    health: VersionHealth
    breaches: list[Breach]


@dataclass(frozen=True)
class Action:
    """A change this server applied."""

    route: str
    kind: str
    """``auto_rollback`` or ``auto_promote``."""
    reason: str


def server_actor(host: str, port: int) -> str:
    """Who the route events name: this server process."""
    return f"server {host}:{port} pid {os.getpid()}"


class CanaryWatch:
    def __init__(
        self,
        store: RouteStore,
        db_engine: DbEngine,
        table: RouteTable,
        metrics: RouteMetrics,
        actor: str,
        interval_s: float = 5.0,
    ):
        self.store = store
        self.db_engine = db_engine
        self.table = table
        self.metrics = metrics
        self.actor = actor
        self.interval_s = interval_s

    async def run(self, engine: Engine) -> None:
        while True:
            try:
                await self.check_once(engine)
            except Exception as e:  # the database is down: judge again at the next tick
                logger.warning("canary watch could not read the log database: %s", e)
            await asyncio.sleep(self.interval_s)

    async def check_once(self, engine: Engine) -> list[Action]:
        """Judge every canary once; act on those that breach (or earned promotion), then apply
        the new routes to this server at once."""
        actions = []
        for route in list(self.table.routes.values()):
            if route.canary is None:
                continue
            try:
                action = await self._check(route)
            except Exception as e:  # one route's failure leaves the others judged
                logger.warning("canary watch could not judge route %s: %s", route.name, e)
                continue
            if action is not None:
                actions.append(action)
        if actions:
            await self.table.refresh(engine)
        return actions

    async def _check(self, route: Route) -> Action | None:
        assert route.canary is not None
        # at 0 from the canary's start, so that Prometheus sees a first rollback as an increase
        for threshold in BREACH_THRESHOLDS:
            self.metrics.rollbacks.labels(route.name, threshold)
        self.metrics.promotions.labels(route.name)
        verdict = await asyncio.to_thread(self.judge, route)
        if verdict.breaches:
            return await self._roll_back(route, verdict.breaches)
        promote_after = route.canary.thresholds.promote_after
        if promote_after is not None and verdict.health.requests >= max(
            promote_after, route.canary.thresholds.min_requests
        ):
            return await self._promote(route, verdict.health)
        return None

    def judge(self, route: Route) -> Verdict:
        """The canary's health over its window, and the thresholds it breaches (blocking)."""
        canary = route.canary
        assert canary is not None
        health = version_health(self.db_engine, route.name, window_start(canary))
        own = health.get(canary.ref, VersionHealth())
        return Verdict(own, breaches(canary, own, stable_health(route, health)))

    async def _roll_back(self, route: Route, found: list[Breach]) -> Action | None:
        assert route.canary is not None
        reason = "; ".join(breach.message for breach in found)
        if not await self._apply(self.store.rollback, route, "auto_rollback", reason):
            return None
        self.metrics.rollbacks.labels(route.name, found[0].threshold).inc()
        logger.warning("route %s: canary %s rolled back: %s", route.name, route.canary.ref, reason)
        return Action(route.name, "auto_rollback", reason)

    async def _promote(self, route: Route, health: VersionHealth) -> Action | None:
        assert route.canary is not None
        reason = f"{health.requests} requests within every threshold"
        if not await self._apply(self.store.promote, route, "auto_promote", reason):
            return None
        self.metrics.promotions.labels(route.name).inc()
        logger.info("route %s: canary %s promoted: %s", route.name, route.canary.ref, reason)
        return Action(route.name, "auto_promote", reason)

    async def _apply(
        self, change: Callable[..., Route | None], route: Route, kind: str, reason: str
    ) -> bool:
        """``change`` (``store.rollback`` or ``store.promote``) if the route is still the
        revision judged; False when another server or an operator changed it first."""
        try:
            after = await asyncio.to_thread(
                change,
                route.name,
                self.actor,
                kind=kind,
                reason=reason,
                expected_revision=route.revision,
            )
        except RouteError as e:  # gone, or its canary already ended
            logger.info("route %s changed meanwhile, %s skipped: %s", route.name, kind, e)
            return False
        if after is None:
            logger.info("route %s changed meanwhile, %s skipped", route.name, kind)
            return False
        return True
