"""The OpenAPI document and its browsable docs, behind the same keys as the API (with
`API_KEYS` set, a browser that sends no `Authorization` header gets 401: fetch the document
with a key instead)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
async def openapi_document(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=_document_url(request), title=_title(request))


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=_document_url(request), title=_title(request))


def _document_url(request: Request) -> str:
    # Behind a proxy that mounts the service under a prefix, the page must ask for it there.
    return f"{request.scope.get('root_path', '')}/openapi.json"


def _title(request: Request) -> str:
    return f"{request.app.title} docs"
