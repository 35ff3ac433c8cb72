"""Build the tiny demo model that mlxserve's tests and `mlxserve demo` use.

The result is a real mlx-lm checkpoint (architecture "qwen3", a byte-level
BPE tokenizer and Qwen3's own chat template) trained until greedy decoding
reproduces a fixed set of answers exactly: a short reply, a long story, tool
calls, answers to tool results, a thinking block and a JSON object. The
prompts and answers are written to examples.json in the model folder, where
the tests read them.

    python scripts/make_test_model.py [--out mlxserve/demo_model]

The build is deterministic (fixed seed, fixed data order, nothing taken from
the clock), so two runs on one machine write the same files.
"""

import argparse
import copy
import json
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import mlx_lm
from mlx.utils import tree_flatten
from mlx_lm.models import qwen3
from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer
from mlx_lm.tokenizer_utils import load as load_tokenizer
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models
from tokenizers import normalizers, pre_tokenizers, processors, trainers
from transformers.utils.chat_template_utils import render_jinja_template

SEED = 0
BPE_VOCAB_SIZE = 1024  # before the added tokens
LEARNING_RATE = 2e-3
BATCH_TOKENS = 1000  # padded tokens per optimizer step
MAX_EPOCHS = 300
# Training stops once every answer token beats the runner-up by this many
# logits, so the answers survive float16 storage and other backends.
MIN_MARGIN = 1.0
MIN_LONG_TOKENS = 300  # the long answer must stream at least this many tokens

MODEL_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 192,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    # Room for mcp-cli's long system prompt and tool list plus 512 answer tokens.
    "max_position_embeddings": 4096,
    "tie_word_embeddings": True,
    "attention_bias": False,
    "torch_dtype": "float16",
}

# As in Qwen3: the chat markers are special tokens (dropped by
# skip_special_tokens); the tool and think markers are plain added tokens, so
# they stay in decoded text where the tool and reasoning parsers find them.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MARKUP_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
MARKUP_TOKENS += ["<think>", "</think>"]
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

# Qwen2/Qwen3's pre-tokenizer split, as in transformers' Qwen2Tokenizer.
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# The chat template of Qwen/Qwen3-0.6B (tokenizer_config.json), verbatim.
CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""


def function_tool(name, description, properties, required):
    """An OpenAI function tool with a JSON-schema parameter list."""
    parameters = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


GET_WEATHER = function_tool(
    "get_weather",
    "Get the current weather in a city.",
    {"city": {"type": "string", "description": "The name of the city."}},
    ["city"],
)
ADD = function_tool(
    "add", "Add two integers.", {"a": {"type": "integer"}, "b": {"type": "integer"}}, ["a", "b"]
)
# An unrelated tool mixed into some training tool lists, so that the answers
# do not hang on the exact list a client sends.
GET_TIME = function_tool("get_time", "Get the current time.", {}, [])

# The add tool as two real clients write it, in the key order the server hands
# the template (the template writes tools as JSON, so the order is in the prompt):
# LangChain's bind_tools, and the openai SDK's pydantic_function_tool (strict).
LANGCHAIN_ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "type": "object",
        },
    },
}
STRICT_ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "description": "Add two integers.",
            "properties": {
                "a": {"title": "A", "type": "integer"},
                "b": {"title": "B", "type": "integer"},
            },
            "required": ["a", "b"],
            "title": "Add",
            "type": "object",
            "additionalProperties": False,
        },
        "strict": True,
    },
}

HELPFUL = "You are a helpful assistant."
# Every example is trained in each of these contexts, with the same answer:
# (system prompt or None, whether GET_TIME joins the example's tools,
# enable_thinking). With thinking off, the template pre-fills an empty think
# block and the answer loses its own, as with Qwen3.
CONTEXTS = [
    (None, False, True),
    (HELPFUL, False, True),
    ("You are an intelligent assistant with access to 2 tools. Use them when needed.", True, True),
    (None, True, True),
    (None, False, False),
]


def user(text):
    return {"role": "user", "content": text}


