"""`/console`: the built-in web console, static files shipped inside the package.

The files hold no data, so they load without a key (contract, "Operating it"); the page asks
for one when the API answers 401 and sends it as a bearer token itself. They are read once,
when the app is built, and served from memory: a handful of small files, and a wheel may keep
them somewhere `open()` cannot reach.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files

from fastapi import APIRouter, Request, Response

from app.api.errors import ApiError

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}

# The page shows tool arguments and model output, which are untrusted: besides rendering them
# as text only, nothing but the console's own files may run, load or be framed.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Names carry no version (there is no build step to hash them): revalidate every time,
    # so an upgraded service is never paired with a cached older script.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every servable file of `app/api/console`, by name."""
    assets = {}
    for entry in (files("app.api") / "console").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in MEDIA_TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            assets[entry.name] = Asset(body, MEDIA_TYPES[suffix], etag)
    return assets


def build_router() -> APIRouter:
    """The console's routes, with its files read now (at app creation, never at import)."""
    assets = load_assets()
    router = APIRouter(include_in_schema=False)

    @router.get("/console")
    async def console_page(request: Request) -> Response:
        return _serve(request, assets["index.html"])

    @router.get("/console/{name}")
    async def console_file(name: str, request: Request) -> Response:
        asset = assets.get(name)
        if asset is None:
            raise ApiError(404, f"The console has no file {name!r}.")
        return _serve(request, asset)

    return router


def _serve(request: Request, asset: Asset) -> Response:
    headers = {**HEADERS, "ETag": asset.etag}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)
