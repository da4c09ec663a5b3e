"""The OpenAPI document and its browsable docs, behind the same keys as the API (with
`API_KEYS` set, a browser that sends no `Authorization` header gets 401: fetch the document
with a key instead)."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from app.api.errors import ApiError

router = APIRouter(include_in_schema=False)

# Swagger UI's and ReDoc's files, shipped by fastapi-offline: FastAPI's defaults load them from
# a CDN, which leaves /docs blank on a machine without internet.
ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSET_NAMES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")


@router.get("/openapi.json")
async def openapi_document(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    assets = _assets_url(request)
    return get_swagger_ui_html(
        openapi_url=_document_url(request),
        title=_title(request),
        swagger_js_url=f"{assets}/swagger-ui-bundle.js",
        swagger_css_url=f"{assets}/swagger-ui.css",
        swagger_favicon_url=f"{assets}/favicon.png",
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    assets = _assets_url(request)
    return get_redoc_html(
        openapi_url=_document_url(request),
        title=_title(request),
        redoc_js_url=f"{assets}/redoc.standalone.js",
        redoc_favicon_url=f"{assets}/favicon.png",
        with_google_fonts=False,
    )


@router.get("/docs/assets/{name}")
async def docs_asset(name: str) -> FileResponse:
    if name not in ASSET_NAMES:
        raise ApiError(404, f"no docs asset is named {name!r}")
    return FileResponse(ASSETS / name, headers={"Cache-Control": "public, max-age=86400"})


def _assets_url(request: Request) -> str:
    return f"{request.scope.get('root_path', '')}/docs/assets"


def _document_url(request: Request) -> str:
    # Behind a proxy that mounts the service under a prefix, the page must ask for it there.
    return f"{request.scope.get('root_path', '')}/openapi.json"


def _title(request: Request) -> str:
    return f"{request.app.title} docs"