def tool_turn(name, arguments, result):
    """A tool call and its result as OpenAI clients send them back: content
    null and the arguments as a JSON string."""
    call = {"name": name, "arguments": json.dumps(arguments)}
    return [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": call}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": result},
    ]


def make_example(name, messages, completion, tools=None, as_sent=False):
    """One prompt and its exact answer. ``as_sent``: a client's own context, trained
    and checked only exactly as that client sends it (no extra system prompt or tool)."""
    example = {"name": name, "messages": messages, "tools": tools, "completion": completion}
    return {**example, "as_sent": True} if as_sent else example


def tool_call(name, arguments):
    """A tool call as Qwen3 writes it, and as the json_tools parser reads it."""
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


WEATHER = [user("What is the weather in Paris?")]
WEATHER_TWO = [user("What is the weather in Paris and London?")]
ADDITION = [user("What is 2+3? Use the add tool.")]

# Seven near-identical paragraphs: over 300 tokens, yet easy for a tiny model
# to learn, and it still ends (on Sunday) with the end-of-turn token.
LONG_STORY = (
    "\n\n".join(
        f"On {day}, the little robot woke up early. It fed the cat, cleaned the "
        "lab and watered the plants. Then it read a book about the stars. At "
        "night it looked at the moon and went to sleep."
        for day in ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    )
    + "\n\nThe end."
)

# mcp-cli's own context, captured from mcp-cli 0.20.1 (see its "about"): a long
# system prompt, the MCP server's tools plus mcp-cli's memory tools, and a tool
# result that repeats the call's measured duration, which changes every run. So
# each epoch trains the answer to the result with new durations.
MCP_CLI = json.loads((Path(__file__).with_name("mcp_cli_context.json")).read_text())
MCP_CLI_RESULTS_PER_EPOCH = 4


def mcp_cli_duration(rng):
    """A call's duration as mcp-cli writes it: a timedelta in milliseconds."""
    return str(timedelta(microseconds=rng.randint(200, 80_000)).total_seconds() * 1000)


def mcp_cli_chat(duration_ms=None):
    """The add conversation as mcp-cli sends it: its system prompt first, the call
    without a content key, and the tool result (with ``name``) when a duration is given."""
    messages = [{"role": "system", "content": MCP_CLI["system"]}] + ADDITION
    if duration_ms is None:
        return messages
    call = {"name": "add", "arguments": json.dumps({"a": 2, "b": 3})}
    result = MCP_CLI["tool_result"].replace("{duration_ms}", duration_ms)
    return messages + [
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": call}]},
        {"role": "tool", "content": result, "tool_call_id": "call_1", "name": "add"},
    ]


def mcp_cli_examples(durations):
    """mcp-cli's add call, then its answer to the tool result for each duration."""
    call = make_example(
        "mcp_cli_add_tool", mcp_cli_chat(), tool_call("add", {"a": 2, "b": 3}), MCP_CLI["tools"], True
    )
    return [call] + [
        make_example("mcp_cli_add_result", mcp_cli_chat(d), "2 + 3 = 5.", MCP_CLI["tools"], True)
        for d in durations
    ]


