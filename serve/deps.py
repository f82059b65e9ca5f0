"""FastAPI dependencies: the engine once it is ready, API-key auth, model name → adapter."""

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request

from llmloop.serve.engine_api import Engine
from llmloop.serve.errors import AuthenticationError, EngineNotReadyError, NotFoundError

API_KEY_COOKIE = "llmloop_api_key"


def get_engine(request: Request) -> Engine:
    engine = request.app.state.engine
    if engine is None:
        raise EngineNotReadyError(
            "the engine is still starting; retry shortly",
            code="engine_starting",
            headers={"Retry-After": "5"},
        )
    return engine


def require_api_key(request: Request) -> str | None:
    """Checks ``Authorization: Bearer KEY`` (or the UI's cookie) when the server has keys.

    Returns a short id of the key for the request log; never the key itself."""
    keys: tuple[str, ...] = request.app.state.config.api_keys
    if not keys:
        return None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        token = request.cookies.get(API_KEY_COOKIE, "")
    if not token:
        raise AuthenticationError(
            "missing API key: send `Authorization: Bearer YOUR_KEY`", code="invalid_api_key"
        )
    if not any(hmac.compare_digest(token.strip(), key) for key in keys):
        raise AuthenticationError("incorrect API key provided", code="invalid_api_key")
    request.state.api_key_id = api_key_id(token.strip())
    return request.state.api_key_id


def api_key_id(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def resolve_lora(engine: Engine, model: str) -> str | None:
    """``None`` for the base model, the adapter name for a loaded adapter; 404 otherwise."""
    if model == engine.model_name:
        return None
    if any(adapter.name == model for adapter in engine.list_loras()):
        return model
    raise NotFoundError(
        f"The model `{model}` does not exist. Available: "
        + ", ".join([engine.model_name, *(a.name for a in engine.list_loras())]),
        param="model",
        code="model_not_found",
    )


EngineDep = Annotated[Engine, Depends(get_engine)]
