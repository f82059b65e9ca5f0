"""The FastAPI application: ``create_app`` wires routers, error handlers and the engine lifecycle.

The HTTP server comes up first and answers ``/health`` with 503 while the engine starts (tens of
seconds on CPU), then 200. Heavy objects live on ``app.state``: ``engine``, ``config``,
``sampling_defaults``, ``metrics``, ``guardrails`` (the safety layer, or None when it is off) and
``retrieval``.
"""

import asyncio
import json
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmloop.feedback.batches import BatchStore
from llmloop.feedback.db import create_db_engine
from llmloop.feedback.files import FileBlobs
from llmloop.feedback.log import RequestLog
from llmloop.feedback.routes import RouteStore
from llmloop.paths import default_db_url
from llmloop.serve.admission import Admission
from llmloop.serve.auth.keyring import KeyRing
from llmloop.serve.auth.ratelimit import RateLimiter, RateLimitHeadersMiddleware
from llmloop.serve.auth.sessions import SessionStore
from llmloop.serve.batch.dispatch import Dispatcher
from llmloop.serve.batch.runner import BatchLimits, BatchRunner
from llmloop.serve.batch.state import BatchState
from llmloop.serve.config import ServerConfig
from llmloop.serve.engine_api import Engine
from llmloop.serve.errors import (
    APIError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    RequestTooLargeError,
)
from llmloop.serve.guardrails import Guardrails
from llmloop.serve.http_metrics import HttpMetricsMiddleware
from llmloop.serve.metrics import ServerMetrics
from llmloop.serve.retrieval import Retrieval
from llmloop.serve.routes import (
    adapters,
    batches,
    chat,
    completions,
    deploy,
    docs,
    embeddings,
    files,
    health,
    models,
    moderations,
    session,
    tokenize,
)
from llmloop.serve.routes.feedback import router as feedback_router
from llmloop.serve.routing.metrics import RouteMetrics
from llmloop.serve.routing.shadow import ShadowRunner
from llmloop.serve.routing.table import RouteTable
from llmloop.serve.routing.watch import CanaryWatch, server_actor
from llmloop.serve.security_headers import EVERY_RESPONSE, SecurityHeadersMiddleware
from llmloop.serve.tracing import Tracing, TracingMiddleware

logger = logging.getLogger("llmloop.serve")

EngineFactory = Callable[[], Awaitable[Engine]]