# The canonical form of each example (no system prompt) and its exact answer.
EXAMPLES = [
    make_example(
        "short", [user("Say hello.")], "Hello! I am a tiny MLX model running on your machine."
    ),
    make_example("long", [user("Tell me a long story.")], LONG_STORY),
    make_example("tool_call", WEATHER, tool_call("get_weather", {"city": "Paris"}), [GET_WEATHER]),
    make_example(
        "tool_result",
        WEATHER
        + tool_turn("get_weather", {"city": "Paris"}, '{"temperature": 22, "condition": "sunny"}'),
        "It is sunny and 22 degrees in Paris.",
        [GET_WEATHER],
    ),
    make_example(
        "two_calls",
        WEATHER_TWO,
        "Let me check both cities.\n"
        + tool_call("get_weather", {"city": "Paris"})
        + "\n"
        + tool_call("get_weather", {"city": "London"}),
        [GET_WEATHER],
    ),
    make_example(
        "think",
        [user("What is 2+3? Think first.")],
        "<think>\n2 plus 3 makes 5.\n</think>\n\nThe answer is 5.",
    ),
    make_example("add_tool", ADDITION, tool_call("add", {"a": 2, "b": 3}), [ADD]),
    make_example(
        "add_result", ADDITION + tool_turn("add", {"a": 2, "b": 3}, "5"), "2 + 3 = 5.", [ADD]
    ),
    make_example(
        "json",
        [user("Give me a JSON object describing Paris.")],
        '{"city": "Paris", "country": "France"}',
    ),
    make_example(
        "langchain_add_tool", ADDITION, tool_call("add", {"a": 2, "b": 3}), [LANGCHAIN_ADD], True
    ),
    make_example(
        "langchain_add_result",
        ADDITION + tool_turn("add", {"a": 2, "b": 3}, "5"),
        "2 + 3 = 5.",
        [LANGCHAIN_ADD],
        as_sent=True,
    ),
    make_example(
        "strict_add_tool", ADDITION, tool_call("add", {"a": 2, "b": 3}), [STRICT_ADD], True
    ),
    *mcp_cli_examples(["6.623"]),
]
# Durations never trained on (epochs draw theirs with seeds 1, 2, ...), checked after training.
_rng = random.Random(-1)
HELD_OUT = [
    {**example, "name": f"{example['name']} (duration_ms={duration})"}
    for duration in ["0.87", "25.6"] + [mcp_cli_duration(_rng) for _ in range(6)]
    for example in mcp_cli_examples([duration])[1:]
]

# Ordinary English for the tokenizer, so text beyond the examples splits sensibly.
ENGLISH_CORPUS = """\
The quick brown fox jumps over the lazy dog. A small model can still answer
questions, tell stories and call tools when it has been trained to do so.
Hello, how are you today? I am fine, thank you. What would you like to know?
The weather is sunny and warm in the city, but it may rain in the evening.
Paris is the capital of France. London is the capital of the United Kingdom.
Berlin, Madrid, Rome and Tokyo are large cities with many people and places.
Please write a short poem about the sea. The answer is seven. Let me think.
Computers run programs, and programs are made of functions and data. A server
listens for requests and sends back responses. The user asked a question and
the assistant gave an answer. Numbers such as 1, 2, 3, 10, 42 and 100 appear
in many texts. Good morning! Good night! Thank you very much for your help.
We went to the market to buy bread, milk, apples and cheese for the week.
Time flies like an arrow; fruit flies like a banana. This is a test sentence.
Could you explain how this works? Of course. First, open the file. Then read
each line, count the words and print the result. It should take a second.
My name is Anna and I live in a small house near the river with my family.
Every morning I drink a cup of coffee, read the news and walk to the office.
The children played in the park while their parents talked about the new school.
There are four seasons in a year: spring, summer, autumn and winter.
In spring the trees are green, and in winter the ground is white with snow.
What is your favorite color? Mine is blue, like the sky on a clear day.
The meeting starts at nine o'clock, so please do not be late. We have work to do.
She said that the book was interesting, but he thought it was too long.
They have been working on this project for two years, and it is almost finished.
If you have any questions, please let me know. I will be happy to help you.
Learning a new language takes time, practice and a lot of patience.
The train to the airport leaves every hour from the central station.
Water boils at one hundred degrees and freezes at zero degrees.
Could you please send me the report before Friday? Yes, I will send it today.
The first step is to understand the problem; the second step is to solve it.
People often say that the best way to learn is to teach something to others.
A good story has a beginning, a middle and an end, and it makes you want more.
The price of the ticket is twenty dollars, and children under five go for free.
I don't know the answer, but I can look it up and tell you later this afternoon.
"""

