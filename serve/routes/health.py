"""``/health`` (503 until the engine is ready), ``/metrics`` (Prometheus), ``/version``."""

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from llmloop import __version__
from serve.deps import get_engine
from serve.errors import EngineNotReadyError

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> Response:
    try:
        engine = get_engine(request)
        await engine.check_health()
    except EngineNotReadyError as e:
        return JSONResponse(e.to_dict(), status_code=503, headers=e.headers)
    return Response(status_code=200)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(
        request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


@router.get("/version")
async def version() -> dict:
    return {"version": __version__}
