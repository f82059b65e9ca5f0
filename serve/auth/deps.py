"""The dependencies routers declare: ``require_infer``, ``require_label``, ``require_admin``
authenticate the request's key and check its scope (``admin`` carries them all);
``limit_infer`` also admits the request under the key's rate limits and frees its slot when
the response is done (streams included); ``require_key_unless`` guards what a config flag may
open to everyone (``/metrics``, the API docs).

A request authenticates with ``Authorization: Bearer KEY`` or, from the labelling UI, with its
session cookie (``sessions.py``); a batch line runs as its batch's key (``batch/dispatch.py``). A session only ever has the label scope, whatever its key's, and
a write it authenticates must come from the server's own page: JSON, with our Origin. A browser
attaches cookies to cross-site form posts too; it never attaches an Authorization header.
"""

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import Depends, Request

from llmloop.serve.auth.keyring import KeyRing
from llmloop.serve.auth.keys import EVERY_PROJECT, MAX_SECRET_CHARS, ApiKey
from llmloop.serve.auth.ratelimit import RateLimiter, has_limits
from llmloop.serve.auth.sessions import SESSION_COOKIE, SessionStore
from llmloop.serve.batch.dispatch import LineOwner, batch_line_of
from llmloop.serve.errors import AuthenticationError, PermissionDeniedError

Scope = Literal["infer", "label", "admin"]
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
"""Methods that change nothing, so need no CSRF check."""


def require_scope(*scopes: Scope) -> Callable[[Request], Awaitable[ApiKey | None]]:
    """A dependency admitting keys with any of ``scopes``."""

    # async: FastAPI runs a plain def dependency in a worker thread, a hop per request
    async def check(request: Request) -> ApiKey | None:
        with request.app.state.tracing.span("auth"):
            await resolve_session(request)
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
    pool = "batch" if batch_line_of(request) is not None else "interactive"
    request.state.ratelimit_headers = limiter.admit(key, pool)
    try:
        yield key
    finally:  # after the response is sent, stream or not (FastAPI >= 0.118)
        limiter.release(key, getattr(request.state, "num_tokens", 0), pool)


def authenticate(request: Request) -> ApiKey | None:
    """The request's key; None on a server without keys. Sets ``request.state.api_key(_id)``."""
    keyring: KeyRing = request.app.state.keyring
    if not keyring.enabled:
        return None
    secret = bearer_token(request)
    if (line := batch_line_of(request)) is not None:
        key = batch_key(keyring, line)
    elif secret:
        key = authenticate_secret(keyring, secret)
    elif SESSION_COOKIE in request.cookies:
        key = session_key(request)
        check_same_origin(request)
    else:
        raise AuthenticationError(
            "missing API key: send `Authorization: Bearer YOUR_KEY`", code="invalid_api_key"
        )
    request.state.api_key = key
    request.state.api_key_id = key.id
    return key


def authenticate_secret(keyring: KeyRing, secret: str) -> ApiKey:
    key = keyring.authenticate(secret) if _well_formed(secret) else None
    if key is None:
        raise AuthenticationError("incorrect API key provided", code="invalid_api_key")
    return key


def batch_key(keyring: KeyRing, line: LineOwner) -> ApiKey:
    """A batch line runs as the key that created its batch, as that key is now."""
    key = keyring.by_id(line.api_key_id) if line.api_key_id else None
    if key is None:
        raise AuthenticationError(
            "the key that created this batch has been revoked (or the batch was created "
            "before the server had keys)",
            code="invalid_api_key",
        )
    return key


async def resolve_session(request: Request) -> None:
    """Look the session cookie up in the database (in a thread) for ``session_key``, when it is
    what will authenticate the request."""
    if (
        SESSION_COOKIE in request.cookies
        and request.app.state.keyring.enabled
        and not bearer_token(request)
        and batch_line_of(request) is None
    ):
        sessions: SessionStore = request.app.state.sessions
        token = request.cookies[SESSION_COOKIE]
        request.state.session_key_id = await asyncio.to_thread(sessions.key_id, token)


def session_key(request: Request) -> ApiKey:
    """The key the UI's session cookie stands for, narrowed to the label scope."""
    key_id = getattr(request.state, "session_key_id", None)  # resolve_session's
    key = request.app.state.keyring.by_id(key_id) if key_id else None
    if key is None or not key.allows("label"):  # expired, logged out, or its key revoked
        raise AuthenticationError(
            "the session has ended: sign in again with your API key", code="invalid_api_key"
        )
    project = EVERY_PROJECT if key.allows("admin") else key.project
    return dataclasses.replace(key, scopes=frozenset({"label"}), project=project)


def check_same_origin(request: Request) -> None:
    """Refuse a cookie-authenticated write unless it is JSON sent from this server's own page:
    a cross-site ``<form>`` can post text/plain with the cookie, but cannot set a JSON content
    type (that needs CORS, which we never grant) nor forge Origin."""
    if request.method in SAFE_METHODS:
        return
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    origin = request.headers.get("origin") or request.headers.get("referer") or ""
    try:
        same_origin = bool(origin) and urlsplit(origin).netloc.lower() == _host(request)
    except ValueError:  # e.g. "http://[::1": not our origin either
        same_origin = False
    if content_type != "application/json" or not same_origin:
        raise PermissionDeniedError(
            "a request signed in by the UI's session cookie must be JSON "
            "(Content-Type: application/json) sent from this server's own page (Origin); "
            "API clients send `Authorization: Bearer YOUR_KEY` instead",
            code="csrf_check_failed",
        )


def require_key_unless(public_flag: str) -> Callable[[Request], Awaitable[ApiKey | None]]:
    """A dependency admitting any valid key (any scope), or anyone when the server's config
    field ``public_flag`` is on."""

    async def check(request: Request) -> ApiKey | None:
        if getattr(request.app.state.config, public_flag):
            return None
        await resolve_session(request)
        return authenticate(request)

    check.__name__ = f"require_key_unless_{public_flag}"
    return check


def request_key(request: Request) -> ApiKey | None:
    """The key a dependency above authenticated (None on an open server)."""
    return getattr(request.state, "api_key", None)


def bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _host(request: Request) -> str:
    return request.headers.get("host", "").strip().lower()


def _well_formed(secret: str) -> bool:
    return len(secret) <= MAX_SECRET_CHARS and secret.isascii() and secret.isprintable()
