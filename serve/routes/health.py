"""``/health`` (503 until the engine is ready), ``/metrics`` (Prometheus), ``/version``."""

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from llmloop import __version__
from llmloop.serve.deps import get_engine
from llmloop.serve.errors import EngineNotReadyError, OverloadedError

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> Response:
    try:
        engine = get_engine(request)
    except EngineNotReadyError as e:
        return JSONResponse(e.to_dict(), status_code=503, headers=e.headers)
    try:
        await engine.check_health()
    except Exception as e:  # a dead engine: tell the load balancer, do not 500
        error = OverloadedError(f"the engine is not healthy: {e}", code="engine_unhealthy")
        return JSONResponse(error.to_dict(), status_code=503)
    return Response(status_code=200)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(
        request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


@router.get("/version")
async def version() -> dict:
    return {"version": __version__}
