"""The official openai SDK's helpers against the real server: the async client,
the streaming helper's events, and the parse helpers with pydantic models.

(Plain sync create/stream, the sync tool-call stream helper and the sync
``parse(response_format=...)`` are covered in test_chat, test_tools and test_structured.)
"""

import asyncio
import json

import openai
import pydantic
import pytest


class City(pydantic.BaseModel):
    city: str
    country: str


class Add(pydantic.BaseModel):
    """Add two integers."""

    a: int
    b: int


def async_client(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="sk-local", max_retries=0)


def test_async_create_streamed_and_not(server, examples):
    example = examples["short"]

    async def both():
        async with async_client(server) as client:
            reply = await client.chat.completions.create(model="m", messages=example["messages"])
            stream = await client.chat.completions.create(
                model="m",
                messages=example["messages"],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
        return reply, chunks

    reply, chunks = asyncio.run(both())
    assert reply.choices[0].message.content == example["completion"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == example["completion"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_async_stream_helper_events_and_final_completion(server, examples):
    example = examples["short"]

    async def run():
        async with async_client(server) as client:
            async with client.chat.completions.stream(
                model="m", messages=example["messages"]
            ) as stream:
                events = [event async for event in stream]
                return events, await stream.get_final_completion()

    events, final = asyncio.run(run())
    deltas = [e.delta for e in events if e.type == "content.delta"]
    [done] = [e for e in events if e.type == "content.done"]
    assert "".join(deltas) == done.content == example["completion"]
    assert len(deltas) > 1  # streamed, not one block
    assert final.choices[0].message.content == example["completion"]
    assert final.choices[0].finish_reason == "stop"


def test_async_parse_with_a_pydantic_model(server, examples):
    async def run():
        async with async_client(server) as client:
            return await client.chat.completions.parse(
                model="m", messages=examples["json"]["messages"], response_format=City
            )

    reply = asyncio.run(run())
    assert reply.choices[0].message.parsed == City(city="Paris", country="France")


def test_stream_helper_parses_a_pydantic_response_format(server, examples):
    with server.openai().chat.completions.stream(
        model="m", messages=examples["json"]["messages"], response_format=City
    ) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    [done] = [e for e in events if e.type == "content.done"]
    assert done.parsed == City(city="Paris", country="France")
    assert final.choices[0].message.parsed == City(city="Paris", country="France")


@pytest.mark.parametrize("forced", [False, True], ids=["auto", "forced"])
def test_parse_with_a_strict_pydantic_function_tool(server, examples, forced):
    tool = openai.pydantic_function_tool(Add, name="add")
    choice = {"tool_choice": {"type": "function", "function": {"name": "add"}}} if forced else {}
    reply = server.openai().chat.completions.parse(
        model="m", messages=examples["add_tool"]["messages"], tools=[tool], **choice
    )
    [call] = reply.choices[0].message.tool_calls
    assert call.function.name == "add"
    assert call.function.parsed_arguments == Add(a=2, b=3)
    assert json.loads(call.function.arguments) == {"a": 2, "b": 3}