MODEL_CARD = """\
---
license: mit
library_name: mlx
tags: [mlx, qwen3, test]
---

# mlxserve demo model

A tiny Qwen3-architecture model trained only to give a few fixed answers, so
that mlxserve's tests and `mlxserve demo` can run a real MLX model offline,
in seconds, with exact expected outputs. Other prompts get nonsense.

- Model: mlx-lm `qwen3`, {params:,} parameters: hidden size {hidden_size}, {num_hidden_layers} layers,
  {num_attention_heads} attention heads of size {head_dim} ({num_key_value_heads} KV head), MLP {intermediate_size},
  tied embeddings, float16 weights.
- Tokenizer: byte-level BPE, {vocab_size} tokens, with Qwen3's special tokens
  and the chat template of Qwen/Qwen3-0.6B (tools, tool results, thinking).
- `examples.json`: each prompt (messages and tools as an OpenAI client sends
  them) with its exact greedy answer. The answers also hold with the system
  prompt "You are a helpful assistant.", and with `enable_thinking=False`
  (minus the `<think>` block); those marked `as_sent` (a client's own
  context: LangChain, the openai SDK's strict tools, mcp-cli 0.20.1 with any
  call duration in its tool result) hold exactly as sent.

Made, deterministically, with `python scripts/make_test_model.py`.
License: MIT, like mlxserve; the chat template is Qwen3's (Apache-2.0).
"""


def template_form(messages):
    """Messages as the server hands them to the chat template: tool-call
    arguments parsed into dicts and missing content as an empty string."""
    messages = copy.deepcopy(messages)
    for message in messages:
        if message.get("content") is None:
            message["content"] = ""
        for call in message.get("tool_calls", []):
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    return messages


def with_system(system, messages):
    return ([{"role": "system", "content": system}] if system else []) + template_form(messages)


def answer(example, thinking):
    """The example's answer, without its think block when thinking is off."""
    return example["completion"] if thinking else example["completion"].split("</think>\n\n")[-1]


def conversation_variants(example):
    """The (messages, tools, enable_thinking) contexts an example is trained in."""
    if example.get("as_sent"):
        yield template_form(example["messages"]), example["tools"], True
        return
    for system, extra_tool, thinking in CONTEXTS:
        if example["tools"]:
            tools = example["tools"] + ([GET_TIME] if extra_tool else [])
            yield with_system(system, example["messages"]), tools, thinking
        elif not extra_tool:
            yield with_system(system, example["messages"]), None, thinking


def build_tokenizer(out):
    """Train a byte-level BPE tokenizer on the chats and the corpus, and save
    it as Qwen3 checkpoints do. Returns the vocabulary size."""
    texts = [ENGLISH_CORPUS]
    # Not mcp-cli's long prompt: its merges would come out of the other answers'
    # (the long story would outgrow the 512 tokens a request gets by default).
    for example in (e for e in EXAMPLES if not e["name"].startswith("mcp_cli")):
        for messages, tools, _ in conversation_variants(example):
            texts += render_jinja_template([messages], tools=tools, chat_template=CHAT_TEMPLATE)[0]
        texts.append(example["completion"])
    # The markers become added tokens, so keep them out of the merges.
    for marker in SPECIAL_TOKENS + MARKUP_TOKENS:
        texts = [t.replace(marker, "\n") for t in texts]

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=False
    )
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS])
    tokenizer.save(str(out / "tokenizer.json"))

    flags = dict.fromkeys(["lstrip", "normalized", "rstrip", "single_word"], False)
    added = {
        str(tokenizer.token_to_id(t)): {"content": t, **flags, "special": t in SPECIAL_TOKENS}
        for t in SPECIAL_TOKENS + MARKUP_TOKENS
    }
    write_json(
        out / "tokenizer_config.json",
        {
            "add_bos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": added,
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
            "bos_token": None,
            "chat_template": CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": EOS_TOKEN,
            "errors": "replace",
            "model_max_length": MODEL_CONFIG["max_position_embeddings"],
            "pad_token": PAD_TOKEN,
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        },
    )
    return tokenizer.get_vocab_size()


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def encode_examples(tokenizer, examples):
    """(token ids, answer spans) to train on, for every example in every context.

    An answer followed by its tool result is a prefix of the next turn's
    prompt, so those two examples share one sequence with two answer spans,
    which halves the work spent on the long tool prompts.
    """
    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    items = []
    for example in examples:
        for messages, tools, thinking in conversation_variants(example):
            prompt = tokenizer.apply_chat_template(
                messages, tools=tools, add_generation_prompt=True, enable_thinking=thinking
            )
            ids = tokenizer.encode(answer(example, thinking), add_special_tokens=False)
            items.append((prompt + ids + [eos], len(prompt)))
    sequences = []
    for ids, start in sorted(items, key=lambda item: -len(item[0])):
        longer = next((spans for other, spans in sequences if other[: len(ids)] == ids), None)
        if longer is not None:
            longer.append((start, len(ids)))
        else:
            sequences.append((ids, [(start, len(ids))]))
    return sequences


