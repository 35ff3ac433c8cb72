"""The chat page in a real browser: streaming, Stop, history, settings, conversations, tools."""

import json
import re
import time

import httpx

from tests.web.conftest import SETTINGS_KEY

# Records every distinct text the last answer shows, so a test can see it arrive in pieces.
RECORD_STREAM = """() => {
  window.__seen = [];
  new MutationObserver(() => {
    const body = [...document.querySelectorAll('#messages .message.assistant .body')].pop();
    const text = body ? body.textContent : '';
    if (text && window.__seen[window.__seen.length - 1] !== text) window.__seen.push(text);
  }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
}"""


def test_page_runs_under_its_own_csp(server, browser):
    context = browser.new_context()
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.goto(server.url + "/")
    page.locator("#model option[value='test-model']").wait_for(state="attached", timeout=15_000)
    # A rendered answer (aligned table cells, a code block) needs nothing the CSP forbids.
    page.evaluate("""localStorage.setItem('mlxserve.chats.v1', JSON.stringify({current: 'c', chats: [{id: 'c', title: 't',
        messages: [{role: 'user', content: 'q'}, {role: 'assistant', content: '| a |\\n|--:|\\n| 1 |\\n\\n```\\nx\\n```'}]}]}))""")
    page.reload()
    page.locator("td").wait_for()
    assert page.eval_on_selector("td", "td => getComputedStyle(td).textAlign") == "right"
    assert page.locator(".codeblock .copy").count() == 1
    context.close()
    assert problems == []


def test_answer_streams_in_and_survives_reload(server, chat_page, examples):
    page = chat_page
    page.open(server)
    # Shift+Enter adds a line instead of sending.
    page.fill("#prompt", "line one")
    page.press("#prompt", "Shift+Enter")
    assert page.input_value("#prompt") == "line one\n"
    assert page.locator("#messages .message").count() == 0

    page.ask(examples["short"]["messages"][0]["content"])
    answer = examples["short"]["completion"]
    page.last_answer().locator(".body", has_text=answer).wait_for()
    page.wait_done()
    assert page.last_answer().locator(".body").text_content() == answer
    stats = page.last_answer().locator(".stats").text_content()
    assert "first token" in stats and "tokens/s" in stats
    assert re.search(r"\d+ prompt \+ \d+ completion tokens", stats)

    page.reload()
    assert page.locator("#messages .message.user .body").first.text_content() == "Say hello."
    assert page.answers().first.locator(".body").text_content() == answer
    assert "completion tokens" in page.answers().first.locator(".stats").text_content()
    assert page.locator("#chats .open").first.text_content() == "Say hello."

    page.click("#new-chat")
    assert page.locator("#messages .message").count() == 0
    assert page.locator("#chats .open").count() == 2
    assert page.errors == []


def test_long_answer_streams_in_as_paragraphs(server, chat_page, examples):
    page = chat_page
    page.open(server)
    page.evaluate(RECORD_STREAM)
    page.ask(examples["long"]["messages"][0]["content"])
    page.wait_done()
    story = examples["long"]["completion"]
    paragraphs = page.last_answer().locator(".body p")
    assert paragraphs.all_text_contents() == story.split("\n\n")
    seen = page.evaluate("window.__seen")
    # Shown piece by piece as it streamed, each view a beginning of the story.
    assert len(seen) >= 3 and all(story.replace("\n", "").startswith(s) for s in seen), seen
    # The live figures give way to the final ones under the answer (no late frame redraws them).
    page.wait_for_timeout(200)
    assert page.text_content("#stats") == ""
    assert "completion tokens" in page.last_answer().locator(".stats").text_content()


def test_stop_aborts_and_frees_the_server(server, chat_page, examples, engine, monkeypatch):
    steps = []  # tokens the engine generates (on its own thread)
    step = engine._step

    def slow_step(run):
        # 10 ms a token: the story takes over 3 s, so "stopped early" holds on a loaded machine too.
        steps.append(1)
        time.sleep(0.01)
        return step(run)

    monkeypatch.setattr(engine, "_step", slow_step)
    page = chat_page
    page.open(server)
    # Stop from inside the page as soon as the answer has started streaming: a click
    # sent from the test process could arrive after the whole (fast) story on a loaded machine.
    page.evaluate(
        """() => new MutationObserver((_, observer) => {
             const body = document.querySelector('#messages .message.assistant .body');
             if (body && body.textContent.length > 0) { observer.disconnect(); document.getElementById('stop').click(); }
           }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true})"""
    )
    page.ask(examples["long"]["messages"][0]["content"])
    page.last_answer().locator(".note", has_text="(stopped)").wait_for()
    shown = page.last_answer().locator(".body").text_content()
    assert "first token" in page.last_answer().locator(".stats").text_content()  # figures for what came
    assert 0 < len(shown) < len(examples["long"]["completion"]) / 2
    # The abort closed the connection: the server stops generating and frees the slot.
    server.wait_idle(timeout=20)
    assert httpx.get(server.url + "/healthz").json()["active_requests"] == 0
    assert len(steps) < len(engine.tokenizer.encode(examples["long"]["completion"]))  # stopped early
    assert page.is_enabled("#send") and page.is_disabled("#stop")
    # What was shown when Stop was pressed is what stays, after a reload too.
    page.reload()
    assert page.last_answer().locator(".body").text_content() == shown
    assert page.errors == []


