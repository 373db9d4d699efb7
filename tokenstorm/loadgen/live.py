"""Exact live figures for the web UI's LLM tab, fed with every record this process sees.

Standalone, that is the process's own records; on a master, the records the workers ship (so
the tab shows the whole run, not one worker). Percentiles are numpy's (linear interpolation)
over the raw values of successful requests, never Locust's buckets.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

WINDOW_S = 10.0  # tokens/s and the charts' percentiles: over the last 10 s
HISTORY_EVERY_S = 2.0


@dataclass
class _GroupFigures:
    requests: int = 0
    failures: Counter = field(default_factory=Counter)
    ttft: list = field(default_factory=list)
    tpot: list = field(default_factory=list)
    e2e: list = field(default_factory=list)
    good: int = 0
    output_tokens: int = 0
    recent: deque = field(default_factory=deque)  # (end time, tokens, ttft) of the last WINDOW_S


class LiveStats:
    def __init__(self, slos: dict[str, float] | None = None):
        self.slos = dict(slos or {})
        self.groups: dict[tuple[str, str], _GroupFigures] = {}
        self.history: list[dict] = []
        self.in_flight: dict[str, int] = {}  # per process
        self.started = time.time()
        self._cache: tuple[float, list] = (0.0, [])
        self._last_sample = 0.0

    def add(self, upstream: str, scenario: str, status: str, error_type: str, ttft_ms, tpot_ms, e2e_ms,
            output_tokens, t_end: float) -> None:
        group = self.groups.setdefault((upstream, scenario), _GroupFigures())
        group.requests += 1
        if status != "ok":
            group.failures[error_type or "error"] += 1
            return
        tokens = int(output_tokens or 0)
        group.output_tokens += tokens
        if ttft_ms is not None:
            group.ttft.append(float(ttft_ms))
        if tpot_ms is not None:
            group.tpot.append(float(tpot_ms))
        if e2e_ms is not None:
            group.e2e.append(float(e2e_ms))
        values = {"ttft_ms": ttft_ms, "tpot_ms": tpot_ms, "e2e_ms": e2e_ms}
        if all(values.get(k) is not None and values[k] <= limit for k, limit in self.slos.items()):
            group.good += 1
        group.recent.append((t_end, tokens, ttft_ms))
        self._trim(group, t_end)

    @staticmethod
    def _trim(group: _GroupFigures, now: float) -> None:
        while group.recent and group.recent[0][0] < now - WINDOW_S:
            group.recent.popleft()

    def rows(self) -> list[dict]:
        """The LLM tab's table: one row per (upstream, scenario); computed at most once a second."""
        now = time.time()
        if now - self._cache[0] < 1.0:
            return self._cache[1]
        rows = []
        elapsed = max(now - self.started, 1e-9)
        for (upstream, scenario), g in sorted(self.groups.items()):
            self._trim(g, now)
            window = min(WINDOW_S, elapsed)
            row = {"name": upstream if scenario in ("", "default") else f"{scenario} @ {upstream}",
                   "requests": g.requests, "failures": sum(g.failures.values()),
                   "failclasses": ", ".join(f"{k} {v}" for k, v in sorted(g.failures.items())) or "-",
                   "tokps": round(sum(t for _, t, _ in g.recent) / window, 1),
                   "goodput": round(g.good / elapsed, 2) if self.slos else None}
            for label, values in (("ttft", g.ttft), ("tpot", g.tpot), ("e2e", g.e2e)):
                points = np.percentile(values, [50, 90, 99]) if values else [None] * 3
                for p, v in zip((50, 90, 99), points, strict=True):
                    row[f"{label}p{p}"] = None if v is None else round(float(v), 2)
            rows.append(row)
        for row in rows:
            row["inflight"] = sum(self.in_flight.values())  # the whole run's streams in flight
        self._cache = (now, rows)
        return rows

    def sample(self) -> None:
        """A point of the charts: TTFT P50/P99 and output tokens/s over the last WINDOW_S."""
        now = time.time()
        if now - self._last_sample < HISTORY_EVERY_S:
            return
        self._last_sample = now
        ttfts, tokens = [], 0
        for g in self.groups.values():
            self._trim(g, now)
            ttfts += [t for _, _, t in g.recent if t is not None]
            tokens += sum(n for _, n, _ in g.recent)
        window = min(WINDOW_S, max(now - self.started, 1e-9))
        p50, p99 = (np.percentile(ttfts, [50, 99]) if ttfts else (None, None))
        self.history.append({"t": round(now, 3), "ttft_p50": None if p50 is None else round(float(p50), 2),
                             "ttft_p99": None if p99 is None else round(float(p99), 2),
                             "tok_s": round(tokens / window, 1), "in_flight": sum(self.in_flight.values())})
        del self.history[:-1800]  # an hour of points
