"""The bundled chat page: ``/`` and its few static assets, from package data.

Only the files named in ``ASSETS`` are served, so nothing else in the package
can be read over HTTP and unknown paths fall through to the JSON 404 envelope.
"""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from mlxserve.errors import NotFoundError

router = APIRouter(include_in_schema=False)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

# name -> content type. Explicit, so a path can never escape the web folder.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "markdown.js": "text/javascript; charset=utf-8",
    "store.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The page must always be revalidated so an upgrade is seen on the next load;
# the assets may be cached briefly (they change only with the package).
PAGE_CACHE = "no-cache"
ASSET_CACHE = "public, max-age=300"

# Only same-origin scripts, styles and fetches: the page needs nothing else, and this
# is a second line of defence should model text ever reach the DOM as markup.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _read(name: str) -> bytes:
    return (WEB_DIR / name).read_bytes()


@router.get("/")
async def index() -> Response:
    return Response(
        _read("index.html"),
        media_type="text/html; charset=utf-8",
        headers={
            "Cache-Control": PAGE_CACHE,
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/static/{name}")
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFoundError(f"Unknown route: GET /static/{name}")
    return Response(
        _read(name),
        media_type=ASSETS[name],
        headers={"Cache-Control": ASSET_CACHE, "X-Content-Type-Options": "nosniff"},
    )
