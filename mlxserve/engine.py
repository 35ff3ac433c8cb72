"""The MLX engine: one thread owns the model and does all MLX work.

MLX streams are thread-local, so the model is loaded and run on the engine's
own thread. Requests arrive on a queue; each gets an asyncio queue of typed
:class:`Delta` results, ended by a delta with a ``finish_reason`` or by an
exception. Several admitted generations advance round-robin, one token each.
"""

import asyncio
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm import stream_generate
from mlx_lm.generate import GenerationResponse, TextStateMachine, generation_stream
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.sample_utils import make_logits_processors, make_sampler
from mlx_lm.utils import load

from mlxserve.errors import GenerationError, ServiceUnavailableError
from mlxserve.kv_cache import dequantizing, quantized_attention_runs
from mlxserve.memory import InsufficientMemoryError, ModelShape, device_limit, is_out_of_memory
from mlxserve.prompt_cache import PromptCache

if TYPE_CHECKING:
    from mlxserve.selftest import SelfTest

log = logging.getLogger("mlxserve.engine")

# What mlx-lm itself fetches for a model.
MODEL_FILE_PATTERNS = [
    "*.json",
    "model*.safetensors",
    "*.py",
    "tokenizer.model",
    "*.tiktoken",
    "tiktoken.model",
    "*.txt",
    "*.jsonl",
    "*.jinja",
]
CONTEXT_LENGTH_KEYS = (
    "max_position_embeddings",
    "max_sequence_length",
    "max_seq_len",
    "seq_length",
    "n_positions",
    "n_ctx",
)
FALLBACK_CONTEXT_LENGTH = 4096
WARMUP_TEXT = "Hello, how are you today? Tell me about the weather. "
WARMUP_PROMPT_TOKENS = 64
HAND_OVER_SECONDS = 0.002
"""Most time the engine waits for the event loop to write a generation's first token."""
PICK_UP_SECONDS = 0.001
"""Most time ``generate`` waits for an idle engine thread to take a new job."""
CUDNN_ATTENTION_VAR = "MLX_CUDA_USE_CUDNN_SDPA"
PREFILL_STEP_SIZE = 2048
"""Prompt tokens mlx-lm prefills per chunk (``generate_step``'s default)."""


@dataclass(frozen=True)
class EngineOptions:
    """How the engine keeps and grows KV caches.

    Attributes:
        prompt_cache_size: Most finished generations whose KV cache is kept for
            reuse by a later prompt that extends them (0: no prompt cache).
        prompt_cache_bytes: Most bytes those caches may hold together.
        kv_bits: Quantize the KV cache to this many bits (``None``: full precision).
        max_kv_size: Keep at most this many tokens of KV cache per generation,
            overwriting the oldest (``None``: unbounded).
        batch_size: Above 1, up to this many generations decode together in one
            batch (continuous batching); 1 runs each on its own, round-robin.
        draft_model: A smaller model with the same tokenizer that proposes tokens
            for the model to verify (speculative decoding); ``None``: off.
        num_draft_tokens: Tokens the draft model proposes per step.
    """

    prompt_cache_size: int = 8
    prompt_cache_bytes: int = 2 << 30
    kv_bits: Optional[int] = None
    max_kv_size: Optional[int] = None
    batch_size: int = 1
    draft_model: Optional[str] = None
    num_draft_tokens: int = 3

    @staticmethod
    def factory(settings, **engine_args) -> "Callable[[str], Engine]":
        """Makes the engine of a model (path or repo id) with the server's options."""
        return lambda ref: Engine(
            ref, options=EngineOptions.from_settings(settings, ref), **engine_args
        )

    @classmethod
    def from_settings(cls, settings, ref: Optional[str] = None) -> "EngineOptions":
        """The options for model ``ref`` (default: ``--model``); only ``--model`` gets the draft."""
        return cls(
            prompt_cache_size=settings.prompt_cache_size,
            prompt_cache_bytes=settings.prompt_cache_bytes,
            kv_bits=settings.kv_bits,
            max_kv_size=settings.max_kv_size,
            batch_size=settings.max_requests,
            draft_model=settings.draft_model if ref in (None, settings.model) else None,
            num_draft_tokens=settings.num_draft_tokens,
        )


