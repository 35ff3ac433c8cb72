"""The chat page's keyboard use, narrow screens and themes."""


def test_keyboard_alone(server, chat_page, examples):
    page = chat_page
    page.open(server)
    assert page.evaluate("document.activeElement.id") == "prompt"  # ready to type
    page.ask(examples["short"]["messages"][0]["content"])
    page.wait_done()
    # The answer is announced once, complete (not every token), in a polite live region.
    assert page.get_attribute("#announce", "aria-live") == "polite"
    assert page.text_content("#announce") == "Answer: " + examples["short"]["completion"]
    assert not page.is_visible("#announce") or page.eval_on_selector("#announce", "e => e.offsetWidth") <= 1

    # Tab order follows the page: header, conversations, the conversation, the composer.
    page.focus("#open-settings")
    order = ["open-settings"]
    for _ in range(6):
        page.keyboard.press("Tab")
        order.append(page.evaluate("(e => e.id || e.className || e.tagName)(document.activeElement)"))
    assert order == ["open-settings", "new-chat", "open", "icon rename", "icon delete", "prompt", "send"]

    # Settings open from the keyboard; Escape closes them and focus goes back.
    page.focus("#open-settings")
    page.keyboard.press("Enter")
    page.locator("#settings[open]").wait_for()
    assert page.evaluate("document.activeElement.id") == "set-system"
    for label in ["System prompt", "Temperature", "top_p", "Max tokens", "Tools (JSON)"]:
        assert page.get_by_label(label).count() == 1
    page.keyboard.press("Escape")
    assert not page.is_visible("#settings")
    assert page.evaluate("document.activeElement.id") == "open-settings"


def test_narrow_screen_hides_the_list_behind_a_button(server, browser):
    context = browser.new_context(bypass_csp=True, viewport={"width": 390, "height": 760})
    page = context.new_page()
    page.goto(server.url + "/")
    assert not page.is_visible("#sidebar") and page.is_visible("#toggle-chats")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sideways
    page.click("#toggle-chats")
    assert page.is_visible("#sidebar") and page.get_attribute("#toggle-chats", "aria-expanded") == "true"
    page.click("#new-chat")
    assert not page.is_visible("#sidebar") and page.get_attribute("#toggle-chats", "aria-expanded") == "false"
    context.close()


def test_theme_follows_the_system(server, browser):
    colors = {}
    for scheme in ("light", "dark"):
        context = browser.new_context(color_scheme=scheme)
        page = context.new_page()
        page.goto(server.url + "/")
        colors[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
        context.close()
    assert colors == {"light": "rgb(255, 255, 255)", "dark": "rgb(28, 28, 30)"}
