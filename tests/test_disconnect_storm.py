"""Dozens of clients that drop mid-stream or while queued: nothing leaks, the next request is served at once."""

import threading
import time

import httpx
import pytest

from tests.test_observability import scrape, value

STORY = [{"role": "user", "content": "Tell me a long story."}]
HELLO = [{"role": "user", "content": "Say hello."}]
CLIENTS_PER_KIND = 10


def drop_mid_stream(url: str, path: str, body: dict) -> None:
    """Read the stream until some text arrived, then hang up."""
    with httpx.Client(base_url=url, timeout=60) as http:
        with http.stream("POST", path, json=body) as r:
            for line in r.iter_lines():
                if '"content"' in line or '"text_delta"' in line or '"message"' in line:
                    break


def drop_while_queued(url: str) -> None:
    """Open a stream, hang up as soon as it says it waits in the queue (or it starts)."""
    with httpx.Client(base_url=url, timeout=60) as http:
        body = {"messages": STORY, "max_tokens": 2000, "stream": True}
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            for line in r.iter_lines():
                if line.startswith(": queued") or line.startswith("data:"):
                    break


def drop_by_timeout(url: str) -> None:
    """A non-streaming request whose client gives up after a moment, queued or not."""
    try:
        httpx.post(
            url + "/v1/chat/completions",
            json={"messages": STORY, "max_tokens": 2000},
            timeout=httpx.Timeout(60, read=0.3),
        )
    except httpx.ReadTimeout:
        pass


@pytest.mark.parametrize("max_requests", [1, 2])
def test_disconnect_storm_leaks_nothing(make_server, max_requests):
    server = make_server(max_requests=max_requests, queue_size=100, queue_timeout=60)
    url = server.url
    story = {"messages": STORY, "max_tokens": 2000, "stream": True}
    kinds = [
        lambda: drop_mid_stream(url, "/v1/chat/completions", story),
        lambda: drop_mid_stream(url, "/v1/messages", {"model": "m", **story}),
        lambda: drop_mid_stream(url, "/api/chat", {"model": "m", "messages": STORY, "options": {"num_predict": 2000}}),
        lambda: drop_while_queued(url),
        lambda: drop_by_timeout(url),
    ]
    start = threading.Barrier(len(kinds) * CLIENTS_PER_KIND)
    errors = []

    def client(kind):
        try:
            start.wait()
            kind()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=client, args=(kind,)) for kind in kinds for _ in range(CLIENTS_PER_KIND)
    ]
    peak = [0]
    storming = threading.Event()

    def watch_queue():  # the storm must really queue, or it proves little
        while not storming.is_set():
            peak[0] = max(peak[0], server.service.gate.queued)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch_queue)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    storming.set()
    watcher.join()
    assert not errors, errors[:3]
    assert peak[0] >= 10, peak[0]

    server.wait_idle(timeout=15)
    svc = server.service
    assert svc.gate.active == 0 and svc.gate.queued == 0
    assert sum(svc.models.active.values()) == 0
    assert svc.reserved_memory == 0
    m = scrape(server)
    assert value(m, "mlxserve_active_requests") == 0 and value(m, "mlxserve_queued_requests") == 0

    t0 = time.monotonic()
    reply = httpx.post(url + "/v1/chat/completions", json={"messages": HELLO}, timeout=30)
    took = time.monotonic() - t0
    assert reply.status_code == 200 and reply.json()["choices"][0]["finish_reason"] == "stop"
    assert took < 2.0, f"the next request took {took:.2f}s"
