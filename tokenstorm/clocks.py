"""Kernel receive timestamps (CLOCK_REALTIME) expressed on time.monotonic()'s clock.

Converting each stamp with `time.monotonic() - (time.time() - stamp)` is wrong by whatever
time passes between the two clock reads; a preemption there (common on a shared VM) moved
a stamp 77 us into the past in a test. The offset between the clocks is instead measured
from a tight read pair (the pair with the shortest gap out of a few) and reused for a second.
"""

from __future__ import annotations

import time

_REFRESH_S = 1.0
_offset = 0.0  # realtime - monotonic
_measured_at = -1e9


def _measure() -> float:
    best_gap, best = float("inf"), 0.0
    for _ in range(5):
        m1 = time.monotonic()
        r = time.time()
        m2 = time.monotonic()
        if m2 - m1 < best_gap:
            best_gap, best = m2 - m1, r - (m1 + m2) / 2
    return best


def realtime_to_monotonic(stamp: float, now: float) -> float:
    """`stamp` (unix seconds) on the monotonic clock; `now` is a fresh time.monotonic()."""
    global _offset, _measured_at
    if now - _measured_at > _REFRESH_S:
        _offset, _measured_at = _measure(), now
    return stamp - _offset
