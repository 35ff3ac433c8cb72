"""Continuous batching: admitted generations decode together through mlx-lm's BatchGenerator.

With ``--max-requests N`` (N > 1) the engine thread keeps one
:class:`BatchRunner`. Each admitted request joins the batch as it arrives
(its prompt is prefilled in chunks between decode steps) and leaves it when it
ends, is cancelled or times out; every decode step advances all of them with
one forward pass. Each request keeps its own sampler, logits processors, stop
strings, logprobs and deadline, and its KV cache goes to the prompt cache at
the end, as in the single-stream path. Engine thread only.
"""

import time
from typing import TYPE_CHECKING, Optional

from mlx_lm.generate import BatchGenerator
from mlx_lm.sample_utils import make_sampler

from mlxserve.engine import Delta, GenerationRequest, StopStrings, request_processors

if TYPE_CHECKING:
    from mlxserve.engine import Engine, _Job


class _Member:
    """One request in the batch."""

    def __init__(self, job: "_Job", engine: "Engine", cached_tokens: int):
        req = job.request
        self.job = job
        self.deadline = time.monotonic() + req.timeout if req.timeout else None
        self.stops = StopStrings(req.stop) if req.stop else None
        self.detokenizer = engine.tokenizer.detokenizer
        self.completion_tokens = 0
        self.cached_tokens = cached_tokens


class BatchRunner:
    """The requests decoding together, and the BatchGenerator that runs them.

    Args:
        engine: The engine whose thread this runs on (model, tokenizer, prompt cache, emit).
        size: Most requests in the batch (the gate admits no more).
    """

    def __init__(self, engine: "Engine", size: int):
        self.engine = engine
        self.generator = BatchGenerator(
            engine.model,
            stop_tokens=[[t] for t in engine.tokenizer.eos_token_ids],
            completion_batch_size=size,
            prefill_batch_size=size,
            max_kv_size=engine.options.max_kv_size,
        )
        self.members: dict[int, _Member] = {}

    def __len__(self) -> int:
        return len(self.members)

    @staticmethod
    def accepts(request: "GenerationRequest") -> bool:
        """Whether ``request`` can join a batch: a seed needs a random stream of its own."""
        return request.sampling.seed is None

    def admit(self, job: "_Job") -> None:
        """Add ``job`` to the batch; its prompt is prefilled during the next steps."""
        req, engine = job.request, self.engine
        hit = engine.prompt_cache.fetch(req.prompt)
        s = req.sampling
        (uid,) = self.generator.insert(
            [req.prompt[hit.cached :]],
            max_tokens=[req.max_tokens],
            caches=[hit.cache],
            # The tokens already in the cache: logits processors see the whole context.
            all_tokens=[req.prompt[: hit.cached]],
            samplers=[make_sampler(temp=s.temperature, top_p=s.top_p, min_p=s.min_p, top_k=s.top_k)],
            logits_processors=[request_processors(req)],
        )
        self.members[uid] = _Member(job, engine, hit.cached)

    def warm_up(self, prompt: list[int]) -> None:
        """Decode at every batch size up to the largest, from prompts of unequal lengths.

        Run before serving (then this runner is dropped): the first batch of
        each size, and padded prefills, compile their kernels here.
        """
        size = self.generator.completion_batch_size
        self.generator.insert(
            [prompt[: len(prompt) - i] for i in range(size)],
            max_tokens=[2 + i for i in range(size)],
            samplers=[make_sampler(temp=0.7 * (i % 2), top_p=0.9) for i in range(size)],
        )
        finished = 0
        while finished < size:
            finished += sum(r.finish_reason is not None for r in self.generator.next_generated())
        self.generator.close()

    def step(self) -> None:
        """Drop cancelled and late members, then run one prefill chunk and/or decode step."""
        now = time.monotonic()
        for uid, m in list(self.members.items()):
            if m.job.cancelled.is_set():
                self._remove(uid)
            elif m.deadline is not None and now > m.deadline:
                self._emit(m, m.stops.flush() if m.stops is not None else "", "length")
                self._remove(uid)
        if not self.members:
            return
        _, responses = self.generator.next()
        if responses:
            self.engine.batch_steps += 1
        for r in responses:
            self._deliver(r)

    def close(self, error: BaseException) -> None:
        """End every member with ``error`` (shutdown) and release the generator."""
        for m in self.members.values():
            self.engine._emit(m.job, error)
        self.members.clear()
        self.generator.close()

    def _deliver(self, r) -> None:
        m = self.members[r.uid]
        engine = self.engine
        m.completion_tokens += 1
        engine.tokens_generated += 1
        # The end-of-turn token is counted but neither shown nor given a logprob.
        if r.finish_reason != "stop":
            m.detokenizer.add_token(r.token)
        if r.finish_reason is not None:
            m.detokenizer.finalize()
        text, reason, stop_sequence = m.detokenizer.last_segment, r.finish_reason, None
        req = m.job.request
        logprobs = ()
        if req.top_logprobs is not None and reason != "stop":
            logprobs = (engine._logprob(r.token, r.logprobs, req.top_logprobs),)
        if m.stops is not None:
            text, reason, stop_sequence = m.stops.feed(text, reason)
        self._emit(m, text, reason, logprobs, stop_sequence)
        if r.finish_reason is not None:
            # The generator has already let it go, with its cache.
            del self.members[r.uid]
            engine.prompt_cache.store(r.all_tokens, r.prompt_cache)
        elif reason is not None:
            self._remove(r.uid)

    def _emit(
        self, m: _Member, text: str, reason: Optional[str], logprobs=(), stop_sequence=None
    ) -> None:
        delta = Delta(
            text,
            reason,
            len(m.job.request.prompt),
            m.completion_tokens,
            logprobs,
            stop_sequence=stop_sequence,
            cached_tokens=m.cached_tokens,
        )
        self.engine._emit(m.job, delta)

    def _remove(self, uid: int) -> None:
        """Take ``uid`` out of the batch and keep its KV cache."""
        del self.members[uid]
        caches = self.generator.remove([uid], return_prompt_caches=True)
        for cache, tokens in caches.values():
            self.engine.prompt_cache.store(list(tokens), cache)
