"""Request -> window -> gate -> engine -> deltas. No HTTP here.

:class:`Service` turns validated wire requests into :class:`GenerationRequest`
plans (chat template, sliding window, sampling defaults) and admits them
through the gate as :class:`Generation` streams of deltas.
"""

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, replace
from functools import partial
from typing import AsyncIterator, Callable, Optional, TypeVar, Union

import numpy as np
from jinja2 import TemplateError

from mlxserve import __version__, embeddings, tracing
from mlxserve.config import Settings
from mlxserve.constraints import Grammars
from mlxserve.context import Dropped, window_chat
from mlxserve.engine import Delta, Engine, EngineOptions, GenerationRequest, SamplingParams
from mlxserve.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    ModelLoadingError,
    ServiceUnavailableError,
)
from mlxserve.gate import Gate
from mlxserve.memory import check_fits, limit_bytes
from mlxserve.registry import LOADING_RETRY_AFTER, ModelRegistry
from mlxserve.parsing import AnswerParser, Event, initial_state
from mlxserve.prompt_tokens import PromptTokens
from mlxserve.queueing import Admission
from mlxserve.schemas.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    NamedToolChoice,
    thinking_for,
)

log = logging.getLogger("mlxserve.service")

T = TypeVar("T")
INLINE_CHARS = 2000
"""Text up to this long is templated and tokenized on the event loop (well under 0.1 ms),
not handed to a worker thread (0.2 to 0.4 ms more to first token on a 2-core CPU)."""


# OpenAI's defaults where neither the request nor the model's generation_config sets a value.
OPENAI_DEFAULT_TEMPERATURE = 1.0
OPENAI_DEFAULT_TOP_P = 1.0


def resolve_sampling(
    body: Union[ChatCompletionRequest, CompletionRequest], defaults: dict
) -> SamplingParams:
    """Sampling parameters: the request's, else the model's generation_config, else OpenAI's.

    Args:
        body: The request; explicit values (0 included) always win.
        defaults: The model's ``generation_config.json``.
    """

    def pick(value, key, fallback):
        return value if value is not None else defaults.get(key, fallback)

    greedy = defaults.get("do_sample") is False
    temperature = body.temperature
    if temperature is None:
        temperature = 0.0 if greedy else defaults.get("temperature", OPENAI_DEFAULT_TEMPERATURE)
    repetition_penalty = pick(body.repetition_penalty, "repetition_penalty", None)
    return SamplingParams(
        temperature=float(temperature),
        top_p=float(pick(body.top_p, "top_p", OPENAI_DEFAULT_TOP_P)),
        top_k=int(pick(body.top_k, "top_k", 0)),
        min_p=float(pick(body.min_p, "min_p", 0.0)),
        presence_penalty=body.presence_penalty or None,
        frequency_penalty=body.frequency_penalty or None,
        repetition_penalty=None if repetition_penalty in (None, 1.0) else repetition_penalty,
        logit_bias={int(k): v for k, v in body.logit_bias.items()} if body.logit_bias else None,
        seed=body.seed,
    )


@dataclass(frozen=True)
class Plan:
    """A generation, ready to admit.

    Attributes:
        model: The id of the model that runs it (responses name it).
        engine: That model's engine.
        request: What the engine runs.
        parser: For chat: splits the answer into content, reasoning and tool
            calls (the generation then yields :class:`Event` objects).
        dropped: What the context window left out, if anything.
    """

    model: str
    engine: Engine
    request: GenerationRequest
    parser: Optional[AnswerParser] = None
    dropped: Optional[Dropped] = None


