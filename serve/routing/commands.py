"""The operations on routes that ``llmloop deploy`` and the admin ``/v1/routes`` share, so both
write the database the same way: refs pinned against the registry, splits and canaries built from
options and checked once, and a route's status (shares, canary health, recent events) as JSON.
"""

import dataclasses
import math
import time
from datetime import UTC, datetime

from llmloop import registry
from llmloop.feedback.route_health import breaches, stable_health, version_health, window_start
from llmloop.feedback.routes import (
    Canary,
    Route,
    RouteError,
    RouteStore,
    Shadow,
    Thresholds,
    Version,
    check_route_name,
    parse_ref,
)
from llmloop.paths import models_dir
from llmloop.serve.routing.metrics import shares

DEFAULT_WEIGHT = 100.0
DEFAULT_SHADOW_FRACTION = 0.1
NUM_EVENTS = 10
"""Events ``status`` shows per route, newest first."""
MAX_WINDOW_S = 30 * 86_400.0


class UnknownRouteError(RouteError):
    """The route named does not exist (HTTP: 404)."""


# -- changes ----------------------------------------------------------------------------------


def set_route(
    store: RouteStore,
    name: str,
    versions: list[tuple[str, float]],
    shadow: tuple[str, float] | None,
    actor: str,
    served: str | None = None,
) -> Route:
    """Create ``name`` or replace its split (and shadow); ``served``: a base model name this
    server runs, accepted without a registry entry."""
    check_route_name(name)
    if name == served or (models_dir() / name / "config.json").exists():
        raise RouteError(f"{name!r} is a base model's name: a route needs a name of its own")
    split = [Version(pin(ref, served), check_weight(weight)) for ref, weight in versions]
    pinned_shadow = None
    if shadow is not None:
        pinned_shadow = Shadow(pin(shadow[0], served), check_fraction(shadow[1]))
        if pinned_shadow.ref in {v.ref for v in split}:
            raise RouteError(
                f"shadow {pinned_shadow.ref} already serves the route; shadow another version"
            )
    return store.set(name, split, pinned_shadow, actor)


def start_canary(
    store: RouteStore,
    name: str,
    candidate: str,
    weight: float,
    thresholds: Thresholds,
    actor: str,
    served: str | None = None,
) -> Route:
    require(store, name)
    canary = Canary(pin(candidate, served), weight, time.time(), thresholds)
    return store.start_canary(name, canary, actor)


def promote(store: RouteStore, name: str, actor: str) -> Route:
    require(store, name)
    route = store.promote(name, actor)
    assert route is not None  # None only with an expected_revision
    return route


def rollback(store: RouteStore, name: str, actor: str, reason: str | None = None) -> Route:
    require(store, name)
    route = store.rollback(name, actor, reason=reason)
    assert route is not None
    return route


def delete(store: RouteStore, name: str, actor: str) -> None:
    require(store, name)
    store.delete(name, actor)


def require(store: RouteStore, name: str) -> Route:
    route = store.get(name)
    if route is None:
        raise UnknownRouteError(f"no route named {name!r} (`llmloop deploy status` lists them)")
    return route


# -- parsing and checks -----------------------------------------------------------------------


def pin(ref: str, served: str | None = None) -> str:
    """The version a route stores for ``ref``: ``NAME`` → the newest ``NAME@V``; ``NAME@V`` as
    given once it exists; a base model's bare name as is."""
    name, version = parse_ref(ref)
    if version is not None:
        if registry.resolve(name, version) is None:
            raise RouteError(f"{ref} is not in the registry (`llmloop models list`)")
        return ref
    if name == served or (models_dir() / name / "config.json").is_file():
        return name
    artifact = registry.resolve(name)
    if artifact is None:
        raise RouteError(
            f"{name!r} is neither a registered model nor a prepared base model "
            "(`llmloop models list`; `llmloop models register DIR --name NAME` adds an adapter)"
        )
    return name if artifact.kind == "base" else f"{name}@{artifact.version}"


def parse_version(spec: str) -> tuple[str, float]:
    """``NAME@V=WEIGHT`` (weight optional: 100) → ``(ref, weight)``."""
    ref, sep, weight = spec.partition("=")
    if not sep:
        return ref, DEFAULT_WEIGHT
    return ref, _number(weight, f"{spec!r}: the weight after '=' must be a number, e.g. {ref}=90")


