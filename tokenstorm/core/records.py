"""The record schema: one row per request attempt, and one per tool-calling conversation.

The writer (tokenstorm.client.writer), the workers' shipper (tokenstorm.loadgen.distributed) and
the analysis (analysis.stats) all take the columns from here, so a file written by one is read
by the other with the same names, in the same order.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass

CANCELLED = "cancelled"  # still streaming when the run ended: cut off by the run, not a failure of the target
ERROR_TYPES = ("connect", "http_status", "timeout_first_token", "stall", "timeout_total", "sse_error",
               "truncated", "malformed", "protocol", CANCELLED, "client_error")


@dataclass
class Record:
    """One request attempt; the CSV columns of DIR/requests-<worker>.csv, in this order."""

    request_id: str = ""
    worker_id: str = ""
    user_id: int = 0
    scenario: str = ""
    upstream: str = ""
    model: str = ""
    t_start: float = 0.0  # unix seconds when the request was sent
    status: str = ""  # ok or error, set when the request ended; never ok by default
    error_type: str = ""
    error: str = ""
    http_status: int | None = None
    connect_ms: float | None = None
    ttfb_ms: float | None = None
    ttft_ms: float | None = None
    ttfvt_ms: float | None = None
    e2e_ms: float | None = None
    total_ms: float | None = None
    tpot_ms: float | None = None
    itl_mean_ms: float | None = None
    itl_max_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    output_tokens_source: str = ""
    output_tokens_usage: int | None = None
    output_tokens_tokenizer: int | None = None
    reasoning_tokens: int | None = None
    chunks: int = 0
    finish_reason: str = ""
    tokens_per_s: float | None = None
    t_intended: float | None = None  # open loop: unix s the request was meant to be sent
    schedule_lag_ms: float | None = None  # open loop: sent this late against its intended time
    cached_tokens: int | None = None  # prompt tokens the server served from its prefix cache (usage)
    tokenizer: str = ""  # who counted output_tokens_tokenizer: cl100k_base, or the --tokenizer file's name

    @property
    def ok(self) -> bool:
        return self.status == "ok"


RECORD_FIELDS = list(Record.__dataclass_fields__)


def _is_number(hint) -> bool:
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return all(a in (int, float, type(None)) for a in args)


_HINTS = typing.get_type_hints(Record)
NUMERIC_FIELDS = [name for name in RECORD_FIELDS if _is_number(_HINTS[name])]
"""The record columns that hold numbers (an empty cell: not applicable); the others hold text."""
TEXT_FIELDS = [name for name in RECORD_FIELDS if name not in NUMERIC_FIELDS]

CONVERSATION_FIELDS = ["conversation_id", "worker_id", "user_id", "scenario", "t_start", "turns", "tool_calls",
                       "ended_by", "total_ms", "status"]
