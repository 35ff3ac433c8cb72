"""Fixtures for driving the chat page in a real headless Chromium."""

import json
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHATS_KEY = "mlxserve.chats.v1"  # as in mlxserve/web/store.js
SETTINGS_KEY = "mlxserve.settings.v1"


@pytest.fixture(scope="session")
def browser():
    """A real headless Chromium (the system one: Playwright cannot download its own here)."""
    assert CHROMIUM.exists(), "the browser tests need /usr/bin/chromium (apt-get install chromium)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class ChatPage:
    """The chat page of one browser context, with the few moves the tests repeat."""

    def __init__(self, page):
        self.page = page
        self.errors = []  # uncaught exceptions in the page
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def __getattr__(self, name):
        return getattr(self.page, name)

    def open(self, server, *, wait_model=True):
        self.page.goto(server.url + "/")
        if wait_model:
            self.page.locator("#model option[value='test-model']").wait_for(state="attached")

    def store_chats(self, chats, current):
        """Replaces the stored conversations and reloads the page."""
        self.page.evaluate(
            "([k, v]) => localStorage.setItem(k, v)", [CHATS_KEY, json.dumps({"current": current, "chats": chats})]
        )
        self.page.reload()

    def ask(self, text):
        self.page.fill("#prompt", text)
        self.page.press("#prompt", "Enter")

    def wait_done(self, timeout=30_000):
        """Waits until no answer is in flight (Send enabled again)."""
        self.page.wait_for_function("!document.getElementById('send').disabled", timeout=timeout)

    def answers(self):
        return self.page.locator("#messages .message.assistant")

    def last_answer(self):
        return self.answers().last


@pytest.fixture
def chat_page(browser):
    """A fresh page (own storage). Its CSP is bypassed: Playwright's waiting predicates
    need eval, and the hostile-text tests should prove the JS safe without the CSP's help."""
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield ChatPage(page)
    context.close()
