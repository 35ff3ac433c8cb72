"""The bundled chat page over plain HTTP: content types, caching, no shadowed routes.

The page itself is driven in a real browser by tests/web/.
"""

import httpx
import pytest

SCRIPTS = ["app.js", "api.js", "keydialog.js", "markdown.js", "messages.js", "store.js"]


def test_index_is_html_and_never_cached_stale(server):
    r = httpx.get(server.url + "/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache" and r.headers["etag"]
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["referrer-policy"] == "no-referrer"
    assert '<script src="/static/app.js" type="module">' in r.text
    # Fully offline: nothing is loaded from another origin.
    assert "http://" not in r.text and "https://" not in r.text


@pytest.mark.parametrize(
    "name, content_type",
    [(name, "text/javascript; charset=utf-8") for name in SCRIPTS] + [("style.css", "text/css; charset=utf-8")],
)
def test_assets_are_revalidated_by_etag(server, name, content_type):
    r = httpx.get(f"{server.url}/static/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["x-content-type-options"] == "nosniff"
    again = httpx.get(f"{server.url}/static/{name}", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == r.headers["etag"]
    assert httpx.get(f"{server.url}/static/{name}", headers={"If-None-Match": '"stale"'}).status_code == 200
    # Model text never goes in as markup: no HTML parsing anywhere in the page's code.
    for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "DOMParser", "eval("):
        assert sink not in r.text


@pytest.mark.parametrize("path", ["/nope", "/static/nope.js", "/static/..%2Fapp.py", "/static/"])
def test_unknown_routes_keep_the_json_404_envelope(server, path):
    r = httpx.get(server.url + path)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == "not_found"


def test_api_routes_are_not_shadowed(server):
    assert httpx.get(server.url + "/v1/models").json()["data"][0]["id"] == "test-model"
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    r = httpx.post(server.url + "/")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_every_file_of_the_page_is_served():
    from mlxserve.routes.web import ASSETS, WEB_DIR

    files = {p.name for p in WEB_DIR.iterdir()} - {"index.html"}
    assert set(ASSETS) == files == set(SCRIPTS) | {"style.css"}
