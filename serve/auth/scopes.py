"""``require_scope(scope)``: the dependency each router declares, authenticating the request's key
and checking that it carries the scope (``admin`` carries them all)."""

from collections.abc import Callable
from typing import Literal

from fastapi import Request

from llmloop.serve.auth.keyring import KeyRing
from llmloop.serve.auth.keys import MAX_SECRET_CHARS, ApiKey
from llmloop.serve.errors import AuthenticationError, PermissionDeniedError

Scope = Literal["infer", "label", "admin"]
SESSION_COOKIE = "llmloop_api_key"
"""The labelling UI's cookie, holding a label (or admin) key."""


def require_scope(scope: Scope) -> Callable[[Request], ApiKey | None]:
    def check(request: Request) -> ApiKey | None:
        key = authenticate(request)
        if key is not None and not key.allows(scope):
            raise PermissionDeniedError(
                f"this key lacks the {scope!r} scope (it has: {', '.join(sorted(key.scopes))})",
                code="insufficient_scope",
            )
        return key

    check.__name__ = f"require_{scope}_scope"
    return check


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


def bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _well_formed(secret: str) -> bool:
    return len(secret) <= MAX_SECRET_CHARS and secret.isascii() and secret.isprintable()