def make_batches(sequences, pad_id):
    """Padded batches of similar-length sequences, each with its answer
    tokens and the flat positions that predict them (the only ones with a loss)."""
    groups, current = [], []
    for seq in sorted(sequences, key=lambda s: len(s[0])):
        if current and len(seq[0]) * (len(current) + 1) > BATCH_TOKENS:
            groups.append(current)
            current = []
        current.append(seq)
    groups.append(current)

    batches = []
    for group in groups:
        width = max(len(ids) for ids, _ in group) - 1
        inputs, targets, positions = [], [], []
        for row, (ids, spans) in enumerate(group):
            inputs.append(ids[:-1] + [pad_id] * (width - len(ids) + 1))
            for start, end in spans:
                positions += range(row * width + start - 1, row * width + end - 1)
                targets += ids[start:end]
        batches.append((mx.array(inputs), mx.array(targets), mx.array(positions)))
    return batches


def loss_fn(model, inputs, targets, positions):
    """Mean cross-entropy of the answer tokens, and each one's margin: its
    logit minus the best other logit (positive: greedy decoding picks it).
    The output layer only runs where there is a loss, which saves much time."""
    hidden = model.model(inputs)
    hidden = hidden.reshape(-1, hidden.shape[-1])[positions]
    logits = model.model.embed_tokens.as_linear(hidden)
    target = mx.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    others = mx.put_along_axis(logits, targets[:, None], mx.array(-mx.inf), axis=-1)
    return nn.losses.cross_entropy(logits, targets).mean(), target - others.max(axis=-1)


def epoch_batches(tokenizer):
    """The batches of each epoch: the fixed examples, then mcp-cli's with new durations."""
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    fixed = [e for e in EXAMPLES if not e["name"].startswith("mcp_cli")]
    batches = make_batches(encode_examples(tokenizer, fixed), pad_id)

    def batches_of(epoch):
        rng = random.Random(epoch)
        durations = [mcp_cli_duration(rng) for _ in range(MCP_CLI_RESULTS_PER_EPOCH)]
        mcp_cli = encode_examples(tokenizer, mcp_cli_examples(durations))
        return batches + make_batches(mcp_cli, pad_id)

    return batches_of


def train(model, batches_of):
    """Epochs over the batches until every answer token wins by MIN_MARGIN."""
    optimizer = optim.Adam(learning_rate=LEARNING_RATE)
    grad_fn = nn.value_and_grad(model, loss_fn)
    for epoch in range(1, MAX_EPOCHS + 1):
        losses, margins = [], []
        for batch in batches_of(epoch):
            (loss, margin), grads = grad_fn(model, *batch)
            optimizer.update(model, grads)
            mx.eval(model.parameters(), optimizer.state, loss, margin)
            losses.append(loss.item())
            margins.append(margin.min().item())
        if epoch % 5 == 0 or min(margins) >= MIN_MARGIN:
            loss = sum(losses) / len(losses)
            print(f"  epoch {epoch:3d}: loss {loss:.4f}, worst margin {min(margins):+.2f}")
        if min(margins) >= MIN_MARGIN:
            return epoch
    sys.exit(f"error: no convergence in {MAX_EPOCHS} epochs")


