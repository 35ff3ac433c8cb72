"""The bundled chat page: served over plain HTTP, then driven in a real headless Chromium."""

import json
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STORAGE_KEY = "mlxserve.chats.v1"  # as in mlxserve/web/app.js


# ---- plain HTTP ------------------------------------------------------------------


def test_index_is_html_and_never_cached_stale(server):
    r = httpx.get(server.url + "/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in r.text
    # Fully offline: nothing is loaded from another origin.
    assert "http://" not in r.text and "https://" not in r.text


@pytest.mark.parametrize(
    "name, content_type",
    [("app.js", "text/javascript; charset=utf-8"), ("style.css", "text/css; charset=utf-8")],
)
def test_assets_load_with_short_caching(server, name, content_type):
    r = httpx.get(f"{server.url}/static/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    assert r.headers["cache-control"] == "public, max-age=300"
    # Model text never goes in as markup (the word may appear in comments only).
    assert ".innerHTML" not in r.text and "insertAdjacentHTML" not in r.text


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


# ---- a real browser ----------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """A real headless Chromium (the system one: Playwright cannot download its own here)."""
    if not CHROMIUM.exists():
        pytest.skip("browser tests need /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page (own storage) with console errors collected in ``page.errors``.

    The page's CSP is bypassed: Playwright's polling predicates need eval, and the
    hostile-text test should prove the JS safe on its own, without the CSP's help.
    """
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    context.close()


def test_page_runs_under_its_own_csp(server, browser):
    context = browser.new_context()
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.goto(server.url + "/")
    page.locator("#model", has_text="model: test-model").wait_for(timeout=15_000)
    context.close()
    assert problems == []


def ask(page, text):
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def assistant_bodies(page):
    return page.locator("#messages .message.assistant .body")


def test_answer_streams_in_and_survives_reload(server, page, examples):
    page.goto(server.url + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('test-model')")
    # Shift+Enter adds a line instead of sending.
    page.fill("#prompt", "line one")
    page.press("#prompt", "Shift+Enter")
    assert page.input_value("#prompt") == "line one\n"
    assert page.locator("#messages .message").count() == 0

    ask(page, examples["short"]["messages"][0]["content"])
    answer = examples["short"]["completion"]
    page.wait_for_function(
        "t => document.querySelector('#messages .message.assistant .body')?.textContent === t", arg=answer
    )
    page.wait_for_function("!document.getElementById('send').disabled")
    stats = page.text_content("#stats")
    assert "first token" in stats and "tokens/s" in stats and "completion tokens" in stats

    page.reload()
    assert page.locator("#messages .message.user .body").first.text_content() == "Say hello."
    assert assistant_bodies(page).first.text_content() == answer
    assert page.errors == []

    page.click("#new-chat")
    assert page.locator("#messages .message").count() == 0
    assert page.locator("#chats button").count() == 2


def test_stop_aborts_and_frees_the_server(server, page, examples):
    page.goto(server.url + "/")
    ask(page, examples["long"]["messages"][0]["content"])
    # Stop once the answer has visibly started streaming.
    page.wait_for_function(
        "() => (document.querySelector('#messages .message.assistant .body')?.textContent || '').length > 5"
    )
    page.click("#stop")
    page.wait_for_function("document.querySelector('#messages .message.assistant .note').textContent === '(stopped)'")
    assert len(assistant_bodies(page).first.text_content()) < len(examples["long"]["completion"])
    # The abort closed the connection: the server stops generating and frees the slot.
    server.wait_idle(timeout=3)
    assert httpx.get(server.url + "/healthz").json()["active_requests"] == 0
    assert page.is_enabled("#send") and page.is_disabled("#stop")
    assert page.errors == []


def test_hostile_stored_answer_renders_as_text(server, page):
    hostile = '<img src=x onerror="window.__pwned=1"> and ```\n<script>window.__pwned=2</script>\n```'
    chat = {
        "id": "evil",
        "title": "<b>title</b>",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": hostile}],
    }
    page.goto(server.url + "/")
    page.evaluate(
        "([k, v]) => localStorage.setItem(k, v)",
        [STORAGE_KEY, json.dumps({"current": "evil", "chats": [chat]})],
    )
    page.reload()
    body = assistant_bodies(page).first
    assert '<img src=x onerror="window.__pwned=1">' in body.text_content()
    assert body.locator("pre code").text_content() == "<script>window.__pwned=2</script>\n"
    assert page.locator("#messages img, #messages script, #chats b").count() == 0
    assert page.locator("#chats button").first.text_content() == "<b>title</b>"
    time.sleep(0.2)  # give a would-be onerror handler time to fire
    assert page.evaluate("window.__pwned") is None


def test_errors_are_shown_not_swallowed(make_server, page):
    # A tiny context window makes the server answer 400 context_length_exceeded.
    server = make_server(max_context_tokens=64)
    page.goto(server.url + "/")
    ask(page, "word " * 100)
    page.wait_for_selector("#error:not([hidden])")
    assert "maximum context length" in page.text_content("#error")
    assert page.is_enabled("#send")

    # Busy (429 + Retry-After), served by the browser so no real load is needed.
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(
            status=429,
            headers={"Retry-After": "7", "Content-Type": "application/json"},
            body=json.dumps({"error": {"message": "Server busy.", "type": "server_busy", "param": None, "code": "server_busy"}}),
        ),
    )
    ask(page, "Say hello.")
    page.wait_for_function("document.getElementById('error').textContent.includes('retry after 7 s')")
    assert "busy" in page.text_content("#error")

    # Network failure: the page says so instead of hanging.
    page.unroute("**/v1/chat/completions")
    page.route("**/v1/chat/completions", lambda route: route.abort("connectionrefused"))
    ask(page, "Say hello.")
    page.wait_for_function("document.getElementById('error').textContent.includes('Network error')")
    assert page.is_enabled("#send")
