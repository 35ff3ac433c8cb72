"""The chat page under errors: each one is shown and handled, never a silent hang."""

import json
import threading
import time

import httpx


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


class SlotHolder:
    """Holds the server's only slot with the long story (end-of-turn banned, so it runs on)
    until :meth:`done`, as a long answer for another client would."""

    def __init__(self, server, engine, examples):
        no_eos = {str(t): -100 for t in engine.tokenizer.eos_token_ids}
        self.body = {"messages": examples["long"]["messages"], "max_tokens": 1500, "logit_bias": no_eos, "stream": True}
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(server.url,), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while server.service.gate.active == 0:
            assert time.monotonic() < deadline, "the story did not start"
            time.sleep(0.01)

    def _run(self, url):
        with httpx.stream("POST", url + "/v1/chat/completions", json=self.body, timeout=60) as r:
            for _ in r.iter_lines():
                if self.release.is_set():
                    break

    def done(self):
        self.release.set()
        self.thread.join(30)


def test_busy_server_shows_retry_after_then_retries(make_server, chat_page, examples, engine):
    server = make_server(queue_size=0)  # nothing may wait: a second request gets 429
    page = chat_page
    page.open(server)
    statuses = []
    page.on("response", lambda r: "/chat/completions" in r.url and statuses.append(r.status))
    story = SlotHolder(server, engine, examples)
    page.ask(examples["short"]["messages"][0]["content"])
    page.locator("#error", has_text="Retry-After: 2 s").wait_for()
    assert "busy (429" in page.text_content("#error") and page.is_enabled("#stop")
    # Once the story is done, a retry gets the slot and the answer streams in.
    story.done()
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


def test_queue_position_is_shown_until_the_first_token(make_server, chat_page, examples, engine):
    server = make_server(max_requests=1, queue_size=4)
    story = SlotHolder(server, engine, examples)
    short = {"messages": examples["short"]["messages"], "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=short, timeout=60) as first:
        lines = first.iter_lines()  # kept: dropping the iterator would close the stream
        assert next(lines) == ": queued position=1"
        page = chat_page
        page.open(server)
        page.ask(examples["short"]["messages"][0]["content"])
        note = page.last_answer().locator(".note")
        note.filter(has_text="waiting (2 ahead)").wait_for()
    # The one ahead gave up: the page moves up.
    note.filter(has_text="waiting (1 ahead)").wait_for()
    assert page.is_enabled("#stop")
    story.done()
    page.last_answer().locator(".body", has_text=examples["short"]["completion"]).wait_for()
    page.wait_done()
    assert note.text_content() == ""
    server.wait_idle(timeout=20)


def test_queue_timeout_in_the_stream_is_retried(make_server, chat_page, examples, engine):
    server = make_server(max_requests=1, queue_size=4, queue_timeout=0.5)
    story = SlotHolder(server, engine, examples)
    page = chat_page
    page.open(server)
    page.ask(examples["short"]["messages"][0]["content"])
    # Queued, then told in the stream that no slot came in time: the page waits and retries.
    page.locator("#error", has_text="No generation slot became free").wait_for()
    assert "Retry-After: 5 s" in page.text_content("#error")
    story.done()
    page.last_answer().locator(".body", has_text=examples["short"]["completion"]).wait_for(timeout=30_000)
    assert page.is_hidden("#error")
    server.wait_idle(timeout=20)
