"""Routes in the log database: a model name clients send, mapped to weighted versions, with an
optional canary and shadow. Every server sharing the database reads them (``serve/routing``);
``llmloop deploy`` and the admin ``/v1/routes`` write them.

A version is a registry ref, ``NAME@VERSION`` (an adapter, or a base model), or the served base
model's own name. Each change bumps the route's ``revision`` in a compare-and-set ``UPDATE``, so
two writers (an operator's rollback and a server's automatic one) never both apply, and leaves an
event with the route as it was before and after: ``rollback`` without a canary restores the
``before`` of the last ``set`` or ``promote``.
"""

import dataclasses
import re
import time
from dataclasses import dataclass, field

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from llmloop.errors import LLMLoopError
from llmloop.feedback.schema import migrate, route_events, routes, shadow_completions

ROUTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
REF = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]{0,127})(?:@([1-9][0-9]{0,8}))?")
"""``NAME`` or ``NAME@VERSION``; as a version in a route always pinned (``NAME@V``), except for
the served base model, which has no version."""
MAX_VERSIONS = 8
ROUTE_CHANGES = ("set", "canary", "promote", "rollback", "auto_rollback", "auto_promote", "delete")


class RouteError(LLMLoopError):
    """A route change that cannot apply: unknown route, bad ref or weight, nothing to undo."""


@dataclass(frozen=True)
class Version:
    ref: str
    weight: float
    """Relative to the other versions' weights (90 and 10 is a 90/10 split)."""


@dataclass(frozen=True)
class Thresholds:
    """When a canary counts as worse than the versions it is tested against. Rates are over the
    canary's own requests in the sliding window; the latency ratio is its median latency over
    the stable versions' median."""

    min_requests: int = 50
    """The canary's requests (in the window) before any threshold is judged."""
    max_error_rate: float = 0.05
    max_refusal_rate: float = 0.1
    """Answers the output filter stopped (``content_filter`` with generated tokens)."""
    max_negative_feedback_rate: float = 0.2
    """Thumbs-down ratings per request."""
    max_latency_ratio: float = 2.0
    window_s: float = 900.0
    promote_after: int | None = None
    """Promote on its own after this many requests with no breach; None: never."""


@dataclass(frozen=True)
class Canary:
    ref: str
    weight: float
    """Percent of the route's users (0 < weight < 100), sticky per user."""
    started: float
    thresholds: Thresholds = field(default_factory=Thresholds)


@dataclass(frozen=True)
class Shadow:
    ref: str
    fraction: float
    """Of the route's requests also run on the shadow version (0 < fraction <= 1)."""


@dataclass(frozen=True)
class Route:
    name: str
    versions: tuple[Version, ...]
    canary: Canary | None = None
    shadow: Shadow | None = None
    revision: int = 0
    updated: float = 0.0

    @property
    def refs(self) -> set[str]:
        """Every version this route may run (for the engine to load)."""
        refs = {v.ref for v in self.versions if v.weight > 0}
        refs |= {part.ref for part in (self.canary, self.shadow) if part is not None}
        return refs

    @property
    def primary(self) -> str:
        """The stable version with the largest weight (what a rollback falls back to)."""
        return max(self.versions, key=lambda v: v.weight).ref

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Route":
        canary = data.get("canary")
        shadow = data.get("shadow")
        return cls(
            name=data["name"],
            versions=tuple(Version(**v) for v in data["versions"]),
            canary=Canary(
                ref=canary["ref"],
                weight=canary["weight"],
                started=canary["started"],
                thresholds=Thresholds(**canary.get("thresholds", {})),
            )
            if canary
            else None,
            shadow=Shadow(**shadow) if shadow else None,
            revision=data.get("revision", 0),
            updated=data.get("updated", 0.0),
        )


