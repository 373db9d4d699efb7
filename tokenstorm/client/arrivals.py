"""Open-loop arrivals: when requests are meant to be sent, whatever the server does.

One global schedule of intended send times (offsets in seconds from a common start), drawn
from a seeded RNG, so every process can compute it; a process with index i of n takes the
arrivals k with k % n == i. The total rate is then the configured one, however many workers
share it (a per-process pacer would multiply it by the number of workers).

  constant  gaps of exactly 1/rate
  poisson   exponential gaps (mean 1/rate)
  gamma     gamma gaps of mean 1/rate and coefficient of variation `burstiness` (1 = poisson)

Rates can change in stages: [(duration_s, rate), ...]; the schedule restarts at each stage
boundary with that stage's rate (a rate of 0 sends nothing in its stage).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

KINDS = ("constant", "poisson", "gamma")


def gaps(kind: str, rate: float, burstiness: float, rng: random.Random) -> Iterator[float]:
    if rate <= 0:
        return
    mean = 1.0 / rate
    if kind == "constant":
        while True:
            yield mean
    elif kind == "poisson" or (kind == "gamma" and burstiness == 1.0):
        while True:
            yield rng.expovariate(rate)
    elif kind == "gamma":
        shape = 1.0 / (burstiness * burstiness)
        scale = mean / shape
        while True:
            yield rng.gammavariate(shape, scale)
    else:
        raise ValueError(f"unknown arrival process {kind!r} (choose from {', '.join(KINDS)})")


def schedule(kind: str, stages: list[tuple[float, float]], burstiness: float = 1.0,
             seed: int = 0) -> Iterator[float]:
    """Intended send offsets (s) over the stages [(duration_s or inf, rate)], in order."""
    rng = random.Random(f"arrivals:{seed}")
    start = 0.0
    for duration, rate in stages:
        end = start + duration
        if kind == "constant":
            k = 0
            while rate > 0:  # multiplication, not summed gaps: the 1000th arrival is exactly 1000/rate
                t = start + k / rate
                if t >= end:
                    break
                yield t
                k += 1
        else:
            t = start
            for gap in gaps(kind, rate, burstiness, rng):
                t += gap
                if t >= end:
                    break
                yield t
        if math.isinf(end):
            return
        start = end


def share(offsets: Iterator[float], index: int, count: int) -> Iterator[tuple[int, float]]:
    """(global arrival number, offset) of the arrivals of process `index` of `count`."""
    for k, offset in enumerate(offsets):
        if k % count == index:
            yield k, offset
