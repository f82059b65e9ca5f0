"""``/openapi.json``, ``/docs`` (Swagger UI) and ``/redoc``: behind a key (any scope) once the
server has keys, unless ``--public-docs``. The schema lists every route and field, which is a
map for whoever probes the server."""

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from llmloop.serve.auth.deps import require_key_unless

router = APIRouter(
    include_in_schema=False, dependencies=[Depends(require_key_unless("public_docs"))]
)
OPENAPI_URL = "/openapi.json"


@router.get(OPENAPI_URL)  # scope: any key, or none with --public-docs
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")  # scope: any key, or none with --public-docs
def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - Swagger UI")


@router.get("/redoc")  # scope: any key, or none with --public-docs
def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - ReDoc")
