"""Which fault, if any, a request gets: its X-Mock-Fault header, the timeline, or chance."""

from __future__ import annotations

import random
import re

from .config import FAULTS, Faults

HEADER = "x-mock-fault"
AFTER_HEADER = "x-mock-fault-after"


class FaultError(ValueError):
    """A bad X-Mock-Fault header value."""


class FaultPicker:
    def __init__(self, config: Faults, seed: int):
        self.config = config
        self._rng = random.Random(f"faults:{seed}")
        self._weights = list(config.probabilities.items())

    def pick(self, headers: dict[str, str], uptime_s: float) -> tuple[str | None, int]:
        """(fault name or None, tokens to send before a mid-stream fault)."""
        after = self.config.after_tokens
        raw_after = headers.get(AFTER_HEADER)
        if raw_after is not None:
            if not re.fullmatch(r"[0-9]{1,9}", raw_after.strip()):  # ASCII digits: int() takes "²" too
                raise FaultError(f"X-Mock-Fault-After must be a whole number of tokens, got {raw_after!r}")
            after = int(raw_after)
        requested = headers.get(HEADER)
        if requested is not None:
            name = requested.strip().lower()
            if name in ("", "none"):
                return None, after
            if name not in FAULTS:
                raise FaultError(f"unknown X-Mock-Fault {requested!r} (choose from {', '.join(FAULTS)})")
            return name, after
        for entry in self.config.timeline:
            active = entry.start_s <= uptime_s < entry.start_s + entry.duration_s
            if active and (entry.probability >= 1 or self._rng.random() < entry.probability):
                return entry.fault, after
        if self._weights:
            draw = self._rng.random()
            for name, probability in self._weights:
                if draw < probability:
                    return name, after
                draw -= probability
        return None, after