def check_route_name(name: str) -> str:
    if not ROUTE_NAME.fullmatch(name):
        raise RouteError(
            f"route name {name!r}: use 1-128 letters, digits, '.', '_' or '-' (no '@': "
            "NAME@VERSION names a version)"
        )
    return name


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"support@4"`` → ``("support", 4)``; ``"support"`` → ``("support", None)``."""
    match = REF.fullmatch(ref)
    if match is None:
        raise RouteError(f"{ref!r} is not a version: use NAME@VERSION (`llmloop models list`)")
    return match.group(1), int(match.group(2)) if match.group(2) else None


def check_split(versions: list[Version]) -> tuple[Version, ...]:
    if not versions or len(versions) > MAX_VERSIONS:
        raise RouteError(f"a route needs 1 to {MAX_VERSIONS} versions, got {len(versions)}")
    refs = [v.ref for v in versions]
    if len(set(refs)) != len(refs):
        raise RouteError(f"a version appears twice: {', '.join(refs)}")
    if any(not 0 <= v.weight <= 1e6 for v in versions) or not any(v.weight > 0 for v in versions):
        raise RouteError("weights must be between 0 and 1e6, and one must be positive")
    return tuple(versions)


class RouteStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def migrate(self) -> None:
        with self.engine.begin() as conn:
            migrate(conn)

    def all(self) -> list[Route]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(routes).order_by(routes.c.name)).mappings().all()
        return [Route.from_dict(dict(row)) for row in rows]

    def get(self, name: str) -> Route | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(routes).where(routes.c.name == name)).mappings().first()
        return Route.from_dict(dict(row)) if row else None

    def require(self, name: str) -> Route:
        route = self.get(name)
        if route is None:
            raise RouteError(f"no route named {name!r} (`llmloop deploy status` lists them)")
        return route

    # -- changes -----------------------------------------------------------------------------

    def set(self, name: str, versions: list[Version], shadow: Shadow | None, actor: str) -> Route:
        """Create the route or replace its split and shadow; a running canary ends."""
        check_route_name(name)
        new = Route(name=name, versions=check_split(versions), shadow=shadow)
        before = self.get(name)
        if before is None:
            return self._create(new, actor)
        return self._change(
            before, "set", actor, None, versions=new.versions, canary=None, shadow=shadow
        )

    def start_canary(
        self, name: str, canary: Canary, actor: str, expected_revision: int | None = None
    ) -> Route | None:
        """None when ``expected_revision`` no longer holds (the route changed meanwhile)."""
        route = self.require(name)
        if canary.ref in {v.ref for v in route.versions if v.weight > 0}:
            raise RouteError(f"{canary.ref} already serves {name!r}; a canary must be new")
        if not 0 < canary.weight < 100:
            raise RouteError(
                f"--weight is a percent of users: 0 < weight < 100, got {canary.weight}"
            )
        return self._change(route, "canary", actor, None, expected_revision, canary=canary)

    def promote(
        self,
        name: str,
        actor: str,
        kind: str = "promote",
        reason: str | None = None,
        expected_revision: int | None = None,
    ) -> Route | None:
        """The canary takes all the traffic. None when ``expected_revision`` no longer holds."""
        route = self.require(name)
        if route.canary is None:
            raise RouteError(f"route {name!r} has no canary to promote")
        versions = (Version(route.canary.ref, 100.0),)
        return self._change(
            route, kind, actor, reason, expected_revision, versions=versions, canary=None
        )

    def rollback(
        self,
        name: str,
        actor: str,
        kind: str = "rollback",
        reason: str | None = None,
        expected_revision: int | None = None,
    ) -> Route | None:
        """End the canary; without one, restore the split before the last set or promote.
        None when ``expected_revision`` no longer holds (someone else changed the route)."""
        route = self.require(name)
        if route.canary is not None:
            return self._change(route, kind, actor, reason, expected_revision, canary=None)
        previous = self._last_split_before(name)
        if previous is None:
            raise RouteError(f"route {name!r} has no canary and no earlier split to roll back to")
        return self._change(
            route,
            kind,
            actor,
            reason,
            expected_revision,
            versions=previous.versions,
            shadow=previous.shadow,
        )

    def delete(self, name: str, actor: str) -> None:
        route = self.require(name)
        with self.engine.begin() as conn:
            conn.execute(routes.delete().where(routes.c.name == name))
            self._event(conn, route.name, "delete", actor, None, route, None)

    def record(
        self, name: str, kind: str, actor: str, reason: str, detail: dict | None = None
    ) -> None:
        """An event that changes nothing (e.g. a ``loop`` run), for ``deploy status``;
        ``detail``: what a later run reads back (JSON)."""
        with self.engine.begin() as conn:
            self._event(conn, name, kind, actor, reason, None, None, detail)

    def events(
        self, name: str | None = None, limit: int = 20, kind: str | None = None
    ) -> list[dict]:
        query = select(route_events).order_by(route_events.c.id.desc()).limit(limit)
        if name is not None:
            query = query.where(route_events.c.route == name)
        if kind is not None:
            query = query.where(route_events.c.kind == kind)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def add_shadow(self, row: dict) -> None:
        """One shadow answer (``shadow_completions``' columns)."""
        with self.engine.begin() as conn:
            conn.execute(insert(shadow_completions).values(**row))

    # -- internals ---------------------------------------------------------------------------

    def _create(self, route: Route, actor: str) -> Route:
        now = time.time()
        route = dataclasses.replace(route, revision=1, updated=now)
        row = route.to_dict()
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(routes).values(**row))
                self._event(conn, route.name, "set", actor, None, None, route)
        except IntegrityError as e:  # the primary key: another writer created it first
            raise RouteError(f"route {route.name!r} was created concurrently; run it again") from e
        return route

    def _change(
        self,
        route: Route,
        kind: str,
        actor: str,
        reason: str | None,
        expected_revision: int | None = None,
        **changes,
    ) -> Route | None:
        expected = route.revision if expected_revision is None else expected_revision
        new = dataclasses.replace(
            route, **changes, revision=route.revision + 1, updated=time.time()
        )
        row = new.to_dict()
        del row["name"]
        with self.engine.begin() as conn:
            result = conn.execute(
                update(routes)
                .where(routes.c.name == route.name, routes.c.revision == expected)
                .values(**row)
            )
            if result.rowcount != 1:
                if expected_revision is not None:
                    return None
                raise RouteError(f"route {route.name!r} changed meanwhile; run it again")
            self._event(conn, route.name, kind, actor, reason, route, new)
        return new

    def _event(
        self,
        conn,
        name: str,
        kind: str,
        actor: str,
        reason: str | None,
        before: Route | None,
        after: Route | None,
        detail: dict | None = None,
    ) -> None:
        conn.execute(
            insert(route_events).values(
                route=name,
                created=time.time(),
                kind=kind,
                actor=actor,
                reason=reason,
                before=before.to_dict() if before else None,
                after=after.to_dict() if after else None,
                detail=detail,
            )
        )

    def _last_split_before(self, name: str) -> Route | None:
        """The route before its last set or promote (what an undo restores)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(route_events.c.before)
                .where(
                    route_events.c.route == name,
                    route_events.c.kind.in_(("set", "promote", "auto_promote")),
                    route_events.c.before.is_not(None),
                )
                .order_by(route_events.c.id.desc())
                .limit(1)
            ).first()
        # A JSON column stores Python's None as JSON null, which `is_not(None)` lets through:
        # the route's creation (nothing before it) leaves nothing to restore.
        return Route.from_dict(row[0]) if row and row[0] else None