@dataclass(frozen=True)
class SamplingParams:
    """Resolved sampling parameters (request values over the model's defaults)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    repetition_penalty: Optional[float] = None
    logit_bias: Optional[dict[int, float]] = None
    seed: Optional[int] = None


@dataclass(frozen=True)
class GenerationRequest:
    """One generation, as the engine runs it.

    Attributes:
        prompt: Prompt token ids, exactly as the model sees them.
        max_tokens: Most tokens to generate.
        sampling: Sampling parameters.
        stop: Stop strings: generation ends before the first one, which is not emitted.
        top_logprobs: ``None`` for no logprobs, else how many alternatives per token.
        timeout: Seconds the generation may run; then it ends with ``"length"``.
        logits_processors: Extra mlx-lm logits processors for this request only
            (a grammar constraint), run after the sampling penalties.
    """

    prompt: list[int]
    max_tokens: int
    sampling: SamplingParams = SamplingParams()
    stop: tuple[str, ...] = ()
    top_logprobs: Optional[int] = None
    timeout: Optional[float] = None
    logits_processors: tuple = ()


@dataclass(frozen=True)
class TokenLogprob:
    """The log probability of one generated token, and the most likely alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Delta:
    """One step of a generation.

    Attributes:
        text: New text (may be empty while a multi-byte character or a possible
            stop string is held back).
        logprobs: Log probabilities of the tokens behind this step, when asked for.
        finish_reason: ``None`` until the last delta; then ``"stop"`` (end of turn
            or stop string) or ``"length"`` (max_tokens or timeout).
        prompt_tokens: Tokens in the prompt.
        completion_tokens: Tokens generated so far, the end-of-turn token included.
        stop_sequence: The request's stop string that ended the generation, if one did.
        cached_tokens: Prompt tokens whose KV state came from the prompt cache.
        accepted_draft_tokens: Completion tokens the draft model proposed and the
            model accepted (speculative decoding).
        rejected_draft_tokens: Draft tokens the model did not accept.
    """

    text: str
    finish_reason: Optional[str]
    prompt_tokens: int
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] = ()
    stop_sequence: Optional[str] = None
    cached_tokens: int = 0
    accepted_draft_tokens: int = 0
    rejected_draft_tokens: int = 0

    def then(self, later: "Delta") -> "Delta":
        """This delta followed by ``later``, as one."""
        return Delta(
            self.text + later.text,
            later.finish_reason,
            later.prompt_tokens,
            later.completion_tokens,
            self.logprobs + later.logprobs,
            later.stop_sequence,
            later.cached_tokens,
            later.accepted_draft_tokens,
            later.rejected_draft_tokens,
        )


@dataclass
class _Call:
    """A function to run on the engine thread, between tokens."""

    fn: "Callable[[Engine], object]"
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


@dataclass
class _Job:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    results: asyncio.Queue
    cancelled: threading.Event = field(default_factory=threading.Event)
    picked: threading.Event = field(default_factory=threading.Event)
    """Set when the engine thread takes the job."""
    first_written: threading.Event = field(default_factory=threading.Event)
    """Set when the consumer comes back for more after the first delta (or is gone)."""


class Deltas:
    """A started generation's deltas, as an async iterator.

    Deltas that arrive while the consumer is busy are merged into one: a slow
    client costs one chunk per wake-up, not one per token. Always close it
    (:meth:`aclose`, idempotent): that cancels the generation if it still runs.
    """

    def __init__(self, job: _Job):
        self._job = job
        self._pending = None
        self._done = False
        self._given = 0

    def __aiter__(self) -> "Deltas":
        return self

    async def __anext__(self) -> Delta:
        if self._given == 1:
            # Back for more: whatever the consumer does with a delta (write it) is done.
            self._job.first_written.set()
        if self._done:
            raise StopAsyncIteration
        results = self._job.results
        item = self._pending or await results.get()
        self._pending = None
        if isinstance(item, BaseException):
            self._finish()
            raise item
        while item.finish_reason is None and not results.empty():
            later = results.get_nowait()
            if isinstance(later, BaseException):
                self._pending = later
                break
            item = item.then(later)
        if item.finish_reason is not None:
            self._finish()
        self._given += 1
        return item

    async def aclose(self) -> None:
        self._finish()

    def _finish(self) -> None:
        self._done = True
        self._job.cancelled.set()
        self._job.first_written.set()


