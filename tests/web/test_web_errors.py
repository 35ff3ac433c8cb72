"""The chat page under errors: each one is shown and handled, never a silent hang."""

import asyncio
import json
import threading
import time

import httpx

from mlxserve.app import create_app
from mlxserve.config import DEMO_MODEL_PATH, Settings
from tests.conftest import MODEL_NAME, LiveServer


def test_context_too_long_is_explained(make_server, chat_page):
    server = make_server(max_context_tokens=64)  # the server answers 400 context_length_exceeded
    page = chat_page
    page.open(server)
    page.ask("word " * 100)
    page.locator("#error:not([hidden])").wait_for()
    error = page.text_content("#error")
    assert "maximum context length" in error and "Start a new chat" in error
    assert page.last_answer().locator(".note").text_content() == "(failed)"
    assert page.is_enabled("#send")


def test_busy_server_shows_retry_after_then_retries(make_server, chat_page, examples, engine, monkeypatch):
    step = engine._step
    # 5 ms a token: the story holds the slot for over 1.5 s, even when the page is slow to ask.
    monkeypatch.setattr(engine, "_step", lambda run: time.sleep(0.005) or step(run))
    server = make_server(queue_size=0)  # nothing may wait: a second request gets 429
    page = chat_page
    page.open(server)
    story_started = threading.Event()

    def long_story():
        with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=60,
                          json={"messages": examples["long"]["messages"], "stream": True}) as r:
            for line in r.iter_lines():
                story_started.set()

    statuses = []
    page.on("response", lambda r: "/chat/completions" in r.url and statuses.append(r.status))

    def first_try_during_the_story(route):
        # The page's first request goes out only once the long story holds the only slot.
        threading.Thread(target=long_story, daemon=True).start()
        assert story_started.wait(30)
        route.continue_()

    page.route("**/v1/chat/completions", first_try_during_the_story, times=1)
    page.ask(examples["short"]["messages"][0]["content"])
    page.locator("#error", has_text="Retry-After: 2 s").wait_for()
    assert "busy (429" in page.text_content("#error") and page.is_enabled("#stop")
    # Once the story is done, the retry gets the slot and the answer streams in.
    page.last_answer().locator(".body", has_text=examples["short"]["completion"]).wait_for(timeout=30_000)
    page.wait_done()
    assert statuses[0] == 429 and statuses[-1] == 200
    assert page.is_hidden("#error")
    server.wait_idle(timeout=20)


def test_escape_cancels_a_pending_retry(make_server, chat_page):
    page = chat_page
    page.open(make_server())
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=429, headers={"Retry-After": "30", "Content-Type": "application/json"},
        body=json.dumps({"error": {"message": "Busy.", "type": "server_busy", "param": None, "code": "server_busy"}})))
    page.ask("Say hello.")
    page.locator("#error", has_text="Retrying in 30 s").wait_for()
    page.press("#prompt", "Escape")  # the keyboard's Stop
    page.last_answer().locator(".note", has_text="(stopped)").wait_for()
    assert page.is_enabled("#send")


def test_api_key_is_asked_once_stored_and_sent(make_server, chat_page, examples):
    server = make_server(api_key="s3cret")
    page = chat_page
    page.open(server, wait_model=False)
    # /v1/models answered 401: the page asks for the key.
    page.locator("#key-dialog[open]").wait_for()
    page.fill("#api-key", "wrong")
    page.press("#api-key", "Enter")
    page.locator("#key-reason", has_text="rejected").wait_for()
    page.fill("#api-key", "s3cret")
    page.click("#key-save")
    page.locator("#model option[value='test-model']").wait_for(state="attached")
    assert not page.is_visible("#key-dialog")

    with page.expect_request("**/v1/chat/completions") as request:
        page.ask(examples["short"]["messages"][0]["content"])
    assert request.value.headers["authorization"] == "Bearer s3cret"
    page.last_answer().locator(".body", has_text=examples["short"]["completion"]).wait_for()

    # Kept in the browser: a reload asks nothing.
    page.reload()
    page.locator("#model option[value='test-model']").wait_for(state="attached")
    assert not page.is_visible("#key-dialog")

    # A key the server no longer takes is asked for again, then the request is retried.
    page.evaluate("localStorage.setItem('mlxserve.apiKey.v1', JSON.stringify('old'))")
    page.reload()
    page.locator("#key-dialog[open]").wait_for()
    page.click("#key-cancel")
    page.locator("#error", has_text="needs an API key").wait_for()
    page.click("#new-chat")
    page.ask(examples["short"]["messages"][0]["content"])
    page.locator("#key-dialog[open]").wait_for()
    page.fill("#api-key", "s3cret")
    page.press("#api-key", "Enter")
    page.last_answer().locator(".body", has_text=examples["short"]["completion"]).wait_for()
    assert page.is_hidden("#error")
    assert page.errors == []


def test_server_down_is_said_not_hung(make_server, chat_page):
    server = make_server()
    page = chat_page
    page.open(server)
    server.__exit__()  # the server goes away while the page is open
    page.ask("Say hello.")
    page.locator("#error", has_text="Could not reach the server").wait_for()
    assert page.last_answer().locator(".note").text_content() == "(failed)"
    assert "Is mlxserve running?" in page.text_content("#error")
    assert page.is_enabled("#send")


def test_broken_streams_are_reported(server, chat_page):
    page = chat_page
    page.open(server)
    sse = "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": "Half"}}]}) + "\n\n"
    # The connection ends before [DONE]...
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=sse))
    page.ask("Say hello.")
    page.locator("#error", has_text="closed the connection before the answer was complete").wait_for()
    assert page.last_answer().locator(".body").text_content() == "Half"
    # ...or the server reports an error inside the stream.
    page.unroute("**/v1/chat/completions")
    error = {"error": {"message": "The generation failed: boom", "type": "server_error", "param": None, "code": None}}
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"},
        body=sse + "data: " + json.dumps(error) + "\n\ndata: [DONE]\n\n"))
    page.ask("Say hello.")
    page.locator("#error", has_text="The generation failed: boom").wait_for()
    assert page.is_enabled("#send")


class QueuedFront:
    """The app behind a front that makes chat streams wait, sending ``: queued position=N``
    comments first (as a server does while a request waits for a slot); ``advance`` steps it."""

    def __init__(self, app, positions):
        self.app = app
        self.positions = positions
        self.steps = threading.Semaphore(0)

    def advance(self):
        self.steps.release()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            return await self.app(scope, receive, send)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for position in self.positions:
            await send({"type": "http.response.body", "body": f": queued position={position}\n\n".encode(),
                        "more_body": True})
            await asyncio.to_thread(self.steps.acquire)

        async def body_only(message):
            if message["type"] == "http.response.body":
                await send(message)

        await self.app(scope, receive, body_only)


def test_queue_position_is_shown_until_the_first_token(engine, chat_page, examples):
    settings = Settings(model=str(DEMO_MODEL_PATH), served_model_name=MODEL_NAME)
    front = QueuedFront(create_app(settings, engine=engine), positions=[2, 1])
    with LiveServer(front) as server:
        page = chat_page
        page.open(server)
        page.ask(examples["short"]["messages"][0]["content"])
        note = page.last_answer().locator(".note")
        note.filter(has_text="waiting (2 ahead)").wait_for()
        front.advance()
        note.filter(has_text="waiting (1 ahead)").wait_for()
        assert page.is_enabled("#stop")
        front.advance()
        page.last_answer().locator(".body", has_text=examples["short"]["completion"]).wait_for()
        page.wait_done()
        assert note.text_content() == ""
