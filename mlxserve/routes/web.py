"""The bundled chat page: ``/`` and its few static assets, from package data.

Only the files named in ``ASSETS`` are served, so nothing else in the package
can be read over HTTP and unknown paths fall through to the JSON 404 envelope.
"""

import hashlib
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlxserve.errors import NotFoundError

router = APIRouter(include_in_schema=False)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

# name -> content type. Explicit, so a path can never escape the web folder.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "keydialog.js": "text/javascript; charset=utf-8",
    "markdown.js": "text/javascript; charset=utf-8",
    "messages.js": "text/javascript; charset=utf-8",
    "store.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# Everything is revalidated on each load (a 304 thanks to the ETag), so after an
# upgrade the page never runs a mix of old and new modules.
CACHE = "no-cache"

# Only same-origin scripts, styles and fetches: the page needs nothing else, and this
# is a second line of defence should model text ever reach the DOM as markup.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _serve(request: Request, name: str, media_type: str, headers: dict) -> Response:
    body = (WEB_DIR / name).read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"Cache-Control": CACHE, "ETag": etag, "X-Content-Type-Options": "nosniff", **headers}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.get("/")
async def index(request: Request) -> Response:
    return _serve(
        request,
        "index.html",
        "text/html; charset=utf-8",
        {"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer"},
    )


@router.get("/static/{name}")
async def asset(request: Request, name: str) -> Response:
    if name not in ASSETS:
        raise NotFoundError(f"Unknown route: GET /static/{name}")
    return _serve(request, name, ASSETS[name], {})