def parse_shadow(spec: str) -> tuple[str, float]:
    """``NAME@V[:FRACTION]`` (fraction optional: 0.1) → ``(ref, fraction)``."""
    ref, sep, fraction = spec.partition(":")
    if not sep:
        return ref, DEFAULT_SHADOW_FRACTION
    return ref, check_fraction(
        _number(fraction, f"--shadow {spec!r}: the fraction after ':' must be a number in (0, 1]")
    )


def check_weight(weight: float) -> float:
    if not (math.isfinite(weight) and 0 <= weight <= 1e6):
        raise RouteError(f"weight {weight:g}: use a number from 0 to 1e6")
    return weight


def check_fraction(fraction: float) -> float:
    if not (math.isfinite(fraction) and 0 < fraction <= 1):
        raise RouteError(f"shadow fraction {fraction:g}: use 0 < fraction <= 1 (0.1: a tenth)")
    return fraction


def build_thresholds(**options: float | int | None) -> Thresholds:
    """Thresholds from the options given (None: the default), each checked once here."""
    given = {name: value for name, value in options.items() if value is not None}
    fields = {f.name for f in dataclasses.fields(Thresholds)}
    if unknown := given.keys() - fields:
        raise RouteError(f"unknown canary thresholds: {', '.join(sorted(unknown))}")
    for name, value in given.items():
        if not (math.isfinite(value) and value >= 0):
            raise RouteError(f"{_flag(name)} {value}: use a number >= 0")
    if "window_s" in given and not 0 < given["window_s"] <= MAX_WINDOW_S:
        raise RouteError(f"--window: use more than 0 s and at most {MAX_WINDOW_S / 86_400:g} days")
    if given.get("promote_after") == 0:
        raise RouteError("--promote-after: use at least 1 request (omit it: never)")
    return Thresholds(**given)  # type: ignore[arg-type]


def _flag(name: str) -> str:
    return "--" + name.removesuffix("_s").replace("_", "-")


def _number(text: str, message: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise RouteError(message) from None


# -- status -----------------------------------------------------------------------------------


def status(store: RouteStore, name: str | None = None, now: float | None = None) -> list[dict]:
    """Every route's status (or ``name``'s alone), JSON-able."""
    routes = [require(store, name)] if name is not None else store.all()
    return [route_status(store, route, now) for route in routes]


def route_status(store: RouteStore, route: Route, now: float | None = None) -> dict:
    share = shares(route)
    return {
        "object": "route",
        "id": route.name,
        "revision": route.revision,
        "updated": iso(route.updated),
        "primary": route.primary,
        "versions": [
            {"ref": v.ref, "weight": v.weight, "share": share.get(v.ref, 0.0)}
            for v in route.versions
        ],
        "canary": canary_status(store, route, share, now) if route.canary else None,
        "shadow": dataclasses.asdict(route.shadow) if route.shadow else None,
        "events": [
            {
                "kind": event["kind"],
                "created": iso(event["created"]),
                "actor": event["actor"],
                "reason": event["reason"],
            }
            for event in store.events(route.name, limit=NUM_EVENTS)
        ],
    }


def canary_status(
    store: RouteStore, route: Route, share: dict[str, float], now: float | None = None
) -> dict:
    """The canary with its live health and the stable versions', from the log over its window."""
    canary = route.canary
    assert canary is not None
    since = window_start(canary, now)
    health = version_health(store.engine, route.name, since)
    own = health.get(canary.ref)
    stable = stable_health(route, health)
    return {
        "ref": canary.ref,
        "weight": canary.weight,
        "share": share.get(canary.ref, 0.0),
        "started": iso(canary.started),
        "thresholds": dataclasses.asdict(canary.thresholds),
        "window_start": iso(since),
        "health": (own.to_dict() if own else None),
        "stable": stable.to_dict(),
        "by_version": {ref: h.to_dict() for ref, h in sorted(health.items())},
        "breaches": [
            {"threshold": b.threshold, "message": b.message}
            for b in (breaches(canary, own, stable) if own else [])
        ],
    }


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
