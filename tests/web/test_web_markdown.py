"""Markdown in the chat page: rendered as elements, and hostile text stays inert."""

import json
import time

import pytest

HOSTILE_USER = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> **not bold**'

HOSTILE_ANSWER = """<img src=x onerror="window.__pwned=3">
<script>window.__pwned=4</script>
[click me](javascript:window.__pwned=5) [data](data:text/html,hi) [relative](/v1/models) [mixed](JaVaScRiPt:window.__pwned=6)
<a href="javascript:window.__pwned=7">raw link</a> <iframe src="javascript:window.__pwned=8"></iframe>
![pixel](https://tracker.example/p.png) ![bad](javascript:window.__pwned=9)

```html
<img src=x onerror="window.__pwned=10"><script>window.__pwned=11</script>
```

`<b>inline</b>`

| <svg onload="window.__pwned=12"> | b |
|---|---|
| <script>window.__pwned=13</script> | [x](javascript:window.__pwned=14) |

- <img src=x onerror="window.__pwned=15">
"""

GOOD_ANSWER = """## Plan

Some **bold**, *emphasis*, ~~gone~~, `inline()` and snake_case_name; see [the docs](https://example.com/a?b=1) or https://example.org/x.

1. first
2. second
   - nested *one*
   - nested two
3. third

| name | value |
|:-----|------:|
| a    | `1|2` |

> quoted

```python
print("hi")
```
"""


def render(page, markdown):
    """The renderer's output for `markdown`, as HTML (serialized by the test, never by the page)."""
    return page.evaluate(
        """async (text) => {
             const { renderMarkdown } = await import('/static/markdown.js');
             const div = document.createElement('div');
             renderMarkdown(div, text);
             div.querySelectorAll('.codehead').forEach((h) => h.remove());
             return div.innerHTML;
           }""",
        markdown,
    )


CASES = [
    ("plain", "<p>plain</p>"),
    ("a\nb", "<p>a<br>b</p>"),
    ("**b** *i* _i_ ~~s~~", "<p><strong>b</strong> <em>i</em> <em>i</em> <del>s</del></p>"),
    ("2 * 3 * 4 and a_b_c", "<p>2 * 3 * 4 and a_b_c</p>"),
    ("\\*not em\\*", "<p>*not em*</p>"),
    ("`a <b> c`", "<p><code>a &lt;b&gt; c</code></p>"),
    ("# H1\n### H3", "<h1>H1</h1><h3>H3</h3>"),
    ("- a\n- b", "<ul><li>a</li><li>b</li></ul>"),
    ("3. c\n4. d", '<ol start="3"><li>c</li><li>d</li></ol>'),
    ("- a\n  - b\n- c", "<ul><li>a<ul><li>b</li></ul></li><li>c</li></ul>"),
    ("> q", "<blockquote><p>q</p></blockquote>"),
    ("---", "<hr>"),
    ("```js\nx < 1\n```", '<div class="codeblock"><pre><code data-language="js">x &lt; 1</code></pre></div>'),
    ("```\nunclosed", '<div class="codeblock"><pre><code>unclosed</code></pre></div>'),
    ("| a | b |\n|---|--:|\n| 1 | 2 |",
     '<div class="tablewrap"><table><thead><tr><th scope="col">a</th><th scope="col" style="text-align: right;">b</th>'
     '</tr></thead><tbody><tr><td>1</td><td style="text-align: right;">2</td></tr></tbody></table></div>'),
    ("[x](https://a.example/)", '<p><a href="https://a.example/" target="_blank" rel="noopener noreferrer">x</a></p>'),
    ("mail <mailto:a@b.example>", '<p>mail <a href="mailto:a@b.example" target="_blank" rel="noopener noreferrer">mailto:a@b.example</a></p>'),
    ("see https://a.example/x.", '<p>see <a href="https://a.example/x" target="_blank" rel="noopener noreferrer">https://a.example/x</a>.</p>'),
    ("[x](javascript:alert(1))", "<p>x</p>"),
    ("[x](/relative)", "<p>x</p>"),
    ("<b>raw</b>", "<p>&lt;b&gt;raw&lt;/b&gt;</p>"),
]


def test_markdown_renders_as_elements(server, chat_page):
    chat_page.open(server, wait_model=False)
    rendered = {markdown: render(chat_page, markdown) for markdown, _ in CASES}
    assert rendered == dict(CASES)


def test_pathological_text_renders_quickly(server, chat_page):
    chat_page.open(server, wait_model=False)
    ms = chat_page.evaluate(
        """async () => {
             const { renderMarkdown } = await import('/static/markdown.js');
             const junk = '[**_`<a '.repeat(15000) + '\\n' + '| a '.repeat(2000) + '\\n|---|\\n' + '- '.repeat(3000);
             const t0 = performance.now();
             renderMarkdown(document.createElement('div'), junk);
             return performance.now() - t0;
           }"""
    )
    assert ms < 1500, ms  # with unbounded lookahead: 1.6 s here, 0.2 s bounded


