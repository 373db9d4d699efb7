"""Prometheus metrics of the mock, served at GET /metrics.

With `--workers N` the CLI sets PROMETHEUS_MULTIPROC_DIR before this module is imported, so
every worker writes its values to shared files and any worker's /metrics shows the sum.

The schedule lag of every chunk (how late it left against its absolute deadline) is what
proves the mock was not the bottleneck of a measurement. Observing a Prometheus histogram
per chunk costs several microseconds (two locked increments, more in multiprocess mode),
so each stream counts its lags locally and adds them to the histogram once, at its end.
"""

from __future__ import annotations

import bisect
import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LAG_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05,
               0.1, 0.25, 0.5, 1.0, 2.5, float("inf"))

REQUESTS = Counter("mock_requests_total", "Requests answered, by endpoint and HTTP status",
                   ["endpoint", "status"])
OUTPUT_TOKENS = Counter("mock_output_tokens_total", "Output tokens sent (content, reasoning, tools)")
PROMPT_TOKENS = Counter("mock_prompt_tokens_total", "Prompt tokens received")
CHUNKS = Counter("mock_chunks_total", "SSE data events written in streams")
RUNNING = Gauge("mock_running_streams", "Requests holding a running slot", multiprocess_mode="livesum")
QUEUED = Gauge("mock_queued_requests", "Requests waiting for a slot", multiprocess_mode="livesum")
QUEUE_WAIT = Histogram("mock_queue_wait_seconds", "Time requests waited for a slot",
                       buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, float("inf")))
TOKEN_LAG = Histogram("mock_token_lag_seconds",
                      "How late each output chunk was written against its absolute deadline",
                      buckets=LAG_BUCKETS)
FIRST_TOKEN_LAG = Histogram("mock_first_token_lag_seconds",
                            "How late each stream's first output chunk was written against its deadline "
                            "(the TTFT the mock was asked for)", buckets=LAG_BUCKETS)
TOKEN_LAG_MAX = Gauge("mock_token_lag_max_seconds", "Largest chunk lag since start",
                      multiprocess_mode="max")
TIME_TO_FIRST_TOKEN = Histogram("mock_time_to_first_token_seconds",
                                "From a request's arrival to its first output chunk (what vLLM's "
                                "vllm:time_to_first_token_seconds measures)",
                                buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
                                         float("inf")))
FAULTS = Counter("mock_faults_injected_total", "Faults injected, by name", ["fault"])
DISCONNECTS = Counter("mock_client_disconnects_total", "Streams whose client went away mid-response")
REJECTED = Counter("mock_rejected_total", "Requests refused for capacity or rate limits", ["reason"])

# vLLM V1's prefix-cache counters (in tokens), registered only with the cache on (enable_prefix_cache)
PREFIX_CACHE_QUERIES: Counter | None = None
PREFIX_CACHE_HITS: Counter | None = None


def enable_prefix_cache() -> None:
    """Register vllm:prefix_cache_queries / _hits (exposed as ..._total, as vLLM does)."""
    global PREFIX_CACHE_QUERIES, PREFIX_CACHE_HITS
    if PREFIX_CACHE_QUERIES is None:
        PREFIX_CACHE_QUERIES = Counter("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache")
        PREFIX_CACHE_HITS = Counter("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache")


_BOUNDS = [b for b in LAG_BUCKETS if b != float("inf")]
_lag_max = 0.0


class LagCounter:
    """Per-stream tally of chunk lags (and chunks), added to the metrics every FLUSH_EVERY chunks.
    Given the request's arrival (monotonic), its first chunk also observes TIME_TO_FIRST_TOKEN and
    FIRST_TOKEN_LAG (a first token waits on another timer than the rest: its lag is its own)."""

    FLUSH_EVERY = 64
    __slots__ = ("arrival", "counts", "largest", "n", "total")

    def __init__(self, arrival: float | None = None) -> None:
        self.arrival = arrival
        self.counts = [0] * len(LAG_BUCKETS)
        self.total = 0.0
        self.largest = 0.0
        self.n = 0

    def add(self, lag: float) -> None:
        if lag < 0.0:
            lag = 0.0
        if self.arrival is not None:
            TIME_TO_FIRST_TOKEN.observe(time.monotonic() - self.arrival)
            FIRST_TOKEN_LAG.observe(lag)
            self.arrival = None
        self.counts[bisect.bisect_left(_BOUNDS, lag)] += 1
        self.total += lag
        if lag > self.largest:
            self.largest = lag
        self.n += 1
        if self.n >= self.FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        global _lag_max
        if not self.n:
            return
        _observe_many(TOKEN_LAG, self.counts, self.total)
        CHUNKS.inc(self.n)
        if self.largest > _lag_max:
            _lag_max = self.largest
            TOKEN_LAG_MAX.set(_lag_max)
        self.counts = [0] * len(LAG_BUCKETS)
        self.total = 0.0
        self.n = 0


def _observe_many(histogram: Histogram, counts: list[int], total: float) -> None:
    """Add `counts` observations per bucket (non-cumulative, in the histogram's bucket order) summing
    to `total`, as that many observe() calls would. prometheus_client has no batch observe, so this
    increments the histogram's own private per-bucket values (_buckets, _sum), the objects
    observe() increments (multiprocess mode included). Checked on prometheus-client 0.20-0.26
    (pyproject pins < 1)."""
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)
    histogram._sum.inc(total)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