class Generation:
    """An admitted generation: an async iterator that holds a gate slot.

    It yields the engine's deltas, or, given a ``parser``, the parsed events.
    The slot is released exactly once: when the deltas end, when iteration
    fails, or when :meth:`aclose` is called (always call it; it is idempotent).
    Each delta is counted in the request's :class:`~mlxserve.tracing.RequestRecord`.
    """

    def __init__(self, deltas: AsyncIterator[Delta], release, parser: Optional[AnswerParser] = None):
        self._deltas = deltas
        self._release = release
        self._parser = parser
        self._open = True
        self._record = tracing.current()

    def __aiter__(self):
        return self

    async def __anext__(self) -> Union[Delta, Event]:
        try:
            delta = await self._deltas.__anext__()
        except BaseException as exc:
            if not isinstance(exc, (StopAsyncIteration, asyncio.CancelledError)):
                tracing.note_error(exc, self._record)
            await self.aclose()
            raise
        if self._record is not None:
            self._record.saw(delta)
        return self._parser.feed(delta) if self._parser else delta

    async def aclose(self) -> None:
        if self._open:
            self._open = False
            self._release()
            await self._deltas.aclose()


class Service:
    """The server's logic, shared by every protocol's routes.

    Args:
        settings: The server's settings.
        engine: An engine for ``settings.model`` to use instead of creating one.
    """

    def __init__(self, settings: Settings, engine: Optional[Engine] = None):
        self.settings = settings
        self.models = ModelRegistry(
            settings,
            engine,
            EngineOptions.factory(settings, memory_limit=limit_bytes(settings.memory_limit)),
        )
        self.gate = Gate(settings.max_requests, settings.queue_size, settings.queue_timeout)
        self.reserved_memory = 0
        """Memory estimates of the generations running now."""
        self.started = time.time()
        self._tokenizer_helpers: "weakref.WeakKeyDictionary[Engine, dict]" = weakref.WeakKeyDictionary()
        """Per model: its compiled grammars and its prompt tokenizer (made on first use)."""

    @property
    def model_name(self) -> str:
        """The default model's id."""
        return self.settings.model_name

    def context_tokens(self, engine: Engine) -> int:
        """Token budget for prompt + completion."""
        return self.settings.max_context_tokens or engine.context_length

    async def model(self, name: Optional[str]) -> tuple[str, Engine]:
        """The ready model a request's ``model`` field names.

        Raises:
            ModelLoadingError: It is loading (503 with Retry-After).
            ServiceUnavailableError: It failed to load, or the server is stopping.
            NotFoundError: No such model (``--model-policy strict``).
        """
        model_id, engine = await self.models.resolve(name)
        if engine.state == "loading":
            raise ModelLoadingError(
                f"The model {model_id} is still loading. Try again shortly.",
                retry_after=LOADING_RETRY_AFTER,
            )
        if engine.state == "stopped":
            raise ServiceUnavailableError("The server is shutting down.", code="shutting_down")
        if engine.state == "failed":
            raise ServiceUnavailableError(
                f"The model {model_id} failed to load: {engine.error}", code="model_load_failed"
            )
        return model_id, engine

    def max_tokens(self, requested: Optional[int]) -> int:
        """The request's max_tokens, or the default, clamped to the server's cap."""
        return min(requested or self.settings.default_max_tokens, self.settings.max_tokens)

    async def plan_chat(self, body: ChatCompletionRequest) -> Plan:
        """The generation for a chat request: windowed messages through the chat template.

        Tools (unless ``tool_choice`` is ``"none"``) go to the template and the parser.
        """
        self._check_counts(body)
        model_id, engine = await self.model(body.model)
        max_tokens = self.max_tokens(body.requested_max_tokens())
        messages = [m.to_template() for m in body.messages]
        tools = body.offered_tools()
        window, dropped = await off_loop(
            _template_chars(body, messages, tools),
            window_chat,
            messages,
            render=partial(
                _render,
                engine.tokenizer,
                self.prompt_tokens(engine),
                tools=tools,
                thinking=thinking_for(body.reasoning_effort),
            ),
            max_messages=self.settings.max_context,
            context_tokens=self.context_tokens(engine),
            completion_tokens=max_tokens,
            on_overflow=self.settings.on_overflow,
        )
        log.info(
            "window: kept %d of %d messages (%d dropped), %d prompt tokens",
            len(window.messages),
            len(messages),
            window.dropped,
            len(window.prompt_tokens),
        )
        top = (body.top_logprobs or 0) if body.logprobs else None
        request = self._request(engine, body, window.prompt_tokens, max_tokens, top)
        constraint = await self._constraint(engine, body, request.prompt)
        if constraint is not None:
            request = replace(request, logits_processors=(constraint,))
        parser = AnswerParser(
            engine.tokenizer,
            request.prompt,
            tools=tools,
            reasoning=self.settings.reasoning,
            parallel=body.parallel_tool_calls is not False,
        )
        return Plan(model_id, engine, request, parser, dropped)

    def _check_counts(self, body: ChatCompletionRequest) -> None:
        """Refuse a chat with more messages or tools than the server takes.

        Raises:
            InvalidRequestError: ``too_many_messages`` or ``too_many_tools``.
        """
        limits = (
            ("messages", len(body.messages), self.settings.max_messages),
            ("tools", len(body.tools or ()), self.settings.max_tools),
        )
        for param, count, most in limits:
            if count > most:
                raise InvalidRequestError(
                    f"This request has {count} {param}; the server takes at most {most}.",
                    param=param,
                    code=f"too_many_{param}",
                )

    async def plan_completion(self, body: CompletionRequest) -> Plan:
        """The generation for a raw-prompt completion (no chat template)."""
        model_id, engine = await self.model(body.model)
        max_tokens = self.max_tokens(body.requested_max_tokens())
        prompt = await off_loop(_prompt_size(body.prompt), _encode_prompt, engine, body.prompt)
        budget = self.context_tokens(engine)
        if len(prompt) + max_tokens > budget:
            raise ContextLengthExceededError(budget, len(prompt), max_tokens, what="prompt")
        return Plan(model_id, engine, self._request(engine, body, prompt, max_tokens, body.logprobs))

    async def admit(self, plan: Plan) -> Generation:
        """Wait for a gate slot (FIFO, bounded) and start the plan on its engine.

        The model stays resident from here until the generation is closed.
        """
        self.models.began(plan.model)
        try:
            await self.gate.acquire()
        except BaseException:
            self.models.ended(plan.model)
            raise
        return self._start(plan)

    def enter(self, plan: Plan) -> Admission:
        """Take a slot now or a place in the queue, without waiting (for streams).

        The model stays resident from here until the admission is closed.

        Raises:
            ServerBusyError: The queue is full.
        """
        self.models.began(plan.model)
        try:
            waiter = self.gate.enter()
        except BaseException:
            self.models.ended(plan.model)
            raise
        return Admission(
            self.gate, waiter, partial(self._start, plan), left=partial(self.models.ended, plan.model)
        )

    def _start(self, plan: Plan) -> Generation:
        """Start the plan on its engine in the gate slot the caller holds.

        Raises:
            InsufficientMemoryError: Its KV cache and activations would not fit.
            ServiceUnavailableError: The engine is shutting down.
            (Either way the slot is given back.)
        """
        need = 0

        def release():
            self.reserved_memory -= need
            self.gate.release()
            self.models.ended(plan.model)

        try:
            need = self._reserve_memory(plan)
            deltas = plan.engine.generate(plan.request)
        except BaseException:
            release()
            raise
        return Generation(deltas, release, plan.parser)

    def _reserve_memory(self, plan: Plan) -> int:
        """Check that ``plan`` fits in memory, and count it until it ends; returns its estimate."""
        engine, request = plan.engine, plan.request
        if engine.shape is None:
            return 0
        need = engine.shape.request_bytes(len(request.prompt), request.max_tokens)
        # One process-wide number, as each engine thread last saw it.
        in_use = max(e.memory_in_use for e in self.models.engines.values())
        check_fits(
            need,
            limit=limit_bytes(self.settings.memory_limit) or engine.memory_limit,
            in_use=in_use,
            reserved=self.reserved_memory,
        )
        self.reserved_memory += need
        return need

    async def embed(self, body: EmbeddingRequest) -> tuple[str, np.ndarray, int]:
        """Embeddings for every input: the model id, unit vectors (one row each), token count.

        Holds a gate slot while the engine thread computes them.
        """
        model_id, engine = await self.model(body.model)
        inputs = await asyncio.to_thread(_embedding_tokens, engine, body.items(), self.context_tokens(engine))
        record = tracing.current()
        if record is not None:
            record.embedded(sum(len(t) for t in inputs))
        self.models.began(model_id)
        try:
            await self.gate.acquire()
            try:
                vectors = await engine.call(lambda e: embeddings.embed(e.model, inputs, body.dimensions))
            finally:
                self.gate.release()
        finally:
            self.models.ended(model_id)
        return model_id, vectors, sum(len(t) for t in inputs)

    def grammars(self, engine: Engine) -> Grammars:
        return self._helper(engine, Grammars)

    def prompt_tokens(self, engine: Engine) -> PromptTokens:
        return self._helper(engine, PromptTokens)

    def _helper(self, engine: Engine, kind: type):
        """``engine``'s ``kind(engine.tokenizer)``, made once."""
        helpers = self._tokenizer_helpers.setdefault(engine, {})
        if kind not in helpers:
            helpers[kind] = kind(engine.tokenizer)
        return helpers[kind]

    async def _constraint(self, engine: Engine, body: ChatCompletionRequest, prompt: list[int]):
        """The grammar a chat answer must follow: a forced tool call or JSON, else ``None``.

        Grammars are compiled in a worker thread; most requests need none and
        skip that hop.
        """
        choice, fmt = body.tool_choice, body.response_format
        if choice == "required":
            forced = body.offered_tools()
        elif isinstance(choice, NamedToolChoice):
            forced = [t for t in body.offered_tools() if t["function"]["name"] == choice.function.name]
        else:
            forced = None
        if forced is None and (fmt is None or fmt.type == "text"):
            return None
        return await asyncio.to_thread(self._grammar, engine, forced, fmt, prompt)

    def _grammar(self, engine: Engine, forced: Optional[list], fmt, prompt: list[int]):
        """The grammar of a forced tool call (``forced``: the tools) or of ``fmt``'s JSON.

        A prompt that opened a think block gets it closed first, so the
        constrained part is the answer, not the reasoning.
        """
        tokenizer = engine.tokenizer
        prefix = ""
        if initial_state(tokenizer, prompt) == "reasoning":
            prefix = tokenizer.think_end + "\n\n"
        grammars = self.grammars(engine)
        if forced is not None:
            return grammars.tool_call(forced, param="tool_choice", prefix=prefix)
        schema = fmt.json_schema.schema_ if fmt.type == "json_schema" else None
        return grammars.json(schema, param="response_format", prefix=prefix)

    def _request(
        self, engine: Engine, body, prompt: list[int], max_tokens: int, top_logprobs
    ) -> GenerationRequest:
        vocab = engine.vocab_size
        if body.logit_bias and any(int(k) >= vocab for k in body.logit_bias):
            raise InvalidRequestError(
                f"logit_bias keys must be token ids below the vocabulary size {vocab}.",
                param="logit_bias",
            )
        sampling = resolve_sampling(body, engine.generation_config)
        if sampling.top_k >= vocab:  # keeps every token: the same as no top_k (mlx-lm refuses it)
            sampling = replace(sampling, top_k=0)
        return GenerationRequest(
            prompt=prompt,
            max_tokens=max_tokens,
            sampling=sampling,
            stop=body.stop_list(),
            top_logprobs=top_logprobs,
            timeout=self.settings.timeout,
        )

    def health(self) -> dict:
        states = {model_id: e.state for model_id, e in self.models.engines.items()}
        if not states or "ready" in states.values():
            status = "ok"
        elif "loading" in states.values():
            status = "loading"
        else:
            status = next(iter(states.values()))
        return {
            "status": status,
            "model": self.model_name,
            "models": [
                {
                    "id": model_id,
                    "status": {"ready": "ok"}.get(state, state),
                    **_selftest(self.models.engines[model_id]),
                }
                for model_id, state in states.items()
            ],
            "uptime_seconds": round(time.time() - self.started, 3),
            "active_requests": self.gate.active,
            "queued_requests": self.gate.queued,
            "max_tokens": self.settings.max_tokens,
            "max_context": self.settings.max_context,
            "max_requests": self.settings.max_requests,
            "version": __version__,
            **_selftest(self.models.engines.get(self.model_name)),
        }