def create_app(
    config: ServerConfig,
    engine_factory: EngineFactory,
    sampling_defaults: dict | None = None,
    on_engine_failure: Callable[[BaseException], None] | None = None,
    *,
    guardrails: Guardrails | None = None,
    retrieval: Retrieval | None = None,
    keyring: KeyRing | None = None,
    batch_worker: bool = True,
    metrics: ServerMetrics | None = None,
) -> FastAPI:
    """``guardrails``, ``retrieval`` and ``keyring`` replace the ones built from ``config`` (tests
    pass fakes; the caller closes what it passed). By default the safety layer loads in the
    lifespan when ``config.safety`` is on, retrieval opens ``config.rag_index`` on first use, and
    the keyring holds ``--api-key`` and the log database's keys. ``batch_worker=False``: the app
    does not run the database's batches (``llmloop batch run`` sends it its own lines).
    ``metrics``: the app's own (one per app), e.g. the ones given to ``guardrails``."""
    # The docs routes are our own (serve/routes/docs.py): behind a key unless --public-docs.
    app = FastAPI(
        title="llmloop",
        version="0.1.0",
        lifespan=_lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.config = config
    app.state.engine = None
    app.state.engine_factory = engine_factory
    app.state.on_engine_failure = on_engine_failure
    app.state.sampling_defaults = dict(sampling_defaults or {}) | dict(config.default_sampling)
    app.state.metrics = ServerMetrics() if metrics is None else metrics
    app.state.metrics.watch_request_log(lambda: app.state.request_log)
    app.state.tracing = Tracing()  # records nothing; the lifespan's exports, given an endpoint
    app.state.adapter_versions = {}
    app.state.request_log = None
    app.state.guardrails = guardrails
    app.state.owns_guardrails = guardrails is None
    app.state.harm_classifier = None  # /v1/moderations' own, when the safety layer is off
    app.state.lazy_load_lock = threading.Lock()
    if retrieval is None:
        retrieval = Retrieval(config.rag_index, app.state.metrics)
    app.state.retrieval = retrieval
    db_url = config.db_url or default_db_url()
    app.state.owns_keyring = keyring is None
    app.state.keyring = KeyRing(config.api_keys, db_url) if keyring is None else keyring
    app.state.runs_batches = batch_worker
    app.state.db = create_db_engine(db_url)  # batches and routes (the log has its own)
    # shared by the replicas on this database (auth/ratelimit.py, auth/sessions.py)
    app.state.rate_limiter = RateLimiter(
        app.state.metrics.rate_limited, app.state.db, app.state.keyring.by_id
    )
    app.state.sessions = SessionStore(app.state.db)
    app.state.routes = RouteTable(
        RouteStore(app.state.db), RouteMetrics(app.state.metrics.registry)
    )
    app.state.shadow = ShadowRunner(app.state.routes.store, app.state.routes.metrics)
    app.state.batches = BatchState(
        BatchStore(app.state.db),
        FileBlobs(),
        config.max_file_bytes,
        config.max_stored_bytes_per_key,
    )

    # Each router states the scope its routes need (serve/auth/deps.py); /health is public.
    for module in (health, models, chat, completions, embeddings, moderations, adapters, tokenize):
        app.include_router(module.router)
    app.include_router(files.router)
    app.include_router(batches.router)
    app.include_router(feedback_router)
    app.include_router(session.router)
    app.include_router(docs.router)
    app.include_router(deploy.router)
    _add_error_handlers(app)
    app.add_middleware(RateLimitHeadersMiddleware)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=config.max_request_body_bytes,
        # an upload's multipart framing and form fields come on top of the file
        max_bytes_by_path={"/v1/files": config.max_file_bytes + (64 << 10)},
    )
    if config.http_metrics:  # 413s included; its stream chunks pass straight through
        app.add_middleware(HttpMetricsMiddleware, metrics=app.state.metrics.http)
    app.add_middleware(SecurityHeadersMiddleware)  # outermost: on every response, 413s included
    if config.otlp_traces_endpoint:  # around everything: the request's span times it all
        app.add_middleware(TracingMiddleware)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI):
    config: ServerConfig = app.state.config
    db_url = config.db_url or default_db_url()
    # Chat templates and tokenizers run here (serve/generation.py: off_loop): one thread, as in
    # vLLM's server, since a HF tokenizer used from two threads at once can fail.
    app.state.tokenizer_executor = ThreadPoolExecutor(1, thread_name_prefix="llmloop-tokenizer")
    if config.otlp_traces_endpoint:
        app.state.tracing = Tracing.export_to(config.otlp_traces_endpoint)
    app.state.request_log = RequestLog(db_url, enabled=config.store_requests)
    await app.state.request_log.start()
    await app.state.keyring.try_refresh()  # before the first request: keys apply from the start
    await _migrate_batches(app)
    keys = asyncio.create_task(_keep_keys_fresh(app))
    starting = asyncio.create_task(_start_engine(app))
    try:
        yield
    finally:
        batch_worker = getattr(app.state, "batch_worker", None)
        route_tasks = getattr(app.state, "route_tasks", [])
        for task in (starting, keys, batch_worker, *route_tasks):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(
            *filter(None, (starting, keys, batch_worker, *route_tasks)), return_exceptions=True
        )
        await app.state.shadow.aclose()
        if (dispatcher := getattr(app.state, "batch_dispatcher", None)) is not None:
            await dispatcher.aclose()
        app.state.db.dispose()
        if app.state.owns_keyring:
            app.state.keyring.close()
        await app.state.request_log.aclose()  # drained requests are logged before we exit
        app.state.tracing.shutdown()  # and their spans exported
        if app.state.owns_guardrails and app.state.guardrails is not None:
            app.state.guardrails.close()
        app.state.tokenizer_executor.shutdown(wait=False, cancel_futures=True)
        if app.state.engine is not None:
            app.state.engine.shutdown()
            app.state.engine = None


async def _keep_keys_fresh(app: FastAPI) -> None:
    """The keyring's refresh, and the rate-limit counts the replicas on the database share."""
    await asyncio.gather(app.state.keyring.keep_fresh(), app.state.rate_limiter.keep_synced())


async def _start_engine(app: FastAPI) -> None:
    """The engine, the safety layer and the adapters; ready (``/health`` 200) when all are."""
    config: ServerConfig = app.state.config
    starting_engine = asyncio.create_task(app.state.engine_factory())
    try:
        if config.safety and app.state.owns_guardrails:
            app.state.guardrails = await asyncio.to_thread(
                Guardrails.load, config.safety_policy, app.state.metrics
            )
        engine = await starting_engine
        for name, path in app.state.config.adapters:
            await adapters.load_adapter(app, engine, name, path)
        await _first_routes(app, engine)
    except asyncio.CancelledError:
        raise
    except BaseException as e:
        starting_engine.cancel()
        logger.exception("engine failed to start")
        if app.state.on_engine_failure is not None:
            app.state.on_engine_failure(e)
        return
    app.state.admission = Admission(config.max_queue_time_s, engine.max_num_seqs)
    app.state.engine = engine
    logger.info("engine ready: %s (max_model_len=%d)", engine.model_name, engine.max_model_len)
    app.state.route_tasks = [
        asyncio.create_task(app.state.routes.keep_fresh(engine), name="routes"),
        asyncio.create_task(
            CanaryWatch(
                app.state.routes.store,
                app.state.db,
                app.state.routes,
                app.state.routes.metrics,
                actor=server_actor(config.host, config.port),
            ).run(engine),
            name="canary-watch",
        ),
    ]
    if app.state.runs_batches:
        _start_batch_worker(app, engine.max_num_seqs)


