"""FastAPI dependencies: the engine once it is ready, model name → adapter (keys: serve/auth/)."""

from typing import Annotated

from fastapi import Depends, Request

from llmloop.serve.auth.deps import request_key
from llmloop.serve.auth.keys import ApiKey
from llmloop.serve.engine_api import Engine
from llmloop.serve.errors import EngineNotReadyError, NotFoundError
from llmloop.serve.routing.table import RouteTable, Target


def get_engine(request: Request) -> Engine:
    engine = request.app.state.engine
    if engine is None:
        raise EngineNotReadyError(
            "the engine is still starting; retry shortly",
            code="engine_starting",
            headers={"Retry-After": "5"},
        )
    return engine


def resolve_target(
    request: Request, model: str, user: str | None = None, count: bool = True
) -> Target:
    """Where a request for ``model`` goes: a route's version (sticky per ``user``, else per key),
    the base model, or a loaded adapter; 404 for a name that is not served or that the key may
    not use (as OpenAI: a model you cannot use does not exist)."""
    engine: Engine = request.app.state.engine
    key = request_key(request)
    table: RouteTable | None = request.app.state.routes
    if table is not None and may_use(key, model):
        target = table.target(model, user or (key.id if key else None), count)
        if target is not None:
            if not target.model:
                raise EngineNotReadyError(
                    f"no version of route {model!r} is loaded on this server yet; retry shortly",
                    code="route_unavailable",
                    headers={"Retry-After": "5"},
                )
            return target
    available = visible_models(request, engine, key)
    if model not in available:
        raise NotFoundError(
            f"The model `{model}` does not exist. Available: {', '.join(available)}",
            param="model",
            code="model_not_found",
        )
    return Target(model=model, lora=None if model == engine.model_name else model)


def visible_models(request: Request, engine: Engine, key: ApiKey | None) -> list[str]:
    """The names ``key`` may send as ``model``: routes, the base model, loaded adapters."""
    table: RouteTable | None = request.app.state.routes
    routes = list(table.routes) if table is not None else []
    names = [*routes, engine.model_name, *(adapter.name for adapter in engine.list_loras())]
    return [name for name in names if may_use(key, name)]


def may_use(key: ApiKey | None, model: str) -> bool:
    """Whether ``key`` may name ``model`` (a key made with ``--models`` names its own)."""
    return key is None or key.models is None or model in key.models


EngineDep = Annotated[Engine, Depends(get_engine)]
