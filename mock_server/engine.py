"""The mock's capacity and latency model: running slots, a FIFO queue, load, jitter, limits.

Time in the queue is part of TTFT, so TTFT rises with concurrency by itself once the slots
are full; the load factor (1 + load_slope x (running - 1)) slows prefill and decode as a
real batch scheduler does. Every duration is multiplied by lognormal jitter with mean 1 and
the configured coefficient of variation; jitter 0 makes it exact.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque

from gevent.event import Event

from . import metrics
from .config import MockConfig


class Slot:
    """A request's claim on a running slot; granted at once or after waiting in the queue."""

    __slots__ = ("event", "granted", "queued_at", "released")

    def __init__(self, granted: bool):
        self.granted = granted
        self.event: Event | None = None
        self.queued_at = 0.0
        self.released = False


class Engine:
    def __init__(self, config: MockConfig, max_num_seqs: int, seed: int):
        self.config = config
        self.max_num_seqs = max_num_seqs  # 0 = unlimited
        self.max_queue = config.capacity.max_queue
        self.running = 0
        self.waiting: deque[Slot] = deque()
        self.started = time.monotonic()
        lat = config.latency
        self._rng = random.Random(f"jitter:{seed}")
        self._sigma = math.sqrt(math.log1p(lat.jitter ** 2)) if lat.jitter > 0 else 0.0
        self._mu = -self._sigma ** 2 / 2
        # Mean time a request holds a slot, for the queue's retry estimate; updated as streams end.
        self.mean_service_s = (lat.ttft_ms + config.output.mean_tokens * lat.itl_ms) / 1000
        self.limiter = RateLimiter(config.rate_limit.requests_per_minute, config.rate_limit.tokens_per_minute)

    # -- slots ---------------------------------------------------------------------------
    def request_slot(self) -> Slot | None:
        """A granted or queued slot, or None when the queue is full."""
        if not self.max_num_seqs or (self.running < self.max_num_seqs and not self.waiting):
            self.running += 1
            metrics.RUNNING.inc()
            return Slot(True)
        if len(self.waiting) >= self.max_queue:
            return None
        slot = Slot(False)
        slot.event = Event()
        slot.queued_at = time.monotonic()
        self.waiting.append(slot)
        metrics.QUEUED.inc()
        return slot

    def wait(self, slot: Slot) -> None:
        if not slot.granted:
            slot.event.wait()
            metrics.QUEUE_WAIT.observe(time.monotonic() - slot.queued_at)

    def release(self, slot: Slot, held_s: float | None = None) -> None:
        if slot.released:
            return
        slot.released = True
        if not slot.granted:  # gave up while queued
            self.waiting.remove(slot)
            metrics.QUEUED.dec()
            return
        if held_s is not None:
            self.mean_service_s += 0.05 * (held_s - self.mean_service_s)
        if self.waiting:  # hand the slot straight to the next in line
            nxt = self.waiting.popleft()
            metrics.QUEUED.dec()
            nxt.granted = True
            nxt.event.set()
        else:
            self.running -= 1
            metrics.RUNNING.dec()

    def estimated_wait_s(self) -> float:
        """How long a request arriving now would wait for a slot."""
        if not self.max_num_seqs:
            return 0.0
        return (len(self.waiting) + 1) / self.max_num_seqs * self.mean_service_s

    # -- latency ---------------------------------------------------------------------------
    def jitter(self) -> float:
        return self._rng.lognormvariate(self._mu, self._sigma) if self._sigma else 1.0

    def load_factor(self) -> float:
        return 1.0 + self.config.latency.load_slope * max(0, self.running - 1)

    def prefill_s(self, prompt_tokens: int) -> float:
        lat = self.config.latency
        base = lat.ttft_ms + lat.per_input_token_ms * prompt_tokens
        return base / 1000 * self.load_factor() * self.jitter()

    def itl_s(self, slow: float = 1.0) -> float:
        return self.config.latency.itl_ms / 1000 * self.load_factor() * self.jitter() * slow

    def constant_itl_s(self, slow: float = 1.0) -> float | None:
        """The ITL when it cannot vary (no jitter, no load term): lets the stream skip the model."""
        lat = self.config.latency
        if self._sigma or lat.load_slope:
            return None
        return lat.itl_ms / 1000 * slow

    def uptime_s(self) -> float:
        return time.monotonic() - self.started


class RateLimiter:
    """Token buckets per minute for requests and tokens, refilled continuously (OpenAI style)."""

    def __init__(self, requests_per_minute: int | None, tokens_per_minute: int | None):
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self._requests = float(requests_per_minute or 0)
        self._tokens = float(tokens_per_minute or 0)
        self._last = time.monotonic()

    @property
    def enabled(self) -> bool:
        return bool(self.rpm or self.tpm)

    def _refill(self) -> None:
        now = time.monotonic()
        elapsed, self._last = now - self._last, now
        if self.rpm:
            self._requests = min(self.rpm, self._requests + elapsed * self.rpm / 60)
        if self.tpm:
            self._tokens = min(self.tpm, self._tokens + elapsed * self.tpm / 60)

    def take(self, tokens: int) -> float:
        """0 when allowed (and consumed), else seconds until it would be."""
        self._refill()
        wait = 0.0
        if self.rpm and self._requests < 1:
            wait = max(wait, (1 - self._requests) * 60 / self.rpm)
        if self.tpm and self._tokens < tokens:
            wait = max(wait, (min(tokens, self.tpm) - self._tokens) * 60 / self.tpm)
        if wait:
            return wait
        if self.rpm:
            self._requests -= 1
        if self.tpm:
            self._tokens -= tokens
        return 0.0

    def headers(self) -> list[tuple[str, str]]:
        out = []
        if self.rpm:
            out += [("x-ratelimit-limit-requests", str(self.rpm)),
                    ("x-ratelimit-remaining-requests", str(int(self._requests))),
                    ("x-ratelimit-reset-requests", format_reset((self.rpm - self._requests) * 60 / self.rpm))]
        if self.tpm:
            out += [("x-ratelimit-limit-tokens", str(self.tpm)),
                    ("x-ratelimit-remaining-tokens", str(int(self._tokens))),
                    ("x-ratelimit-reset-tokens", format_reset((self.tpm - self._tokens) * 60 / self.tpm))]
        return out


def format_reset(seconds: float) -> str:
    """OpenAI's reset format: 20ms, 1.5s, 6m0s."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"
