"""``/health`` (503 until the engine is ready; always public, for load balancers), ``/metrics``
(Prometheus) and ``/version`` (behind a key once the server has keys, unless --public-metrics)."""

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from llmloop import __version__
from llmloop.serve.auth.deps import require_key_unless
from llmloop.serve.deps import get_engine
from llmloop.serve.errors import EngineNotReadyError, OverloadedError

router = APIRouter()
METRICS = [Depends(require_key_unless("public_metrics"))]  # scope: any key, or none with the flag


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


@router.get("/metrics", dependencies=METRICS)
async def metrics(request: Request) -> Response:
    return Response(
        request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


@router.get("/version", dependencies=METRICS)
async def version() -> dict:
    return {"version": __version__}