def test_rendered_answer_has_lists_tables_and_a_working_copy_button(server, browser):
    context = browser.new_context(bypass_csp=True, permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(server.url + "/")
    page.evaluate(
        """(answer) => { localStorage.setItem('mlxserve.chats.v1', JSON.stringify({current: 'c', chats: [{id: 'c',
             title: 'md', messages: [{role: 'user', content: 'show me'}, {role: 'assistant', content: answer}]}]})); }""",
        GOOD_ANSWER,
    )
    page.reload()
    body = page.locator("#messages .message.assistant .body")
    assert body.locator("h2").text_content() == "Plan"
    assert body.locator("strong").text_content() == "bold" and body.locator("em").first.text_content() == "emphasis"
    assert "snake_case_name" in body.locator("p").first.text_content()
    assert body.locator("ol > li").count() == 3 and body.locator("ol ul > li").count() == 2
    assert body.locator("td").all_text_contents() == ["a", "1|2"]
    assert body.locator("blockquote").text_content() == "quoted"
    links = body.locator("a")
    assert [links.nth(i).get_attribute("href") for i in range(links.count())] == [
        "https://example.com/a?b=1",
        "https://example.org/x",
    ]
    assert all(links.nth(i).get_attribute("rel") == "noopener noreferrer" for i in range(links.count()))
    body.locator(".codeblock .copy").click()
    page.locator(".codeblock .copy", has_text="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == 'print("hi")'
    context.close()


def test_hostile_text_renders_inertly(server, chat_page):
    page = chat_page
    page.open(server)
    # Hostile text the person typed, sent for real...
    page.ask(HOSTILE_USER)
    page.wait_done()
    # ...and a hostile answer and title in stored history.
    chats = page.evaluate("JSON.parse(localStorage.getItem('mlxserve.chats.v1')).chats")
    chats[0]["title"] = '<img src=x onerror="window.__pwned=16">'
    chats[0]["messages"].append({"role": "assistant", "content": HOSTILE_ANSWER, "reasoning": HOSTILE_USER,
                                 "tool_calls": [{"id": "c1", "type": "function",
                                                 "function": {"name": "<script>x</script>", "arguments": HOSTILE_USER}}]})
    page.store_chats(chats, chats[0]["id"])

    assert page.locator("#messages .message.user .body").text_content() == HOSTILE_USER
    answer = page.last_answer()
    text = answer.locator(".body").text_content()
    assert '<img src=x onerror="window.__pwned=3">' in text and "<script>window.__pwned=4</script>" in text
    assert answer.locator("pre code").first.text_content() == (
        '<img src=x onerror="window.__pwned=10"><script>window.__pwned=11</script>'
    )
    assert answer.locator("p > code").text_content() == "<b>inline</b>"
    assert answer.locator(".reasoning .text").text_content() == HOSTILE_USER
    assert answer.locator(".toolhead strong").text_content() == "<script>x</script>"
    assert page.locator("#chats .open").text_content() == '<img src=x onerror="window.__pwned=16">'
    # No element the text describes exists; the only links go to http(s).
    assert page.locator("body img, body script, body iframe, body svg, body b, body object, body embed").count() == 0
    hrefs = page.eval_on_selector_all("#messages a", "as => as.map(a => a.getAttribute('href'))")
    assert hrefs == ["https://tracker.example/p.png"]
    # The would-be links are plain text: clicking them goes nowhere.
    page.get_by_text("click me").click()
    page.get_by_text("mixed").click()
    time.sleep(0.3)  # give a would-be handler time to fire
    assert page.evaluate("window.__pwned") is None
    assert page.url == server.url + "/"
    assert page.errors == []


def test_hostile_answer_streamed_in_pieces_renders_inertly(server, chat_page):
    """The live path: hostile markup arrives split across stream chunks (and as
    reasoning and a tool name), and is rendered as text while it streams and after."""
    page = chat_page
    page.open(server)
    pieces = [HOSTILE_ANSWER[i:i + 7] for i in range(0, len(HOSTILE_ANSWER), 7)]
    deltas = [{"role": "assistant", "reasoning_content": HOSTILE_USER}]
    deltas += [{"content": piece} for piece in pieces]
    deltas.append({"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                                   "function": {"name": "<script>x</script>", "arguments": "{}"}}]})
    body = "".join(
        "data: " + json.dumps({"object": "chat.completion.chunk",
                               "choices": [{"index": 0, "delta": d, "finish_reason": None}]}) + "\n\n"
        for d in deltas
    ) + "data: [DONE]\n\n"
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        headers={"Content-Type": "text/event-stream"}, body=body))
    page.ask("Say hello.")
    answer = page.last_answer()
    answer.locator(".toolhead strong", has_text="<script>x</script>").wait_for()
    text = answer.locator(".body").text_content()
    assert '<img src=x onerror="window.__pwned=3">' in text and "<script>window.__pwned=4</script>" in text
    assert answer.locator(".reasoning .text").text_content() == HOSTILE_USER
    assert page.locator("body img, body script, body iframe, body svg, body b, body object, body embed").count() == 0
    time.sleep(0.3)  # give a would-be handler time to fire
    assert page.evaluate("window.__pwned") is None
    assert page.errors == []


@pytest.mark.parametrize("stored", [
    "not json",
    '{"chats": "nope"}',
    '{"current": "c", "chats": [null, {"id": "c", "title": null, "messages": [null, 7, {"role": "assistant", "content": {"x": 1},'
    ' "tool_calls": [null, {"id": 3}, {"function": {"name": null, "arguments": {"a": 1}}}], "reasoning": 5}]}]}',
])
def test_corrupt_storage_does_not_brick_the_page(server, chat_page, examples, stored):
    page = chat_page
    page.open(server)
    page.evaluate("(v) => localStorage.setItem('mlxserve.chats.v1', v)", stored)
    page.reload()
    page.click("#new-chat")
    page.ask(examples["short"]["messages"][0]["content"])
    page.last_answer().locator(".body", has_text=examples["short"]["completion"]).wait_for()
    assert page.errors == []