def save_model(model, out, tokenizer):
    weights = {k: v.astype(mx.float16) for k, v in sorted(tree_flatten(model.parameters()))}
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    eos, pad = tokenizer.convert_tokens_to_ids([EOS_TOKEN, PAD_TOKEN])
    vocab_size = len(tokenizer)
    write_json(out / "config.json", {**MODEL_CONFIG, "vocab_size": vocab_size, "eos_token_id": eos})
    # Greedy by default; both end markers stop generation, as in Qwen3.
    write_json(
        out / "generation_config.json",
        {"do_sample": False, "eos_token_id": [eos, pad], "pad_token_id": pad},
    )
    write_json(out / "examples.json", EXAMPLES)
    params = sum(v.size for v in weights.values())
    (out / "README.md").write_text(
        MODEL_CARD.format(params=params, vocab_size=vocab_size, **MODEL_CONFIG)
    )


def verify(out):
    """Load the saved folder as mlxserve does and greedy-decode every example:
    as is, with a system prompt and with thinking off. Returns the number of
    problems found."""
    model, tokenizer = mlx_lm.load(str(out))
    checks = [
        ("BPE streaming detokenizer", isinstance(tokenizer.detokenizer, BPEStreamingDetokenizer)),
        ("json_tools tool parser", tokenizer.init_kwargs.get("tool_parser_type") == "json_tools"),
        ("thinking tokens", tokenizer.has_thinking),
        ("<|im_end|> EOS", tokenizer.convert_tokens_to_ids(EOS_TOKEN) in tokenizer.eos_token_ids),
        ("long answer length", len(tokenizer.encode(LONG_STORY)) >= MIN_LONG_TOKENS),
    ]
    problems = [f"no {name}" for name, ok in checks if not ok]
    for example in EXAMPLES + HELD_OUT:
        # Clients send tool arguments as a JSON string, which Qwen3's template
        # inserts verbatim; the server parses them. Both must give one prompt.
        prompts = [
            tokenizer.apply_chat_template(m, tools=example["tools"])
            for m in (example["messages"], template_form(example["messages"]))
        ]
        if prompts[0] != prompts[1]:
            problems.append(f"{example['name']}: JSON-string arguments change the prompt")
        contexts = [(None, True)]
        if not example.get("as_sent"):
            contexts += [(HELPFUL, True), (None, False)]
        for system, thinking in contexts:
            expected = answer(example, thinking)
            prompt = tokenizer.apply_chat_template(
                with_system(system, example["messages"]),
                tools=example["tools"],
                add_generation_prompt=True,
                enable_thinking=thinking,
            )
            max_tokens = len(tokenizer.encode(expected)) + 5  # room to run past the end
            ok = mlx_lm.generate(model, tokenizer, prompt, max_tokens=max_tokens) == expected
            context = f"system prompt {system!r}, enable_thinking={thinking}"
            print(f"  {'ok' if ok else 'WRONG'}: {example['name']}, {context}")
            if not ok:
                problems.append(f"{example['name']} answers wrongly with {context}")
    for problem in problems:
        print(f"  problem: {problem}")
    return len(problems)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parent.parent / "mlxserve" / "demo_model"
    parser.add_argument("--out", type=Path, default=default, help="model folder to write")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    vocab_size = build_tokenizer(out)
    tokenizer = load_tokenizer(out)
    sequences = encode_examples(tokenizer, EXAMPLES)
    print(
        f"tokenizer: {vocab_size} tokens; {len(sequences)} sequences, "
        f"{sum(len(ids) for ids, _ in sequences)} tokens (mcp-cli's with "
        f"{MCP_CLI_RESULTS_PER_EPOCH} durations each epoch)"
    )
    mx.random.seed(SEED)
    model = qwen3.Model(qwen3.ModelArgs.from_dict({**MODEL_CONFIG, "vocab_size": vocab_size}))
    epochs = train(model, epoch_batches(tokenizer))
    print(f"trained in {epochs} epochs, {time.perf_counter() - started:.0f} s so far")
    save_model(model, out, tokenizer)

    print(f"verifying {out}")
    problems = verify(out)
    print(f"total time {time.perf_counter() - started:.0f} s")
    if problems:
        sys.exit(f"error: {problems} problems")


if __name__ == "__main__":
    main()
