"""The fast per-token chunk renderer gives exactly what pydantic renders."""

import json

import pytest

from mlxserve.openai_format import text_template
from mlxserve.schemas.openai import ChatCompletionChunk, ChoiceDelta, ChunkChoice

COMMON = dict(id="chatcmpl-1", created=1, model="m/x", system_fingerprint="fp")


def render(text: str) -> str:
    choice = ChunkChoice(delta=ChoiceDelta(content=text))
    return ChatCompletionChunk(choices=[choice], **COMMON).model_dump_json()


@pytest.mark.parametrize(
    "text", ["hello", ' "quoted" \\ slash', "\n\ttabs\r", "ünïcödé €😀", "\x00\x01\x1f", "</script>", ""]
)
def test_template_renders_like_pydantic(text):
    fast = text_template(render)(text)
    assert json.loads(fast) == json.loads(render(text))


def test_merged_deltas_keep_text_counts_and_the_final_reason():
    from mlxserve.engine import Delta, TokenLogprob

    a = Delta("Hel", None, 5, 1, (TokenLogprob("Hel", -0.1),))
    b = Delta("lo", "stop", 5, 2, (TokenLogprob("lo", -0.2),))
    merged = a.then(b)
    assert merged.text == "Hello" and merged.finish_reason == "stop"
    assert (merged.prompt_tokens, merged.completion_tokens) == (5, 2)
    assert [lp.token for lp in merged.logprobs] == ["Hel", "lo"]
