"""The client's self-check: its own CPU and event-loop lag, sampled while it measures.

A load generator whose CPU is saturated or whose event loop stalls reads every latency late
(docs/FIELD_NOTES.md s5: TTFT 100 ms read as p99 1012 ms at 98% CPU). Recording both with every run
makes such a run visible instead of silently wrong.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import gevent
import psutil

CPU_WARN_PCT = 80.0  # sustained client CPU above this distorts timings
LAG_WARN_MS = 10.0  # event-loop lag p99 above this distorts timings


@dataclass
class Sample:
    t: float  # unix seconds
    cpu_pct: float
    loop_lag_ms: float
    in_flight: int
    done: int


@dataclass
class Monitor:
    interval_s: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    in_flight: int = 0
    done: int = 0
    _greenlet: gevent.Greenlet | None = None
    _on_sample: object = None
    _process: psutil.Process | None = None
    _lags: list[float] = field(default_factory=list)  # loop lags (ms) since the last sample

    def start(self, on_sample=None) -> None:
        if self._greenlet is None:
            self._on_sample = on_sample
            self._process = psutil.Process()
            self._process.cpu_percent(None)
            self._lags = []
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Stop sampling; the part-interval since the last sample becomes a final sample, so a run
        shorter than one interval still reports its CPU and loop lag."""
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None
            if self._lags:
                self._take_sample()

    def _run(self) -> None:
        step = 0.1  # lag is sampled 10x per interval; CPU once per interval
        while True:
            for _ in range(round(self.interval_s / step)):
                before = time.monotonic()
                gevent.sleep(step)
                self._lags.append(max(0.0, time.monotonic() - before - step) * 1000)
            self._take_sample()

    def _take_sample(self) -> None:
        sample = Sample(time.time(), self._process.cpu_percent(None), max(self._lags), self.in_flight, self.done)
        self._lags = []
        self.samples.append(sample)
        if self._on_sample:
            self._on_sample(sample)

    def summary(self) -> dict:
        """CPU and loop-lag figures of the run, and whether they were high enough to distort timings."""
        if not self.samples:
            return {"samples": 0, "distorted": False, "warnings": []}
        cpu = [s.cpu_pct for s in self.samples]
        lag = sorted(s.loop_lag_ms for s in self.samples)
        lag_p99 = lag[min(len(lag) - 1, round(0.99 * (len(lag) - 1)))]
        out = {"samples": len(self.samples), "cpu_pct_mean": round(statistics.fmean(cpu), 1),
               "cpu_pct_max": round(max(cpu), 1), "loop_lag_ms_p99": round(lag_p99, 2),
               "loop_lag_ms_max": round(lag[-1], 2)}
        warnings = []
        busy = sum(1 for c in cpu if c > CPU_WARN_PCT)
        if busy >= max(2, len(cpu) // 4):
            warnings.append(f"client CPU above {CPU_WARN_PCT:g}% in {busy} of {len(cpu)} samples: timings may "
                            "be late; use fewer users per process or more workers")
        if lag_p99 > LAG_WARN_MS:
            warnings.append(f"event-loop lag p99 {lag_p99:.1f} ms (> {LAG_WARN_MS:g} ms): the client was too busy "
                            "to read on time; timings may be late")
        out["warnings"] = warnings
        out["distorted"] = bool(warnings)
        return out