def _selftest(engine: Optional[Engine]) -> dict:
    """The startup self-test's verdicts for ``engine``'s model, once it is loaded."""
    test = engine.selftest if engine is not None else None
    return {"tool_calling": test.tool_calling, "reasoning": test.reasoning} if test else {}


def _render(
    tokenizer,
    prompt_tokens: PromptTokens,
    messages: list[dict],
    tools: Optional[list[dict]] = None,
    thinking: Optional[bool] = None,
) -> list[int]:
    """The prompt for ``messages``; ``thinking`` sets the template's ``enable_thinking``.

    The template's text is tokenized as ``apply_chat_template`` would, reusing
    the tokens of an earlier prompt that starts the same (a chat's previous turn).
    """
    if not messages:  # the window left nothing: tool results with no call before them
        raise InvalidRequestError(
            "No message is left to answer: a tool message must follow the assistant "
            "message whose tool call it answers.",
            param="messages",
        )
    switch = {} if thinking is None else {"enable_thinking": thinking}
    try:
        text = tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, tokenize=False, **switch
        )
    except TemplateError as exc:
        raise InvalidRequestError(
            f"The model's chat template rejected these messages: {exc}", param="messages"
        ) from None
    return prompt_tokens.encode(text)


def _embedding_tokens(engine: Engine, items: list, limit: int) -> list[list[int]]:
    vocab = engine.vocab_size
    out = []
    for i, item in enumerate(items):
        tokens = list(item) if isinstance(item, list) else engine.tokenizer.encode(item, add_special_tokens=False)
        if any(not 0 <= t < vocab for t in tokens):
            raise InvalidRequestError(f"input token ids must be in [0, {vocab}).", param="input")
        if len(tokens) > limit:
            raise InvalidRequestError(
                f"Input {i} has {len(tokens)} tokens; this model takes at most {limit}.", param="input"
            )
        out.append(tokens)
    return out


