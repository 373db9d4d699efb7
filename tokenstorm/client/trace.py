"""Mooncake traces: an open-loop schedule with each request's own prompt and output length.

One JSON object per line: {"timestamp": ms since the trace start, "input_length": tokens,
"output_length": tokens, "hash_ids": [ints]}, hash_ids[i] naming the i-th 512-token block of
the prompt (the last one may be partial). Replayed, record k is the k-th arrival of the global
schedule (timestamp / speedup), shared among processes as tokenstorm.client.arrivals shares
one; its prompt is synthesised so that equal hash_ids are equal token blocks (see blocks.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from .blocks import BLOCK_TOKENS, PromptSynth
from .datasets import DataError


class TraceEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")  # real traces carry more fields than these

    timestamp: StrictInt = Field(ge=0)
    input_length: StrictInt = Field(ge=1)
    output_length: StrictInt = Field(ge=1)
    hash_ids: list[StrictInt]

    @model_validator(mode="after")
    def _blocks_fit(self) -> TraceEntry:
        blocks = -(-self.input_length // BLOCK_TOKENS)
        if len(self.hash_ids) != blocks:
            raise ValueError(f"hash_ids: {len(self.hash_ids)} blocks given, but input_length {self.input_length} "
                             f"needs {blocks} blocks of {BLOCK_TOKENS} tokens")
        return self


def load_trace(path: Path) -> list[TraceEntry]:
    """The trace's entries in file order; DataError (file:line: field: problem) on the first bad line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    entries: list[TraceEntry] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = TraceEntry.model_validate(json.loads(line))
        except ValueError as exc:
            if not isinstance(exc, ValidationError):
                raise DataError(f"{path}:{number}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            raise DataError(f"{path}:{number}: {field + ': ' if field else ''}{message}") from None
        if entries and entry.timestamp < entries[-1].timestamp:
            raise DataError(f"{path}:{number}: timestamp: {entry.timestamp} is before the previous line's "
                            f"{entries[-1].timestamp} (a trace is in time order)")
        entries.append(entry)
    if not entries:
        raise DataError(f"{path}: no trace lines")
    return entries


def expected_cached_blocks(entries: list[TraceEntry]) -> list[int]:
    """For each entry, how many of its leading 512-token blocks earlier entries already sent whole:
    the hits of a prefix cache of block size 512 and unbounded size, counted as vLLM and the mock
    count them (only full blocks are cached, and the block holding the prompt's last token is
    never a hit: at least one token is always computed). Cached tokens = 512 x this."""
    seen: set[tuple[int, ...]] = set()  # block prefixes sent as full blocks
    result = []
    for entry in entries:
        full = entry.input_length // BLOCK_TOKENS  # whole blocks of this prompt
        usable = (entry.input_length - 1) // BLOCK_TOKENS  # those before the one with the last token
        hits = 0
        while hits < usable and tuple(entry.hash_ids[:hits + 1]) in seen:
            hits += 1
        result.append(hits)
        seen.update(tuple(entry.hash_ids[:i + 1]) for i in range(full))
    return result


def _block_lengths(entry: TraceEntry) -> list[int]:
    full = len(entry.hash_ids) - 1
    return [BLOCK_TOKENS] * full + [entry.input_length - BLOCK_TOKENS * full]


class Trace:
    """A loaded trace: its schedule and, for arrival k, the row a scenario body is filled from."""

    fields = frozenset({"prompt", "max_tokens", "input_tokens", "output_tokens"})

    def __init__(self, path: Path, entries: list[TraceEntry], speedup: float, seed: int):
        self.path = path
        self.entries = entries
        self.speedup = speedup
        self.synth = PromptSynth(seed)

    def offsets(self) -> Iterator[float]:
        """Intended send offsets (s) from the schedule's start: timestamp / speedup."""
        for entry in self.entries:
            yield entry.timestamp / 1000.0 / self.speedup

    @property
    def duration_s(self) -> float:
        return self.entries[-1].timestamp / 1000.0 / self.speedup

    def row(self, k: int) -> dict:
        entry = self.entries[k]
        return {"prompt": self.synth.prompt(entry.hash_ids, entry.input_length), "max_tokens": entry.output_length,
                "input_tokens": entry.input_length, "output_tokens": entry.output_length}