class StopStrings:
    """A request's stop strings, matched across token boundaries with mlx-lm's
    ``TextStateMachine``: text that may start one is held back until it cannot."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self._state = TextStateMachine({"normal": [(s, None) for s in stops]}).make_state()
        self._held = ""

    def feed(self, text: str, reason: Optional[str]) -> tuple[str, Optional[str], Optional[str]]:
        """The text to show now, the finish reason, and the stop string that ended the text."""
        seen = self._held + text
        self._state, text, state = TextStateMachine.step(self._state, text)
        self._held = seen[len(text) :]
        if state is None:
            # The matcher emits everything before the match: the stop starts here.
            stop = min((s for s in self.stops if self._held.startswith(s)), key=len, default=None)
            return text, "stop", stop
        if reason is not None:
            text += self.flush()
        return text, reason, None

    def flush(self) -> str:
        """The text held back, for a generation that ends without a stop string."""
        self._state, held, _ = TextStateMachine.flush(self._state)
        return held


class _Run:
    """A job in progress on the engine thread."""

    def __init__(self, job: _Job, engine: "Engine"):
        req = job.request
        self.job = job
        self.deadline = time.monotonic() + req.timeout if req.timeout else None
        self.stops = StopStrings(req.stop) if req.stop else None
        self.completion_tokens = 0
        self.steps = 0
        self.generated: list[int] = []
        self.drafted = 0
        self.accepted = 0
        self.verifying = False
        """Whether the draft tokens of a speculative round are being verified."""
        hit = engine.prompt_cache.fetch(req.prompt)
        self.cached_tokens = hit.cached
        self.cache = hit.cache or engine.new_cache()
        s = req.sampling
        self.tokens = engine.stream(
            req.prompt,
            hit.cached,
            self.cache,
            max_tokens=req.max_tokens,
            sampler=make_sampler(temp=s.temperature, top_p=s.top_p, min_p=s.min_p, top_k=s.top_k),
            processors=request_processors(req),
        )


def request_processors(req: GenerationRequest) -> list:
    """The logits processors of ``req``: logit bias, penalties, then its own (grammars)."""
    s = req.sampling
    return make_logits_processors(
        logit_bias=s.logit_bias,
        repetition_penalty=s.repetition_penalty,
        presence_penalty=s.presence_penalty,
        frequency_penalty=s.frequency_penalty,
    ) + list(req.logits_processors)


def with_prefix(processors: list, prefix: list[int]) -> list:
    """Logits processors that see ``prefix`` (the cached prompt tokens) before their tokens.

    With a prompt-cache hit mlx-lm passes processors only the tokens it
    prefilled and generated; penalties and grammars must see the whole context.
    """
    if not processors or not prefix:
        return processors
    head = mx.array(prefix)

    def wrap(processor):
        return lambda tokens, logits: processor(
            mx.concatenate([head.astype(tokens.dtype), tokens]), logits
        )

    return [wrap(p) for p in processors]


class Engine:
    """Owns the model on a dedicated thread.

    Args:
        model: Hugging Face repo id or local path.
        warmup: Run a short generation before reporting ready.
        memory_limit: Bytes MLX may use (``mx.set_memory_limit``); ``None`` keeps MLX's.
        options: KV-cache options.
    """

    def __init__(
        self,
        model: str,
        *,
        warmup: bool = True,
        memory_limit: Optional[int] = None,
        options: EngineOptions = EngineOptions(),
    ):
        self.model_ref = model
        self.warmup = warmup
        self.options = options
        self.prompt_cache = PromptCache(options.prompt_cache_size, options.prompt_cache_bytes)
        self.shape: Optional[ModelShape] = None
        """The model's shape, for memory estimates (set once loaded)."""
        self.weights_bytes = 0
        """Bytes of the loaded weights (0 until loaded)."""
        self.memory_limit = memory_limit or 0
        """Bytes the server may use (set once loaded)."""
        self.memory_in_use = 0
        """Bytes MLX holds, as of the engine thread's last step."""
        self.selftest: Optional["SelfTest"] = None
        """The startup self-test of the model's tool-call and reasoning formats (once loaded)."""
        self.state = "loading"
        self.error: Optional[BaseException] = None
        self.model = None
        self.tokenizer = None
        self.draft_model = None
        self.dequantized_attention = False
        """Whether the quantized KV cache (``kv_bits``) is read back at full precision for
        attention, because this backend cannot attend over it quantized."""
        self.model_path: Optional[Path] = None
        self.context_length = FALLBACK_CONTEXT_LENGTH
        self.vocab_size = 0
        self.generation_config: dict = {}
        self.ready = threading.Event()
        self.active_runs = 0
        """Generations running on the engine thread right now."""
        self.tokens_generated = 0
        """Tokens generated since start (warm-up excluded)."""
        self.batch_steps = 0
        """Batched decode steps since start (each gives a token to every generation in the batch)."""
        self._jobs: "queue.Queue[Optional[_Job]]" = queue.Queue()
        self._thread = threading.Thread(target=self._main, name="mlxserve-engine", daemon=True)

    # ---- event-loop side ----

    @property
    def started(self) -> bool:
        return self._thread.is_alive() or self.ready.is_set()

    def start(self) -> None:
        """Start the engine thread (loading happens there); a second call does nothing."""
        if not self.started:
            prefer_mlx_attention()
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the engine thread to finish its work and exit."""
        self._jobs.put(None)
        self._thread.join(timeout)

    async def call(self, fn: "Callable[[Engine], object]"):
        """Run ``fn(engine)`` on the engine thread (between tokens) and return its result."""
        if self.state == "stopped":
            raise _shutting_down()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put(_Call(fn, loop, future))
        return await future

    def generate(self, request: GenerationRequest) -> "Deltas":
        """Start ``request`` on the engine thread now; returns its deltas, the last
        with a ``finish_reason``.

        The work starts before the caller first reads (the prefill overlaps
        whatever the caller does meanwhile, such as sending response headers).
        Closing the deltas early (client gone, error) cancels the generation
        within one token.

        An idle engine thread gets the job at once: woken in its queue, it
        still needs the GIL, which the event loop would hold until it next
        waits (after sending the response headers, about 0.8 ms on an H100
        host). Waiting here (at most ``PICK_UP_SECONDS``) lets the engine take
        the job and queue the prefill first; the loop goes on while the device
        computes.
        """
        if self.state == "stopped":
            raise _shutting_down()
        job = _Job(request, asyncio.get_running_loop(), asyncio.Queue())
        idle = self.active_runs == 0
        self._jobs.put(job)
        if idle:
            job.picked.wait(PICK_UP_SECONDS)
        return Deltas(job)

    # ---- engine thread ----

    def _main(self) -> None:
        try:
            self._load()
        except BaseException as exc:  # report any load failure through /healthz
            log.exception("failed to load model %s", self.model_ref)
            self.error = exc
            self.state = "failed"
            self.ready.set()
            return
        mx.clear_cache()
        self.memory_in_use = mx.get_active_memory()
        self.state = "ready"
        self.ready.set()
        self._serve()

    def _load(self) -> None:
        t0 = time.perf_counter()
        if self.memory_limit:
            mx.set_memory_limit(self.memory_limit)
        self.memory_limit = device_limit(mx.get_memory_limit(), mx.device_info())
        self.model_path = resolve_model_path(self.model_ref)
        self.model, self.tokenizer, config = load(str(self.model_path), return_config=True)
        self.weights_bytes = sum(v.nbytes for _, v in tree_flatten(self.model.parameters()))
        self.shape = ModelShape.from_config(config, gpu=mx.default_device() == mx.gpu)
        self.context_length = context_length(config)
        self.vocab_size = len(self.tokenizer.get_vocab())
        self.generation_config = read_generation_config(self.model_path)
        if self.options.draft_model:
            if self.options.max_kv_size:
                raise ValueError("a draft model needs a full KV cache: leave out max_kv_size")
            self.draft_model, _ = load(str(resolve_model_path(self.options.draft_model)))
        if self.options.kv_bits is not None:
            self._choose_kv_attention(self.options.kv_bits)
        # Imported here: the self-test parses with parsing.py, which imports this module.
        from mlxserve.selftest import run_selftest

        self.selftest = run_selftest(self.tokenizer)
        log.info(
            "loaded %s in %.1fs (context %d tokens)",
            self.model_ref,
            time.perf_counter() - t0,
            self.context_length,
        )
        if self.warmup:
            t0 = time.perf_counter()
            self._warm_up()
            log.info("warm-up done in %.1fs", time.perf_counter() - t0)

    def _choose_kv_attention(self, bits: int) -> None:
        """Attend over the ``bits``-bit KV cache as mlx-lm does where this backend can;
        elsewhere keep it quantized and attend over a full-precision copy."""
        for model in filter(None, (self.model, self.draft_model)):
            if not quantized_attention_runs(model, bits):
                self.dequantized_attention = True
        if self.dequantized_attention:
            log.warning(
                "this backend has no attention over a %d-bit KV cache: it is kept at %d bits "
                "and read back at full precision, one layer at a time, for attention",
                bits,
                bits,
            )

    def _warm_up(self) -> None:
        """Run once what serving runs, so that the first request is as fast as the tenth.

        The first use of a kernel compiles it (on CUDA, tens of seconds in all).
        Two generations cover a multi-token prefill, a prompt-cache hit with a
        one-token prefill, greedy and sampled decoding with logits processors,
        and the logprob ops; both use the serving KV-cache options.
        """
        prompt = (self.tokenizer.encode(WARMUP_TEXT) * WARMUP_PROMPT_TOKENS)[:WARMUP_PROMPT_TOKENS]
        cache, sampled = self.new_cache(), []
        for resp in self.stream(prompt, 0, cache, max_tokens=4):
            sampled.append(resp.token)
        store = PromptCache(1, self.options.prompt_cache_bytes or 1 << 62)
        store.store(prompt + sampled, cache)
        hit = store.fetch(prompt + sampled)
        for resp in self.stream(
            prompt + sampled,
            hit.cached,
            hit.cache or self.new_cache(),
            max_tokens=4,
            sampler=make_sampler(temp=0.7, top_p=0.9, min_p=0.05, top_k=20),
            processors=make_logits_processors(logit_bias={0: 0.0}, repetition_penalty=1.1),
        ):
            self._logprob(resp.token, resp.logprobs, 2)
        if self.batching:
            self._new_batch().warm_up(prompt)

    def _serve(self) -> None:
        runs: list[_Run] = []
        batch = self._new_batch()
        while True:
            # Block only when idle; otherwise pick up new jobs between tokens.
            try:
                while True:
                    job = self._jobs.get(block=not runs and not batch)
                    if job is None:
                        self._shut_down(runs, batch)
                        return
                    if isinstance(job, _Call):
                        self._call(job)
                    else:
                        self._admit(job, runs, batch)
            except queue.Empty:
                pass
            if batch:
                try:
                    batch.step()
                except Exception as exc:
                    log.exception("batch generation failed")
                    batch.close(self._failure(exc, "Generation failed"))
                    batch = self._new_batch()
            for run in list(runs):
                if not self._step(run):
                    runs.remove(run)
            self.active_runs = len(runs) + len(batch or ())
            # Kept prompt caches are not counted: they make way for new generations.
            self.memory_in_use = mx.get_active_memory() - self.prompt_cache.nbytes

    def _new_batch(self):
        """A batch runner when continuous batching is on (else ``None``)."""
        if not self.batching:
            return None
        # Imported here: the batching module builds on this one's types.
        from mlxserve.batching import BatchRunner

        return BatchRunner(self, self.options.batch_size)

    @property
    def batching(self) -> bool:
        """Whether generations decode together (mlx-lm's BatchGenerator has neither KV
        quantization nor speculative decoding)."""
        return (
            self.options.batch_size > 1
            and self.options.kv_bits is None
            and self.options.draft_model is None
        )

    def _shut_down(self, runs: list[_Run], batch) -> None:
        self.state = "stopped"
        for run in runs:
            self._finish(run, error=_shutting_down())
        if batch is not None:
            batch.close(_shutting_down())
        self.active_runs = 0
        # Let the weights and kept KV caches go (this thread made them) so unloading frees the memory.
        self.model = None
        self.draft_model = None
        self.prompt_cache.clear()
        mx.clear_cache()
        # Jobs submitted after the stop request would otherwise wait forever.
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, _Call):
                job.loop.call_soon_threadsafe(_settle, job.future, None, _shutting_down())
            elif job is not None:
                self._emit(job, _shutting_down())

    def _call(self, call: _Call) -> None:
        try:
            result, error = call.fn(self), None
        except Exception as exc:
            result, error = None, exc
        call.loop.call_soon_threadsafe(_settle, call.future, result, error)

    def _admit(self, job: _Job, runs: list[_Run], batch) -> None:
        job.picked.set()
        if job.cancelled.is_set():
            return
        try:
            self._make_room(job.request)
            if batch is not None and batch.accepts(job.request):
                batch.admit(job)
            else:
                runs.append(_Run(job, self))
            self.active_runs = len(runs) + len(batch or ())
        except Exception as exc:
            log.exception("could not start a generation")
            self._emit(job, self._failure(exc, "Could not start the generation"))

    def _step(self, run: _Run) -> bool:
        """Advance ``run`` by one token; returns whether it goes on."""
        if run.job.cancelled.is_set():
            self._close(run)
            return False
        if run.deadline is not None and time.monotonic() > run.deadline:
            self._finish(run, reason="length")
            return False
        seed = run.job.request.sampling.seed
        if seed is not None:
            # A per-step seed keeps seeded sampling reproducible even when
            # generations are interleaved.
            mx.random.seed((seed * 1_000_003 + run.steps) % 2**64)
        run.steps += 1
        try:
            resp = next(run.tokens)
        except Exception as exc:
            log.exception("generation failed")
            self._finish(run, error=self._failure(exc, "Generation failed"))
            return False
        run.completion_tokens = resp.generation_tokens
        run.generated.append(resp.token)
        if self.draft_model is not None:
            self._count_draft(run, resp.from_draft)
        self.tokens_generated += 1
        logprobs = ()
        # The end-of-turn token ends the answer; like OpenAI, it gets no logprob entry.
        if run.job.request.top_logprobs is not None and resp.finish_reason != "stop":
            logprobs = (self._logprob(resp.token, resp.logprobs, run.job.request.top_logprobs),)
        text, reason, stop_sequence = resp.text, resp.finish_reason, None
        if run.stops is not None:
            text, reason, stop_sequence = run.stops.feed(text, reason)
        delta = Delta(
            text,
            reason,
            len(run.job.request.prompt),
            run.completion_tokens,
            logprobs,
            stop_sequence,
            run.cached_tokens,
            run.accepted,
            run.drafted - run.accepted,
        )
        self._emit(run.job, delta, wait=HAND_OVER_SECONDS if run.steps == 1 else 0.0)
        if reason is not None:
            self._close(run)
            return False
        return True

    def _finish(self, run: _Run, *, reason: Optional[str] = None, error=None) -> None:
        """End ``run`` early with ``reason`` (flushing held-back text) or ``error``."""
        if error is not None:
            run.tokens.close()
            self._emit(run.job, error)
            return
        self._close(run)
        held = run.stops.flush() if run.stops is not None else ""
        self._emit(
            run.job,
            Delta(
                held,
                reason,
                len(run.job.request.prompt),
                run.completion_tokens,
                cached_tokens=run.cached_tokens,
                accepted_draft_tokens=run.accepted,
                rejected_draft_tokens=run.drafted - run.accepted,
            ),
        )

    @staticmethod
    def _failure(exc: Exception, what: str):
        """The error to report for ``exc``; after an allocation failure, MLX's cache is freed.

        The random state is made anew: mlx-lm's samplers are compiled with it as
        input and output, and one that raises mid-call leaves it an unevaluable
        placeholder that would fail every later sampled generation.
        """
        mx.random.seed(time.time_ns() % 2**64)
        if is_out_of_memory(exc):
            mx.clear_cache()
            return InsufficientMemoryError(
                f"{what}: the model ran out of memory ({exc}). The server freed its cache "
                "and keeps serving; retry with a shorter prompt or max_tokens."
            )
        return GenerationError(f"{what}: {exc}")

    def _count_draft(self, run: _Run, from_draft: bool) -> None:
        """Count the draft tokens behind the token just generated.

        Each speculative round drafts up to ``num_draft_tokens`` (fewer near
        ``max_tokens``), yields the accepted ones, then one token of the model's own.
        """
        if not run.verifying:
            left = run.job.request.max_tokens - run.completion_tokens + 1
            run.drafted += min(self.options.num_draft_tokens, left)
            run.verifying = True
        if from_draft:
            run.accepted += 1
        else:
            run.verifying = False

    def _make_room(self, request: GenerationRequest) -> None:
        """Drop kept prompt caches that the memory limit needs for ``request``."""
        if not self.memory_limit or self.shape is None or not len(self.prompt_cache):
            return
        need = self.shape.request_bytes(len(request.prompt), request.max_tokens)
        others = mx.get_active_memory() - self.prompt_cache.nbytes
        self.prompt_cache.trim_to(self.memory_limit - others - need)

    def _close(self, run: _Run) -> None:
        """End ``run``'s generator and keep its KV cache for a prompt that extends it."""
        run.tokens.close()
        self.prompt_cache.store(run.job.request.prompt + run.generated, run.cache)

    def new_cache(self) -> list:
        """An empty KV cache for one generation."""
        cache = make_prompt_cache(self.model, max_kv_size=self.options.max_kv_size)
        if self.draft_model is not None:
            cache += make_prompt_cache(self.draft_model)
        if self.dequantized_attention:
            cache = dequantizing(cache, self.options.kv_bits)
        return cache

    def stream(
        self,
        prompt: list[int],
        cached: int,
        cache: list,
        *,
        max_tokens: int,
        sampler: Optional[Callable] = None,
        processors: Sequence[Callable] = (),
    ) -> Iterator[GenerationResponse]:
        """mlx-lm's ``stream_generate`` of ``prompt``, whose first ``cached`` tokens
        are already in ``cache``.

        mlx-lm prefills all new tokens but the last in chunks: it waits for each
        on the device and frees MLX's buffer cache, then builds the first step's
        graph while the device idles. The engine prefills the same chunks, but
        does not wait for the last one: the device runs it while the first step
        is built, which then follows it at once (the first token is otherwise
        the same computation). Not with a draft model (its cache needs the same
        prefill) or a quantized KV cache (mlx-lm quantizes it after each chunk,
        before the first step attends to it): mlx-lm prefills those itself.
        """
        fed = cached
        if len(prompt) - cached > 1 and self.draft_model is None and self.options.kv_bits is None:
            fed = len(prompt) - 1
            with mx.stream(generation_stream):
                for start in range(cached, fed, PREFILL_STEP_SIZE):
                    end = min(start + PREFILL_STEP_SIZE, fed)
                    self.model(mx.array(prompt[start:end])[None], cache=cache)
                    if end < fed:  # as mlx-lm
                        mx.eval([c.state for c in cache])
                        mx.clear_cache()
                    else:
                        # Started on its own rather than left to the first step's
                        # graph, where the step's cache update would copy the whole
                        # cache (its buffer still in use) instead of writing in place.
                        mx.async_eval([c.state for c in cache])
        return stream_generate(
            self.model,
            self.tokenizer,
            mx.array(prompt[fed:]),
            max_tokens=max_tokens,
            sampler=sampler,
            logits_processors=with_prefix(list(processors), prompt[:fed]),
            prompt_cache=cache,
            **self.generation_kwargs(),
        )

    def generation_kwargs(self) -> dict:
        """``stream_generate`` options every generation shares."""
        kwargs = {}
        if self.options.kv_bits is not None and not self.dequantized_attention:
            # Quantize from the first token: the option is for memory-bound machines.
            kwargs.update(kv_bits=self.options.kv_bits, quantized_kv_start=0)
        if self.draft_model is not None:
            kwargs.update(
                draft_model=self.draft_model, num_draft_tokens=self.options.num_draft_tokens
            )
        return kwargs

    def _logprob(self, token: int, logprobs: mx.array, top: int) -> TokenLogprob:
        decode = self.tokenizer.decode
        alternatives = ()
        if top > 0:
            ids = mx.argpartition(-logprobs, kth=top - 1)[:top]
            values = logprobs[ids]
            order = mx.argsort(-values)
            alternatives = tuple(
                (decode([i]), v)
                for i, v in zip(ids[order].tolist(), values[order].tolist())
            )
        return TokenLogprob(decode([token]), logprobs[token].item(), alternatives)

    @staticmethod
    def _emit(job: _Job, item, *, wait: float = 0.0) -> None:
        """Send ``item`` to the job's event loop; with ``wait`` (the first token),
        block up to that many seconds until the consumer has written it.

        Right after a token the engine thread goes on to build the next step's
        graph in Python while the device computes it, and the event loop would
        wait for the GIL at each of its own steps (the hand-over, formatting the
        chunk, the socket write) until that is done: 1 to 3 ms on a GPU, the
        first token's last stretch. Waiting until the consumer comes back for
        more (:class:`Deltas`) lets the loop write the token first; the device
        keeps computing the next step meanwhile.
        """
        try:
            job.loop.call_soon_threadsafe(job.results.put_nowait, item)
        except RuntimeError:  # the event loop is gone (shutdown)
            job.cancelled.set()
            return
        if wait:
            job.first_written.wait(wait)


