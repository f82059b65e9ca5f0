"""``/v1/routes``: what ``llmloop deploy`` does, over HTTP (serve/routing/commands.py for both).

A change is written to the log database; this server applies it before answering, the others
sharing the database within a second (serve/routing/table.py).
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from llmloop.feedback.routes import (
    MAX_VERSIONS,
    ROUTE_NAME,
    RouteError,
    RouteStore,
    Thresholds,
)
from llmloop.serve.auth.deps import request_key, require_admin
from llmloop.serve.errors import BadRequestError, NotFoundError
from llmloop.serve.routing import commands

logger = logging.getLogger(__name__)
router = APIRouter(dependencies=[Depends(require_admin)])  # scope: admin

MAX_REF_CHARS = 140
"""A name (128) and ``@`` and a version (9 digits)."""
MAX_REASON_CHARS = 1000
RouteName = Annotated[str, Path(max_length=128, pattern=f"^{ROUTE_NAME.pattern}$")]
"""A name no route can have is refused before the database sees it (PostgreSQL refuses NUL)."""
Ref = Annotated[str, Field(min_length=1, max_length=MAX_REF_CHARS)]


class RouteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field must not be silently dropped


class VersionSpec(RouteBody):
    ref: Ref
    weight: float = Field(default=commands.DEFAULT_WEIGHT, ge=0, le=1e6)


class ShadowSpec(RouteBody):
    ref: Ref
    fraction: float = Field(default=commands.DEFAULT_SHADOW_FRACTION, gt=0, le=1)


class SetRouteRequest(RouteBody):
    versions: list[VersionSpec] = Field(min_length=1, max_length=MAX_VERSIONS)
    shadow: ShadowSpec | None = None


class CanaryRequest(RouteBody):
    candidate: Ref
    weight: float = Field(gt=0, lt=100)
    """Percent of the route's users."""
    min_requests: int | None = Field(default=None, ge=0, le=10**9)
    max_error_rate: float | None = Field(default=None, ge=0)
    max_refusal_rate: float | None = Field(default=None, ge=0)
    max_negative_feedback_rate: float | None = Field(default=None, ge=0)
    max_latency_ratio: float | None = Field(default=None, ge=0, le=1e6)
    window_s: float | None = Field(default=None, gt=0, le=commands.MAX_WINDOW_S)
    promote_after: int | None = Field(default=None, ge=1, le=10**9)

    def thresholds(self) -> Thresholds:
        return commands.build_thresholds(**self.model_dump(exclude={"candidate", "weight"}))


class RollbackRequest(RouteBody):
    reason: str | None = Field(default=None, max_length=MAX_REASON_CHARS, pattern=r"^[^\x00]*$")


@router.get("/v1/routes")
async def list_routes(request: Request) -> dict:
    data = await _run(commands.status, _store(request))
    return {"object": "list", "data": data}


@router.get("/v1/routes/{name}")
async def get_route(name: RouteName, request: Request) -> dict:
    return (await _run(commands.status, _store(request), name))[0]


@router.put("/v1/routes/{name}")
async def set_route(name: RouteName, body: SetRouteRequest, request: Request) -> dict:
    versions = [(v.ref, v.weight) for v in body.versions]
    shadow = (body.shadow.ref, body.shadow.fraction) if body.shadow else None
    return await _change(
        request, commands.set_route, name, versions, shadow, _actor(request), _served(request)
    )


@router.post("/v1/routes/{name}/canary")
async def start_canary(name: RouteName, body: CanaryRequest, request: Request) -> dict:
    thresholds = await _run(body.thresholds)
    return await _change(
        request,
        commands.start_canary,
        name,
        body.candidate,
        body.weight,
        thresholds,
        _actor(request),
        _served(request),
    )


@router.post("/v1/routes/{name}/promote")
async def promote(name: RouteName, request: Request) -> dict:
    return await _change(request, commands.promote, name, _actor(request))


@router.post("/v1/routes/{name}/rollback")
async def rollback(name: RouteName, request: Request, body: RollbackRequest | None = None) -> dict:
    reason = body.reason if body else None
    return await _change(request, commands.rollback, name, _actor(request), reason)


@router.delete("/v1/routes/{name}")
async def delete_route(name: RouteName, request: Request) -> dict:
    await _run(commands.delete, _store(request), name, _actor(request))
    await _apply(request)
    return {"id": name, "object": "route", "deleted": True}


async def _change(request: Request, operation: Callable[..., Any], name: str, *args) -> dict:
    """Write the change, apply it here, and answer with the route's status."""
    store = _store(request)
    await _run(operation, store, name, *args)
    await _apply(request)
    return (await _run(commands.status, store, name))[0]


async def _run(function: Callable[..., Any], *args) -> Any:
    """``function`` off the event loop (the database), its RouteError as a 400 or 404."""
    try:
        return await asyncio.to_thread(function, *args)
    except commands.UnknownRouteError as e:
        raise NotFoundError(str(e), param="name", code="route_not_found") from e
    except RouteError as e:
        raise BadRequestError(str(e)) from e


async def _apply(request: Request) -> None:
    engine = request.app.state.engine
    if engine is None:
        return  # the engine's start reads the routes
    try:
        await request.app.state.routes.refresh(engine)
    except Exception as e:  # written already: the table's own refresh applies it in a second
        logger.warning("route change saved, but not applied here yet: %s", e)


def _store(request: Request) -> RouteStore:
    return request.app.state.routes.store


def _actor(request: Request) -> str:
    key = request_key(request)
    return key.id if key is not None else "admin"


def _served(request: Request) -> str | None:
    engine = request.app.state.engine
    return engine.model_name if engine is not None else None
