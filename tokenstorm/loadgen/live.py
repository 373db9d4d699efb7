"""Exact live figures for the web UI's LLM tab, fed with every record this process sees.

Standalone, that is the process's own records; on a master, the records the workers ship (so
the tab shows the whole run, not one worker). Every figure is analysis.metrics' definition, the
same as the report's: cancelled requests are not counted, percentiles are linear interpolation
over the raw values of successful requests, and the table's output tokens/s and goodput are over
the whole run (first request sent -> last request ended), so they stay put after the run.
Only the charts look at the last WINDOW_S seconds.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from analysis import metrics

WINDOW_S = 10.0  # the charts' percentiles and tokens/s: over the last 10 s
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
    first_start: float | None = None  # of the requests counted (the run's window, as analysis.metrics.window_s)
    last_end: float | None = None
    recent: deque = field(default_factory=deque)  # (end time, tokens, ttft, e2e, failed) of the last WINDOW_S


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
        if metrics.is_cancelled(error_type):  # cut off by the end of the run: not counted
            return
        group = self.groups.setdefault((upstream, scenario), _GroupFigures())
        group.requests += 1
        start = t_end - float(e2e_ms or 0) / 1000
        group.first_start = start if group.first_start is None else min(group.first_start, start)
        group.last_end = t_end if group.last_end is None else max(group.last_end, t_end)
        if metrics.is_failure(status, error_type):
            group.failures[error_type or "error"] += 1
            group.recent.append((t_end, 0, None, None, True))
            self._trim(group, t_end)
            return
        tokens = int(output_tokens or 0)
        group.output_tokens += tokens
        if ttft_ms is not None:
            group.ttft.append(float(ttft_ms))
        if tpot_ms is not None:
            group.tpot.append(float(tpot_ms))
        if e2e_ms is not None:
            group.e2e.append(float(e2e_ms))
        if metrics.meets_slos({"ttft_ms": ttft_ms, "tpot_ms": tpot_ms, "e2e_ms": e2e_ms}, self.slos):
            group.good += 1
        group.recent.append((t_end, tokens, ttft_ms, None if e2e_ms is None else float(e2e_ms), False))
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
        for (upstream, scenario), g in sorted(self.groups.items()):
            window = (g.last_end - g.first_start) if g.first_start is not None else 0.0
            row = {"name": upstream if scenario in ("", "default") else f"{scenario} @ {upstream}",
                   "requests": g.requests, "failures": sum(g.failures.values()),
                   "failclasses": ", ".join(f"{k} {v}" for k, v in sorted(g.failures.items())) or "-",
                   "tokps": round(metrics.per_second(g.output_tokens, window), 1),
                   "goodput": round(metrics.per_second(g.good, window), 2) if self.slos else None}
            for label, values in (("ttft", g.ttft), ("tpot", g.tpot), ("e2e", g.e2e)):
                for p, v in zip((50, 90, 99), metrics.percentiles(values, (50, 90, 99)), strict=True):
                    row[f"{label}p{p}"] = None if v is None else round(v, 2)
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
            ttfts += [t for _, _, t, _, _ in g.recent if t is not None]
            tokens += sum(n for _, n, _, _, _ in g.recent)
        window = min(WINDOW_S, max(now - self.started, 1e-9))
        p50, p99 = metrics.percentiles(ttfts, (50, 99))
        self.history.append({"t": round(now, 3), "ttft_p50": None if p50 is None else round(p50, 2),
                             "ttft_p99": None if p99 is None else round(p99, 2),
                             "tok_s": round(metrics.per_second(tokens, window), 1),
                             "in_flight": sum(self.in_flight.values())})
        del self.history[:-1800]  # an hour of points

    def header(self, chart_percentiles: Iterable[float]) -> dict:
        """Locust's header and Charts-tab figures, for the requests only (Locust's own totals add the
        TTFT/TPOT rows to the requests, tripling the RPS): request and failure rates and E2E
        percentiles over the last WINDOW_S, the failure ratio over the whole run."""
        now = time.time()
        starts = [g.first_start for g in self.groups.values() if g.first_start is not None]
        window = min(WINDOW_S, max(now - min(starts), 1e-9)) if starts else WINDOW_S
        ended = failed = 0
        e2e: list[float] = []
        for g in self.groups.values():
            self._trim(g, now)
            ended += len(g.recent)
            failed += sum(1 for *_, bad in g.recent if bad)
            e2e += [v for _, _, _, v, bad in g.recent if v is not None and not bad]
        requests = sum(g.requests for g in self.groups.values())
        failures = sum(sum(g.failures.values()) for g in self.groups.values())
        points = list(chart_percentiles)
        values = metrics.percentiles(e2e, [100 * p for p in points]) if e2e else [None] * len(points)
        return {"current_rps": round(metrics.per_second(ended, window), 2),
                "current_fail_per_sec": round(metrics.per_second(failed, window), 2),
                "fail_ratio": failures / requests if requests else 0.0,
                "current_response_time_percentiles": {
                    f"response_time_percentile_{p}": None if v is None else round(v)
                    for p, v in zip(points, values, strict=True)},
                "total_avg_response_time": round(sum(e2e) / len(e2e), 2) if e2e else 0}