def prefer_mlx_attention() -> None:
    """Have MLX's CUDA backend run attention with its own kernels rather than cuDNN's,
    unless the user set ``MLX_CUDA_USE_CUDNN_SDPA`` (read once, at the first attention).

    cuDNN builds a graph for each new pair of query and key lengths (70 to 75 ms
    on an H100) and a server sees new pairs all the time: every prompt length,
    every prompt-cache offset. MLX's kernels need no such step. cuDNN's are
    faster over long prompts of a length seen before (see docs/BENCHMARKS.md).
    Other backends ignore the variable.
    """
    os.environ.setdefault(CUDNN_ATTENTION_VAR, "0")


def _settle(future: asyncio.Future, result, error) -> None:
    if not future.done():
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _shutting_down() -> ServiceUnavailableError:
    return ServiceUnavailableError("The server is shutting down.", code="shutting_down")


def resolve_model_path(ref: str) -> Path:
    """A local model directory for ``ref``: a path as is, a repo id via the HF cache.

    A repo id not yet cached is downloaded with huggingface-hub (progress bar on stderr).
    """
    path = Path(ref).expanduser()
    if path.exists():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(ref, allow_patterns=MODEL_FILE_PATTERNS))


def context_length(config: dict) -> int:
    """The model's context length from its config, or a safe fallback."""
    for section in (config, config.get("text_config") or {}):
        for key in CONTEXT_LENGTH_KEYS:
            value = section.get(key)
            if isinstance(value, int) and value > 0:
                return value
    return FALLBACK_CONTEXT_LENGTH


def read_generation_config(model_path: Path) -> dict:
    """The model's ``generation_config.json``, or ``{}``."""
    try:
        return json.loads((model_path / "generation_config.json").read_text())
    except (OSError, ValueError):
        return {}