async def off_loop(chars: int, fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)``, templating or tokenizing ``chars`` characters of text.

    CPU work, not MLX: in a worker thread, so the event loop keeps serving, unless
    the text is short (``INLINE_CHARS``), when the work takes less than the hop.
    """
    if chars <= INLINE_CHARS:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


def _template_chars(body: ChatCompletionRequest, messages: list[dict], tools) -> int:
    """How much text the chat template renders for ``body``: the messages' contents and
    tool-call arguments; offered tools count as ``INLINE_CHARS`` (always a worker)."""
    chars = sum(len(m["content"] or "") for m in messages)
    chars += sum(len(c.function.arguments) for m in body.messages for c in m.tool_calls or ())
    return chars + (INLINE_CHARS if tools else 0)


def _prompt_size(prompt) -> int:
    """Characters (or token ids) of the prompt a completion encodes: the first of a list."""
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        prompt = prompt[0]
    return len(prompt)


def _encode_prompt(engine: Engine, prompt) -> list[int]:
    tokenizer = engine.tokenizer
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
        vocab = engine.vocab_size
        if any(not 0 <= t < vocab for t in prompt):
            raise InvalidRequestError(f"prompt token ids must be in [0, {vocab}).", param="prompt")
        return list(prompt)
    text = prompt[0] if isinstance(prompt, list) else prompt
    bos = tokenizer.bos_token
    return tokenizer.encode(text, add_special_tokens=bos is None or not text.startswith(bos))
