"""FastAPI dependencies: the engine once it is ready, model name → adapter (keys: serve/auth/)."""

from typing import Annotated

from fastapi import Depends, Request

from llmloop.serve.auth.keys import ApiKey
from llmloop.serve.engine_api import Engine
from llmloop.serve.errors import EngineNotReadyError, NotFoundError


def get_engine(request: Request) -> Engine:
    engine = request.app.state.engine
    if engine is None:
        raise EngineNotReadyError(
            "the engine is still starting; retry shortly",
            code="engine_starting",
            headers={"Retry-After": "5"},
        )
    return engine


def resolve_lora(engine: Engine, model: str, key: ApiKey | None = None) -> str | None:
    """``None`` for the base model, the adapter name for a loaded adapter; 404 for a model that
    is not loaded or that ``key`` may not use (as OpenAI: a model you cannot use does not exist)."""
    available = visible_models(engine, key)
    if model not in available:
        raise NotFoundError(
            f"The model `{model}` does not exist. Available: {', '.join(available)}",
            param="model",
            code="model_not_found",
        )
    return None if model == engine.model_name else model


def visible_models(engine: Engine, key: ApiKey | None) -> list[str]:
    names = [engine.model_name, *(adapter.name for adapter in engine.list_loras())]
    return [n for n in names if key is None or key.models is None or n in key.models]


EngineDep = Annotated[Engine, Depends(get_engine)]
