"""``POST /ui/api/session`` signs the labelling UI in: it takes a label (or admin) key once and
sets an HttpOnly session cookie that stands for it; ``DELETE /ui/api/session`` signs out.

The cookie is ``SameSite=Strict`` and ``Path=/ui``, so a browser sends it only to the UI and its
API, never cross-site; page scripts cannot read it. See ``auth/deps.py`` for what it may reach.
"""

import asyncio
import contextlib
import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from llmloop.serve.auth.deps import authenticate_secret, bearer_token
from llmloop.serve.auth.keys import MAX_SECRET_CHARS
from llmloop.serve.auth.sessions import SESSION_COOKIE, SessionStore
from llmloop.serve.errors import AuthenticationError, PermissionDeniedError

router = APIRouter()
COOKIE_PATH = "/ui"
MAX_LOGIN_BODY_BYTES = 4096
LOGIN_BODY = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"api_key": {"type": "string", "maxLength": MAX_SECRET_CHARS}},
            }
        }
    },
}


@router.post("/ui/api/session", openapi_extra={"requestBody": LOGIN_BODY})
async def create_session(request: Request) -> Response:  # scope: label (of the key it is given)
    keyring = request.app.state.keyring
    if not keyring.enabled:  # nothing to sign in to
        return JSONResponse({"object": "session", "key_id": None, "expires_in": None})
    key = authenticate_secret(keyring, bearer_token(request) or await _body_key(request))
    if not key.allows("label"):
        raise PermissionDeniedError(
            "the labelling UI needs a key with the label (or admin) scope",
            code="insufficient_scope",
        )
    sessions: SessionStore = request.app.state.sessions
    response = JSONResponse(
        {"object": "session", "key_id": key.id, "expires_in": int(sessions.ttl_s)}
    )
    response.set_cookie(
        SESSION_COOKIE,
        await asyncio.to_thread(sessions.create, key.id),
        max_age=int(sessions.ttl_s),
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.delete("/ui/api/session", status_code=204)
async def delete_session(request: Request) -> Response:  # scope: none (ends the caller's session)
    sessions: SessionStore = request.app.state.sessions
    await asyncio.to_thread(sessions.delete, request.cookies.get(SESSION_COOKIE, ""))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


async def _body_key(request: Request) -> str:
    """``{"api_key": ...}`` from a JSON body. JSON only: a cross-site form could post text/plain
    and sign the victim's browser in with the attacker's key."""
    raw = await request.body()
    is_json = request.headers.get("content-type", "").startswith("application/json")
    body = None
    if is_json and 0 < len(raw) <= MAX_LOGIN_BODY_BYTES:
        with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError):
            body = json.loads(raw)
    secret = body.get("api_key") if isinstance(body, dict) else None
    if not isinstance(secret, str):
        raise AuthenticationError(
            "missing API key: send `Authorization: Bearer YOUR_KEY` or the JSON body "
            '`{"api_key": "YOUR_KEY"}`',
            code="invalid_api_key",
        )
    return secret
