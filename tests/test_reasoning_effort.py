"""Reasoning effort turns thinking off ("none", "minimal") or on in the chat template.

The test model's template has Qwen 3's ``enable_thinking`` switch; trained on the "think"
example, it answers with a think block when thinking is on, and without one when the
template closes an empty block for it.
"""

import openai
import pytest

from tests.test_responses import prompt_of


def _prompt_len(engine, example, **switch) -> int:
    prompt = engine.tokenizer.apply_chat_template(
        example["messages"], add_generation_prompt=True, **switch
    )
    return len(prompt)


@pytest.mark.parametrize("effort", ["none", "minimal"])
def test_responses_low_effort_turns_thinking_off(server, engine, examples, effort):
    think = examples["think"]
    r = server.openai().responses.create(
        model="m", input=prompt_of(think), reasoning={"effort": effort}
    )
    assert [item.type for item in r.output] == ["message"]
    assert r.output_text == "The answer is 5."
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    assert r.usage.input_tokens == _prompt_len(engine, think, enable_thinking=False)
    assert r.reasoning.effort == effort


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_responses_other_efforts_turn_thinking_on(server, engine, examples, effort):
    think = examples["think"]
    r = server.openai().responses.create(
        model="m", input=prompt_of(think), reasoning={"effort": effort}
    )
    reasoning, message = r.output
    assert [c.text for c in reasoning.content] == ["2 plus 3 makes 5."]
    assert message.content[0].text == "The answer is 5."
    assert r.usage.input_tokens == _prompt_len(engine, think, enable_thinking=True)


def test_responses_stream_without_thinking_has_no_reasoning_events(server, examples):
    with server.openai().responses.stream(
        model="m", input=prompt_of(examples["think"]), reasoning={"effort": "none"}
    ) as stream:
        kinds = {e.type for e in stream}
        final = stream.get_final_response()
    assert not [k for k in kinds if "reasoning" in k]
    assert final.output_text == "The answer is 5."


def test_no_effort_keeps_the_templates_default(server, engine, examples):
    think = examples["think"]
    r = server.openai().responses.create(model="m", input=prompt_of(think))
    assert r.output[0].type == "reasoning"
    assert r.usage.input_tokens == _prompt_len(engine, think)


def test_chat_completions_reasoning_effort(server, examples):
    client = server.openai()
    messages = examples["think"]["messages"]
    off = client.chat.completions.create(model="m", messages=messages, reasoning_effort="minimal")
    on = client.chat.completions.create(model="m", messages=messages, reasoning_effort="high")
    assert off.choices[0].message.content == on.choices[0].message.content == "The answer is 5."
    assert getattr(off.choices[0].message, "reasoning_content", None) is None
    assert on.choices[0].message.reasoning_content == "2 plus 3 makes 5."


def test_unknown_effort_is_a_400_naming_it(server, examples):
    with pytest.raises(openai.BadRequestError) as info:
        server.openai().responses.create(
            model="m", input=prompt_of(examples["think"]), reasoning={"effort": "extreme"}
        )
    assert info.value.body["param"] == "reasoning.effort"
    with pytest.raises(openai.BadRequestError) as info:
        server.openai().chat.completions.create(
            model="m", messages=examples["think"]["messages"], reasoning_effort="extreme"
        )
    assert info.value.body["param"] == "reasoning_effort"
