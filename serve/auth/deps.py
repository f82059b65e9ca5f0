"""The dependencies routers declare: ``require_infer``, ``require_label``, ``require_admin``
authenticate the request's key and check its scope (``admin`` carries them all);
``limit_infer`` also admits the request under the key's rate limits and frees its slot when
the response is done (streams included)."""

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Literal

from fastapi import Depends, Request

from llmloop.serve.auth.keyring import KeyRing
from llmloop.serve.auth.keys import MAX_SECRET_CHARS, ApiKey
from llmloop.serve.auth.ratelimit import RateLimiter, has_limits
from llmloop.serve.errors import AuthenticationError, PermissionDeniedError

Scope = Literal["infer", "label", "admin"]
SESSION_COOKIE = "llmloop_api_key"
"""The labelling UI's cookie, holding a label (or admin) key."""


def require_scope(*scopes: Scope) -> Callable[[Request], ApiKey | None]:
    """A dependency admitting keys with any of ``scopes``."""

    def check(request: Request) -> ApiKey | None:
        key = authenticate(request)
        if key is not None and not any(map(key.allows, scopes)):
            raise PermissionDeniedError(
                f"this key lacks the {' or '.join(map(repr, scopes))} scope (it has: "
                f"{', '.join(sorted(key.scopes))})",
                code="insufficient_scope",
            )
        return key

    check.__name__ = "require_" + "_or_".join(scopes)
    return check


require_infer = require_scope("infer")
require_label = require_scope("label")
require_admin = require_scope("admin")
require_infer_or_label = require_scope("infer", "label")


async def limit_infer(
    request: Request, key: Annotated[ApiKey | None, Depends(require_infer)]
) -> AsyncIterator[ApiKey | None]:
    if key is None or not has_limits(key):
        yield key
        return
    limiter: RateLimiter = request.app.state.rate_limiter
    request.state.ratelimit_headers = limiter.admit(key)
    try:
        yield key
    finally:  # after the response is sent, stream or not (FastAPI >= 0.118)
        limiter.release(key, getattr(request.state, "num_tokens", 0))


def authenticate(request: Request) -> ApiKey | None:
    """The request's key; None on a server without keys. Sets ``request.state.api_key(_id)``."""
    keyring: KeyRing = request.app.state.keyring
    if not keyring.enabled:
        return None
    secret = bearer_token(request) or request.cookies.get(SESSION_COOKIE, "")
    if not secret:
        raise AuthenticationError(
            "missing API key: send `Authorization: Bearer YOUR_KEY`", code="invalid_api_key"
        )
    key = keyring.authenticate(secret) if _well_formed(secret) else None
    if key is None:
        raise AuthenticationError("incorrect API key provided", code="invalid_api_key")
    request.state.api_key = key
    request.state.api_key_id = key.id
    return key


def request_key(request: Request) -> ApiKey | None:
    """The key a dependency above authenticated (None on an open server)."""
    return getattr(request.state, "api_key", None)


def bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _well_formed(secret: str) -> bool:
    return len(secret) <= MAX_SECRET_CHARS and secret.isascii() and secret.isprintable()
