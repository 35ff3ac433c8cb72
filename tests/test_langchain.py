"""LangChain's ChatOpenAI, a tool framework users run locally, against the real server:
bind a tool, get the call, run it, send a ToolMessage back, get the trained answer."""

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def chat_model(server, **kwargs) -> ChatOpenAI:
    return ChatOpenAI(
        model="m", base_url=server.url + "/v1", api_key="sk-local", max_retries=0, **kwargs
    )


def test_chatopenai_tool_round_trip(server, examples):
    llm = chat_model(server).bind_tools([add])
    messages = [HumanMessage(examples["add_tool"]["messages"][0]["content"])]

    ai = llm.invoke(messages)
    assert [(c["name"], c["args"]) for c in ai.tool_calls] == [("add", {"a": 2, "b": 3})]
    [call] = ai.tool_calls
    result = add.invoke(call["args"])
    messages += [ai, ToolMessage(str(result), tool_call_id=call["id"])]

    final = llm.invoke(messages)
    assert final.content == examples["add_result"]["completion"]
    assert final.tool_calls == []


def test_chatopenai_streams_the_tool_call_and_the_text(server, examples):
    llm = chat_model(server, stream_usage=True).bind_tools([add])
    question = [HumanMessage(examples["add_tool"]["messages"][0]["content"])]
    chunks = list(llm.stream(question))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert merged.usage_metadata["output_tokens"] > 0

    text = list(chat_model(server).stream(examples["short"]["messages"][0]["content"]))
    assert len(text) > 1
    assert "".join(c.content for c in text) == examples["short"]["completion"]
