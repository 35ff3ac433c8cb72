"""Prometheus metrics: counters and histograms fed by finished requests, gauges read live.

Each app has its own registry (no process globals), so several servers in one
process (the tests) never share numbers. :meth:`Metrics.observe` takes a
finished :class:`~mlxserve.tracing.RequestRecord`; the gauges (slots, queue,
decode speed, memory) are read from the service when ``/metrics`` is scraped.
"""

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mlxserve.tracing import RequestRecord

CONTENT_TYPE = CONTENT_TYPE_LATEST
# The decode-speed gauge averages the generations that ended this recently.
SPEED_WINDOW_SECONDS = 60.0
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CLIENT_CLOSED = 499  # the client went away: not the server's error


class Metrics:
    """The server's metrics.

    Args:
        service: The :class:`~mlxserve.service.Service` whose live state the gauges show.
    """

    def __init__(self, service):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mlxserve_requests", "HTTP requests answered.", ["endpoint", "status"], registry=r
        )
        self.errors = Counter(
            "mlxserve_errors",
            "Requests that ended in an error (status or in-stream), by error code.",
            ["endpoint", "code"],
            registry=r,
        )
        self.generated = Counter(
            "mlxserve_tokens_generated", "Completion tokens generated.", registry=r
        )
        self.prompt = Counter(
            "mlxserve_prompt_tokens", "Prompt and embedding input tokens processed.", registry=r
        )
        self.cache_hits = Counter(
            "mlxserve_prompt_cache_hits",
            "Generations whose prompt reused a kept KV cache (prompt cache).",
            registry=r,
        )
        self.cached = Counter(
            "mlxserve_prompt_cache_tokens",
            "Prompt tokens whose KV state came from the prompt cache (not prefilled).",
            registry=r,
        )
        self.latency = Histogram(
            "mlxserve_request_latency_seconds",
            "Seconds from a request's arrival to the end of its response.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "mlxserve_time_to_first_token_seconds",
            "Seconds from a request's arrival (queueing included) to its first generated token.",
            ["endpoint"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.speeds: deque[tuple[float, int, float]] = deque()
        """(ended at, tokens after the first, seconds they took) of recent generations."""
        r.register(_LiveState(service, self))

    def observe(self, record: RequestRecord) -> None:
        """Count a finished request."""
        endpoint = record.endpoint
        self.requests.labels(endpoint, str(record.status)).inc()
        self.latency.labels(endpoint).observe(record.duration)
        if record.status != CLIENT_CLOSED and (record.status >= 400 or record.error_code):
            self.errors.labels(endpoint, record.error_code or str(record.status)).inc()
        if record.prompt_tokens:
            self.prompt.inc(record.prompt_tokens)
        if record.completion_tokens:
            self.generated.inc(record.completion_tokens)
        if record.cached_tokens:
            self.cache_hits.inc()
            self.cached.inc(record.cached_tokens)
        if record.ttft is not None:
            self.ttft.labels(endpoint).observe(record.ttft)
        if record.tokens_per_second is not None:
            self.speeds.append(
                (time.monotonic(), record.completion_tokens - 1, record.decode_seconds)
            )

    def tokens_per_second(self) -> float:
        """Decode speed over the generations that ended in the last minute (0 when none did)."""
        horizon = time.monotonic() - SPEED_WINDOW_SECONDS
        while self.speeds and self.speeds[0][0] < horizon:
            self.speeds.popleft()
        tokens = sum(t for _, t, _ in self.speeds)
        seconds = sum(s for _, _, s in self.speeds)
        return tokens / seconds if seconds > 0 else 0.0

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _LiveState:
    """Gauges read from the service at scrape time."""

    def __init__(self, service, metrics: Metrics):
        self.service = service
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        svc = self.service
        yield _gauge("mlxserve_active_requests", "Generations holding a slot.", svc.gate.active)
        yield _gauge("mlxserve_queued_requests", "Requests waiting for a slot.", svc.gate.queued)
        yield _gauge(
            "mlxserve_tokens_per_second",
            f"Decode speed (tokens/s after the first token) of the generations that ended "
            f"in the last {SPEED_WINDOW_SECONDS:g} s; 0 when none did.",
            self.metrics.tokens_per_second(),
        )
        engines = list(svc.models.engines.values())
        # One process-wide number, as each engine thread last saw it (not counting kept caches).
        yield _gauge(
            "mlxserve_mlx_memory_bytes",
            "MLX memory in use (weights, running KV caches, buffers), kept prompt caches aside.",
            max((e.memory_in_use for e in engines), default=0),
        )
        yield _gauge(
            "mlxserve_prompt_cache_bytes",
            "Bytes of KV cache kept by the prompt cache.",
            sum(e.prompt_cache.nbytes for e in engines),
        )
        weights = GaugeMetricFamily(
            "mlxserve_model_weights_bytes",
            "Bytes of each loaded model's weights.",
            labels=["model"],
        )
        for model_id, engine in list(svc.models.engines.items()):
            if engine.state == "ready":
                weights.add_metric([model_id], engine.weights_bytes)
        yield weights


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
