"""HTTP: ``POST /v1/feedback``, the labelling UI at ``/ui/`` and its JSON API under ``/ui/api/``.

The log comes from ``request.app.state.request_log``. Each route states its scope: feedback takes
an infer or label key, the UI's JSON API a label key (a bearer token or the UI's session cookie,
see ``session.py``); the UI posts its feedback to ``/ui/api/feedback``, where that cookie goes; the
static page, script and style hold no data and stay public, so a browser can load the page and
its login form before it has a key. Include this router without extra dependencies.
"""

import dataclasses
import json
from importlib.resources import files
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmloop.feedback.errors import FeedbackError, UnknownCompletionError
from llmloop.feedback.log import RequestLog
from llmloop.feedback.record import DEFAULT_PROJECT
from llmloop.feedback.store import ConversationFilter, Feedback, parse_time
from llmloop.serve.auth.deps import require_infer_or_label, require_label
from llmloop.serve.auth.keys import ApiKey
from llmloop.serve.errors import BadRequestError, NotFoundError
from llmloop.serve.metrics import ServerMetrics

router = APIRouter()

UI_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
FeedbackKey = Annotated[ApiKey | None, Depends(require_infer_or_label)]
LabelKey = Annotated[ApiKey | None, Depends(require_label)]
LABEL = [Depends(require_label)]  # scope: label
PENDING_WRITE_TIMEOUT_S = 5.0
"""How long feedback on a just-returned completion waits for the writer to store it."""


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback``: at least one of rating, correction, comment, preferred_over."""

    model_config = ConfigDict(extra="forbid")

    completion_id: str = Field(min_length=1, max_length=128)
    """The ``id`` of a logged chat/completions response."""
    rating: Literal[1, -1] | None = None
    """1: good answer, -1: bad answer."""
    correction: str | None = Field(default=None, min_length=1, max_length=100_000)
    """The answer the model should have given."""
    comment: str | None = Field(default=None, max_length=10_000)
    """Free text for the labelling team."""
    preferred_over: str | None = Field(default=None, min_length=1, max_length=128)
    """Another completion of the same prompt that ``completion_id`` is better than."""

    @model_validator(mode="after")
    def _says_something(self) -> "FeedbackRequest":
        if (self.rating, self.correction, self.comment, self.preferred_over) == (None,) * 4:
            raise ValueError("give at least one of rating, correction, comment, preferred_over")
        return self


FEEDBACK_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": FeedbackRequest.model_json_schema()}},
    }
}


@router.post("/v1/feedback", openapi_extra=FEEDBACK_BODY)
async def create_feedback(request: Request, key: FeedbackKey) -> dict:  # scope: infer or label
    body = _parse_feedback(await request.body())
    log = _request_log(request)
    fb = Feedback(
        **body.model_dump(),
        api_key_id=key.id if key else None,
        project=key.log_project if key else DEFAULT_PROJECT,
    )
    visible = _visible(key)
    try:
        stored = await run_in_threadpool(_store_call, log.store.add_feedback, fb, visible)
    except NotFoundError:
        # A client may rate an answer the moment it arrives, before the writer has stored it:
        # write what is queued, then look once more.
        if not await log.flush(timeout=PENDING_WRITE_TIMEOUT_S):
            raise
        stored = await run_in_threadpool(_store_call, log.store.add_feedback, fb, visible)
    _count_feedback(request.app.state.metrics, stored.pop("model"), body)
    return stored


# -- the UI's JSON API --------------------------------------------------------------------------


@router.post("/ui/api/feedback", openapi_extra=FEEDBACK_BODY)
async def create_feedback_from_ui(request: Request, key: LabelKey) -> dict:  # scope: label
    """``POST /v1/feedback`` where the UI's session cookie (``Path=/ui``) is sent."""
    return await create_feedback(request, key)


@router.get("/ui/api/conversations")
def list_conversations(  # scope: label
    request: Request,
    key: LabelKey,
    model: str | None = None,
    rating: int | None = None,
    since: str | None = None,
    until: str | None = None,
    unlabelled: bool = False,
    q: Annotated[str | None, Query(max_length=500)] = None,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict:
    if rating not in (None, 1, -1):
        raise BadRequestError("rating must be 1 or -1", param="rating")
    filters = dataclasses.replace(  # the asked-for filters, within what the key may see
        _visible(key),
        model=model or None,
        rating=rating,
        since=_store_call(parse_time, since, name="since") if since else None,
        until=_store_call(parse_time, until, name="until") if until else None,
        unlabelled=unlabelled,
        q=q or None,
    )
    store = _request_log(request).store
    page = _store_call(store.list_conversations, filters, cursor=cursor, limit=limit)
    page["total"] = store.count(filters)
    return page


@router.get("/ui/api/conversations/{completion_id}")
def get_conversation(request: Request, completion_id: str, key: LabelKey) -> dict:  # scope: label
    store, visible = _request_log(request).store, _visible(key)
    row = store.get(completion_id, visible)
    if row is None:
        raise NotFoundError(f"no logged completion with id {completion_id!r}", param="id")
    row["siblings"] = store.siblings(completion_id, row.pop("prompt_hash"), visible)
    return row


@router.get("/ui/api/models", dependencies=LABEL)
def list_models(request: Request) -> dict:
    return {"data": sorted(_request_log(request).store.models())}


# -- the static page ----------------------------------------------------------------------------


@router.get("/ui", include_in_schema=False)
def ui_redirect() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/ui/", include_in_schema=False)
def ui_page() -> HTMLResponse:
    return HTMLResponse(_ui_file("index.html"))


@router.get("/ui/{name}", include_in_schema=False)
def ui_asset(name: str) -> Response:
    if name not in UI_FILES:
        raise NotFoundError(f"no UI file {name!r}")
    return Response(_ui_file(name), media_type=UI_FILES[name])


# -- helpers ------------------------------------------------------------------------------------


def _parse_feedback(raw: bytes) -> FeedbackRequest:
    try:
        return FeedbackRequest.model_validate(json.loads(raw))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequestError(f"the body is not valid JSON: {e}") from e
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise BadRequestError(f"{param or 'body'}: {first['msg']}", param=param) from e


def _count_feedback(metrics: ServerMetrics, model: str, body: FeedbackRequest) -> None:
    kinds = {
        "thumbs_up": body.rating == 1,
        "thumbs_down": body.rating == -1,
        "correction": body.correction is not None,
        "preference": body.preferred_over is not None,
    }
    for kind, given in kinds.items():
        if given:
            metrics.feedback.labels(model, kind).inc()


def _store_call(fn, *args, **kwargs):
    """Run a store method, turning the package's errors into the server's HTTP errors."""
    try:
        return fn(*args, **kwargs)
    except UnknownCompletionError as e:
        raise NotFoundError(str(e), param="completion_id") from e
    except FeedbackError as e:
        raise BadRequestError(str(e)) from e


def _visible(key: ApiKey | None) -> ConversationFilter:
    """What ``key`` may read and label; everything on a server without keys."""
    return key.visible() if key else ConversationFilter()


def _request_log(request: Request) -> RequestLog:
    log = getattr(request.app.state, "request_log", None)
    if log is None:
        raise NotFoundError("this server keeps no request log (it was started without one)")
    return log


def _ui_file(name: str) -> str:
    return (files("llmloop.serve") / "ui" / name).read_text(encoding="utf-8")
