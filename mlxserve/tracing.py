"""What one HTTP request did: its id, status, tokens and timings, for the access log and metrics.

The outermost middleware (:class:`mlxserve.observe.Observe`) opens a
:class:`RequestRecord` for every request and keeps it in a context variable
for the request's lifetime; the service fills in the tokens as the generation
runs (:meth:`RequestRecord.saw`), and the error handlers note the error code.
No HTTP here.
"""

import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Optional

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is echoed in a header, in logs and in completion ids: keep it plain.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def new_request_id() -> str:
    return uuid.uuid4().hex[:24]


def request_id_from(header: Optional[bytes]) -> str:
    """The client's ``X-Request-ID`` if plain (up to 128 of ``A-Za-z0-9._:-``), else a new id."""
    if header:
        text = header.decode("latin-1").strip()
        if _CLIENT_ID.fullmatch(text):
            return text
    return new_request_id()


@dataclass
class RequestRecord:
    """One request, as the access log and the metrics see it.

    Attributes:
        request_id: Echoed as ``X-Request-ID``; the suffix of completion ids.
        endpoint: The route's path template (``/v1/models/{model_id:path}``),
            or ``"unmatched"``: a label of bounded cardinality.
        status: The response's HTTP status (0 until it starts).
        prompt_tokens: Prompt (or embedding input) tokens, once known.
        completion_tokens: Tokens generated.
        cached_tokens: Prompt tokens whose KV state came from the prompt cache.
        first_token: ``time.monotonic()`` when the first token arrived.
        last_token: ``time.monotonic()`` when the latest token arrived.
        error_code: The code of the error the request ended with, in the
            status or in the stream.
    """

    request_id: str
    method: str
    path: str
    endpoint: str
    started: float
    status: int = 0
    prompt_tokens: Optional[int] = None
    completion_tokens: int = 0
    cached_tokens: int = 0
    first_token: Optional[float] = None
    last_token: Optional[float] = None
    error_code: Optional[str] = None
    finished: Optional[float] = None

    def saw(self, delta) -> None:
        """Count an engine :class:`~mlxserve.engine.Delta` of this request's generation."""
        if delta.completion_tokens > self.completion_tokens:
            now = time.monotonic()
            if self.first_token is None:
                self.first_token = now
            self.last_token = now
        self.prompt_tokens = delta.prompt_tokens
        self.completion_tokens = delta.completion_tokens
        self.cached_tokens = delta.cached_tokens

    def embedded(self, tokens: int) -> None:
        """Count the input tokens of an embeddings request."""
        self.prompt_tokens = (self.prompt_tokens or 0) + tokens

    @property
    def duration(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def ttft(self) -> Optional[float]:
        """Seconds from the request's arrival (queueing included) to its first token."""
        return None if self.first_token is None else self.first_token - self.started

    @property
    def decode_seconds(self) -> float:
        """Seconds from the first token to the last."""
        if self.first_token is None or self.last_token is None:
            return 0.0
        return self.last_token - self.first_token

    @property
    def tokens_per_second(self) -> Optional[float]:
        """Decode speed: the tokens after the first over the time they took."""
        seconds = self.decode_seconds
        if self.completion_tokens < 2 or seconds <= 0:
            return None
        return (self.completion_tokens - 1) / seconds


_current: ContextVar[Optional[RequestRecord]] = ContextVar("mlxserve_request", default=None)


def current() -> Optional[RequestRecord]:
    """The record of the request being served in this context (``None`` outside one)."""
    return _current.get()


def current_id() -> Optional[str]:
    record = _current.get()
    return record.request_id if record is not None else None


def begin(record: RequestRecord):
    """Make ``record`` current; pass the returned token to :func:`end`."""
    return _current.set(record)


def end(token) -> None:
    _current.reset(token)


def note_error(exc: BaseException, record: Optional[RequestRecord] = None) -> None:
    """Note the code of the error a request (default: the current one) ends with."""
    record = record or _current.get()
    if record is not None:
        record.error_code = getattr(exc, "code", None) or type(exc).__name__
