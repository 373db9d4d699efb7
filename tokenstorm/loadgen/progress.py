"""One live progress line for headless runs (tokenstorm run's default), instead of Locust's tables.

Locust's periodic tables add the TTFT and TPOT rows to its Aggregated row, so their request count
and RPS read about 3x the real rate. This line shows the run's own figures, from the same live
statistics as the web UI's LLM tab (analysis.metrics' definitions): requests done of the total
and the ETA, req/s, output tokens/s, TTFT P50/P99, TPOT P50, streams in flight and errors by class.

On a terminal it is redrawn in place every second (rich); in a log it is a line every 10 s.
"""

from __future__ import annotations

import time
from collections import Counter

from rich.console import Console
from rich.live import Live
from rich.text import Text

from analysis import metrics

from .live import LiveStats

LOG_EVERY_S = 10.0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressLine:
    """Call tick() once a second; finish() once at the end (it leaves the last line in place)."""

    def __init__(self, live: LiveStats, total_requests: int = 0, run_time_s: float | None = None,
                 console: Console | None = None):
        self.live = live
        self.total = total_requests
        self.run_time_s = run_time_s or None
        self.console = console or Console(stderr=True, highlight=False)
        self.started = time.time()
        self._display: Live | None = None
        self._logged = 0.0

    def line(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        groups = list(self.live.groups.values())
        done = sum(g.requests for g in groups)
        failures: Counter = sum((g.failures for g in groups), Counter())
        ttft = [v for g in groups for v in g.ttft]
        tpot = [v for g in groups for v in g.tpot]
        tokens = sum(g.output_tokens for g in groups)
        starts = [g.first_start for g in groups if g.first_start is not None]
        ends = [g.last_end for g in groups if g.last_end is not None]
        window = (max(ends) - min(starts)) if starts and ends else 0.0
        ttft_p50, ttft_p99 = metrics.percentiles(ttft, (50, 99))
        (tpot_p50,) = metrics.percentiles(tpot, (50,))
        if self.total:
            eta = (self.total - done) * elapsed / done if done else None
            head = f"{done:,}/{self.total:,} requests ({done / self.total:.0%})"
        else:
            eta = self.run_time_s - elapsed if self.run_time_s else None
            head = f"{done:,} requests"
        parts = [head + (f" ETA {_clock(eta)}" if eta is not None else "") + f" [{_clock(elapsed)}]",
                 f"{done / elapsed:,.1f} req/s",
                 f"{metrics.per_second(tokens, window):,.0f} output tok/s",
                 f"TTFT P50 {_ms(ttft_p50)} P99 {_ms(ttft_p99)} ms",
                 f"TPOT P50 {_ms(tpot_p50)} ms",
                 f"in flight {sum(self.live.in_flight.values())}",
                 "errors " + (", ".join(f"{k} {v}" for k, v in sorted(failures.items())) if failures else "0")]
        return " | ".join(parts)

    def tick(self) -> None:
        now = time.time()
        if self.console.is_terminal:
            text = Text(self.line(now), no_wrap=True, overflow="ellipsis")
            if self._display is None:
                self._display = Live(text, console=self.console, auto_refresh=False, redirect_stdout=False,
                                     redirect_stderr=False)
                self._display.start()
            self._display.update(text, refresh=True)
        elif now - self._logged >= LOG_EVERY_S:
            self._logged = now
            self.console.file.write(f"tokenstorm: {self.line(now)}\n")
            self.console.file.flush()

    def finish(self) -> None:
        if self._display is not None:
            self._display.update(Text(self.line(), no_wrap=True, overflow="ellipsis"), refresh=True)
            self._display.stop()
            self._display = None
        else:
            self.console.file.write(f"tokenstorm: {self.line()}\n")
            self.console.file.flush()