def open_settings(page):
    page.click("#open-settings")
    page.locator("#settings[open]").wait_for()


def test_settings_persist_and_reach_the_server(server, chat_page, examples):
    page = chat_page
    page.open(server)
    open_settings(page)
    page.fill("#set-system", "You are a helpful assistant.")  # one the model was trained with
    page.fill("#set-temperature", "0")
    page.fill("#set-top-p", "0.5")
    page.fill("#set-max-tokens", "5")
    page.keyboard.press("Escape")
    assert not page.is_visible("#settings")

    page.reload()
    open_settings(page)
    assert page.input_value("#set-system") == "You are a helpful assistant."
    assert page.input_value("#set-temperature") == "0"
    assert page.input_value("#set-top-p") == "0.5"
    assert page.input_value("#set-max-tokens") == "5"
    page.click("#close-settings")

    with page.expect_request("**/v1/chat/completions") as request:
        page.ask(examples["long"]["messages"][0]["content"])
    body = request.value.post_data_json
    assert body["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0, 0.5, 5)
    assert body["stream_options"] == {"include_usage": True}
    page.wait_done()
    # The server honoured max_tokens: 5 tokens, cut off, and the page says why.
    answer = page.last_answer()
    assert "+ 5 completion tokens" in answer.locator(".stats").text_content()
    assert "finish_reason length" in answer.locator(".note").text_content()
    assert examples["long"]["completion"].startswith(answer.locator(".body").text_content())


def test_invalid_settings_are_named_and_nothing_is_sent(server, chat_page):
    page = chat_page
    page.open(server)
    open_settings(page)
    page.fill("#set-tools", "[{not json")
    assert "not valid JSON" in page.text_content("#settings-problem")
    page.click("#close-settings")
    requests = []
    page.on("request", lambda r: "/chat/completions" in r.url and requests.append(r))
    page.ask("Say hello.")
    page.locator("#error", has_text="Tools (JSON)").wait_for()
    assert requests == [] and page.input_value("#prompt") == "Say hello."
    assert page.evaluate(f"JSON.parse(localStorage.getItem('{SETTINGS_KEY}')).tools") == "[{not json"


def test_conversations_switch_rename_delete(server, chat_page, examples):
    page = chat_page
    page.open(server)
    page.ask("Say hello.")
    page.wait_done()
    page.click("#new-chat")
    page.ask(examples["json"]["messages"][0]["content"])
    page.wait_done()
    titles = page.locator("#chats .open")
    assert titles.all_text_contents() == ["Give me a JSON object describing Paris.", "Say hello."]

    # Switch back to the first chat.
    titles.nth(1).click()
    assert page.last_answer().locator(".body").text_content() == examples["short"]["completion"]

    # Rename with the keyboard: Enter keeps the new title, Escape would cancel.
    page.locator("#chats li").nth(1).locator(".rename").click()
    page.fill("#chats .rename-input", "Greetings")
    page.press("#chats .rename-input", "Enter")
    assert titles.all_text_contents() == ["Give me a JSON object describing Paris.", "Greetings"]
    page.locator("#chats li").nth(0).locator(".rename").click()
    page.fill("#chats .rename-input", "ignored")
    page.press("#chats .rename-input", "Escape")
    assert titles.nth(0).text_content() == "Give me a JSON object describing Paris."

    # Delete takes two clicks.
    delete = page.locator("#chats li").nth(0).locator(".delete")
    delete.click()
    assert titles.count() == 2
    page.locator("#chats li").nth(0).locator(".delete").click()
    assert titles.all_text_contents() == ["Greetings"]

    page.reload()
    assert titles.all_text_contents() == ["Greetings"]
    assert page.locator("#chats .open[aria-current=true]").text_content() == "Greetings"
    assert page.last_answer().locator(".body").text_content() == examples["short"]["completion"]
    # Deleting the last chat leaves a fresh empty one.
    page.locator("#chats .delete").click()
    page.locator("#chats .delete").click()
    assert titles.all_text_contents() == ["New chat"]
    assert page.locator("#messages .message").count() == 0
    assert page.errors == []


def test_reasoning_shows_in_a_collapsible_block(server, chat_page, examples):
    page = chat_page
    page.open(server)
    page.ask(examples["think"]["messages"][0]["content"])
    page.wait_done()
    answer = page.last_answer()
    assert answer.locator(".body").text_content() == "The answer is 5."
    reasoning = answer.locator("details.reasoning")
    assert reasoning.locator(".text").text_content().strip() == "2 plus 3 makes 5."
    assert reasoning.get_attribute("open") is None  # collapsed once the answer is there
    reasoning.locator("summary").click()
    assert reasoning.get_attribute("open") == ""
    assert reasoning.locator(".text").is_visible()


def test_tool_call_card_and_result_round_trip(server, chat_page, examples):
    page = chat_page
    page.open(server)
    open_settings(page)
    page.fill("#set-tools", json.dumps(examples["tool_call"]["tools"], indent=2))
    assert page.text_content("#settings-problem") == ""
    page.click("#close-settings")

    page.ask(examples["tool_call"]["messages"][0]["content"])
    page.wait_done()
    card = page.last_answer().locator(".toolcall")
    card.wait_for()
    assert card.locator(".toolhead strong").text_content() == "get_weather"
    assert json.loads(card.locator("pre").text_content()) == {"city": "Paris"}
    assert page.last_answer().locator(".body").text_content() == ""

    # The person answers for the tool; the model then answers with the result.
    result = examples["tool_result"]["messages"][2]["content"]
    with page.expect_request("**/v1/chat/completions") as request:
        page.fill(".toolresult textarea", result)
        page.click(".toolresult button")
    sent = request.value.post_data_json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert sent[2]["tool_call_id"] == sent[1]["tool_calls"][0]["id"]
    page.wait_done()
    assert page.last_answer().locator(".body").text_content() == examples["tool_result"]["completion"]
    assert page.locator("#messages .message.tool pre").text_content() == json.dumps(json.loads(result), indent=2)
    page.reload()
    assert page.locator("#messages .toolcall").count() == 1 and page.locator(".toolresult").count() == 0


def test_model_picker_lists_the_models_and_sends_the_choice(server, chat_page, examples):
    page = chat_page
    models = {"object": "list", "data": [
        {"id": "test-model", "object": "model", "mlxserve": {"loaded": True}},
        {"id": "other-model", "object": "model", "mlxserve": {"loaded": False}},
    ]}
    # Two models, as a server with a models.yaml would list them.
    page.route("**/v1/models", lambda route: route.fulfill(json=models))
    page.open(server)
    options = page.locator("#model option")
    assert options.all_text_contents() == ["test-model", "other-model (not loaded)"]
    assert page.input_value("#model") == "test-model"
    page.select_option("#model", "other-model")
    page.reload()
    page.locator("#model option[value='other-model']").wait_for(state="attached")
    assert page.input_value("#model") == "other-model"  # kept in the browser
    page.select_option("#model", "test-model")
    with page.expect_request("**/v1/chat/completions") as request:
        page.ask(examples["short"]["messages"][0]["content"])
    assert request.value.post_data_json["model"] == "test-model"
    page.last_answer().locator(".body", has_text=examples["short"]["completion"]).wait_for()


def test_parallel_tool_calls_get_one_form_and_are_answered_together(server, chat_page):
    page = chat_page
    page.open(server)
    calls = [{"id": f"call_{i}", "type": "function", "function": {"name": "add", "arguments": args}}
             for i, args in enumerate(['{"a": 1, "b": 2}', '{"a": 3, "b": 4}'])]
    page.store_chats([{"id": "t", "title": "tools", "messages": [
        {"role": "user", "content": "Add twice."}, {"role": "assistant", "content": "", "tool_calls": calls}]}], "t")
    assert page.locator(".toolcall").count() == 2 and page.locator(".toolresult textarea").count() == 2
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        headers={"Content-Type": "text/event-stream"},
        body='data: {"choices": [{"index": 0, "delta": {"content": "3 and 7."}}]}\n\ndata: [DONE]\n\n'))
    page.fill("#tool-result-0", "3")
    page.fill("#tool-result-1", "7")
    with page.expect_request("**/v1/chat/completions") as request:
        page.click(".toolresult button")
    sent = request.value.post_data_json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool"]
    assert sent[1]["tool_calls"] == calls
    assert [(m["tool_call_id"], m["content"]) for m in sent[2:]] == [("call_0", "3"), ("call_1", "7")]
    page.last_answer().locator(".body", has_text="3 and 7.").wait_for()
    assert page.locator(".toolresult").count() == 0


def test_messages_left_out_by_the_window_are_named(make_server, chat_page, examples):
    server = make_server(max_context=1)  # the model sees only the last message
    page = chat_page
    page.open(server)
    page.ask(examples["json"]["messages"][0]["content"])
    page.wait_done()
    assert "left out" not in page.last_answer().locator(".stats").text_content()
    page.ask(examples["short"]["messages"][0]["content"])
    page.wait_done()
    assert page.last_answer().locator(".body").text_content() == examples["short"]["completion"]
    assert "2 earlier messages left out to fit the context" in page.last_answer().locator(".stats").text_content()