async def _first_routes(app: FastAPI, engine: Engine) -> None:
    """The routes and their versions before ``/health`` says ready (a database that is down
    leaves them to the refresh that follows)."""
    try:
        await app.state.routes.refresh(engine)
    except Exception as e:
        logger.warning("could not read routes from the log database: %s", e)


async def _migrate_batches(app: FastAPI) -> None:
    """The batch tables, even with --no-store (which skips the request log's migration)."""
    try:
        await asyncio.to_thread(app.state.batches.store.migrate)
    except Exception:  # the database is down: the worker and the routes retry on their own
        logger.exception("could not migrate the log database for batches")


def _start_batch_worker(app: FastAPI, max_num_seqs: int) -> None:
    config: ServerConfig = app.state.config
    concurrency = config.batch_concurrency or max(1, max_num_seqs - max_num_seqs // 4)
    limits = BatchLimits(
        concurrency=concurrency,
        busy_concurrency=config.batch_busy_concurrency or max(1, concurrency // 8),
        max_line_bytes=config.max_request_body_bytes,
        lease_s=config.batch_lease_s,
    )
    state: BatchState = app.state.batches
    app.state.batch_dispatcher = Dispatcher(app)
    admission: Admission = app.state.admission
    state.runner = BatchRunner(
        state.store,
        state.blobs,
        app.state.batch_dispatcher,
        limits,
        app.state.metrics.batches,
        admission.interactive_idle_s,
    )
    app.state.batch_worker = asyncio.create_task(state.runner.run(), name="batch-worker")


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await api_error(request, _to_bad_request(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = {404: NotFoundError, 413: RequestTooLargeError}.get(
            exc.status_code, BadRequestError
        )
        error = error_type(str(exc.detail))
        error.status_code = exc.status_code
        return await api_error(request, error)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        response = await api_error(
            request, InternalServerError("internal server error; see the server log")
        )
        # Starlette renders this outside every middleware, SecurityHeadersMiddleware included.
        response.headers.update({k.decode(): v.decode() for k, v in EVERY_RESPONSE})
        return response


def _to_bad_request(exc: RequestValidationError) -> BadRequestError:
    """Pydantic's errors → one OpenAI-style 400 naming the first offending field."""
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return BadRequestError("the request body is not valid JSON", code="invalid_json")
    param = _param_path(first.get("loc", ())) or None
    message = (
        "field required" if first.get("type") == "missing" else first.get("msg", "invalid value")
    )
    message = message.removeprefix("Value error, ")
    if param is None and (named := _NAMED_PARAM.match(message)):
        # a check across fields (model_validator) names its parameter first: "tool_choice: ..."
        param, message = named.group(1), message[named.end() :]
    return BadRequestError(
        f"{param + ': ' if param else ''}{message}", param=param, code="invalid_value"
    )


def _param_path(loc: tuple) -> str:
    """('body', 'messages', 0, 'content', 'str') → 'messages[0].content'. Union members that
    pydantic adds to the location ('str', 'list[int]', 'function-after[...]') are dropped."""
    path = ""
    for part in loc[1:] if loc[:1] == ("body",) else loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier() and part not in _TYPE_TAGS:
            path += f".{part}" if path else part
    return path


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}
_NAMED_PARAM = re.compile(r"([a-z_]+(?:\.[a-z_]+)*): ")


class BodySizeLimitMiddleware:
    """413 for bodies over ``max_bytes`` (or a path's own limit in ``max_bytes_by_path``): by
    Content-Length up front, or while reading a chunked body."""

    def __init__(self, app, max_bytes: int, max_bytes_by_path: dict[str, int] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.max_bytes_by_path = max_bytes_by_path or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        max_bytes = self.max_bytes_by_path.get(scope["path"], self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            return await self._reject(send, max_bytes)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    # FastAPI passes HTTPExceptions raised while reading the body through unchanged.
                    raise HTTPException(413, self._message(max_bytes))
            return message

        await self.app(scope, limited_receive, send)

    def _message(self, max_bytes: int) -> str:
        flag = "--max-file-bytes" if max_bytes != self.max_bytes else "--max-request-body-bytes"
        return f"request body exceeds {max_bytes} bytes; raise {flag} or send less"

    async def _reject(self, send, max_bytes: int) -> None:
        error = RequestTooLargeError(self._message(max_bytes), code="request_too_large")
        body = json.dumps(error.to_dict()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
