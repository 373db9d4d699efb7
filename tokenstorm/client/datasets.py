"""Data sources for request templates, deterministic for a seed.

A source yields rows (dicts of placeholder name -> value). CSV: one row per line, every
column by name (and the chosen `column` also as `prompt`); rows cycle when requests outnumber
them. JSONL: one conversation per line (a list of messages, or {"messages": [...]}) as
`messages`, plus `prompt` = its last user message. Synthetic: a `prompt` of a target length
in tokens (normal, mean and stddev) and a `max_tokens` of a target output length; with a
shared prefix, every prompt starts with one of `pool` prefixes of exactly `tokens` tokens
(`prefix`, the rest `suffix`), for prefix-cache workloads.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from ..core import tokenizer


class DataError(ValueError):
    """A data file or setting that cannot be used; the message names the file and line."""


class Rows:
    """Cycles through a fixed list of rows, in file order or shuffled once by the seed."""

    def __init__(self, rows: list[dict], seed: int | None, shuffle: bool):
        self.rows = rows
        if shuffle:
            random.Random(seed).shuffle(self.rows)
        self._i = 0

    @property
    def fields(self) -> set[str]:
        return set(self.rows[0]) if self.rows else set()

    def next(self) -> dict:
        row = self.rows[self._i % len(self.rows)]
        self._i += 1
        return row


def load_csv(path: Path, column: str | None, encoding: str, seed: int | None, shuffle: bool) -> Rows:
    try:
        with open(path, newline="", encoding=encoding) as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = []
            for number, row in enumerate(reader, start=2):
                if None in row or any(v is None for v in row.values()):
                    raise DataError(f"{path} line {number}: {len(header)} columns expected")
                rows.append(row)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not readable as {encoding} (byte {exc.start}); set data.encoding") from None
    except LookupError:
        raise DataError(f"{path}: unknown encoding {encoding!r}") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a valid CSV file ({exc})") from None
    if not rows:
        raise DataError(f"{path}: no data rows")
    if column:
        if column not in header:
            raise DataError(f"{path}: no column {column!r} (columns: {', '.join(header)})")
        for row in rows:
            row.setdefault("prompt", row[column])
    return Rows(rows, seed, shuffle)


def load_jsonl(path: Path, encoding: str, seed: int | None, shuffle: bool) -> Rows:
    rows = []
    try:
        lines = path.read_text(encoding=encoding).splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not readable as {encoding} (byte {exc.start})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
        messages = item.get("messages") if isinstance(item, dict) else item
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in messages):
            raise DataError(f"{path} line {number}: expected a list of messages with role and content")
        users = [m for m in messages if m["role"] == "user"]
        rows.append({"messages": messages,
                     "prompt": tokenizer.message_text(users[-1]["content"]) if users else ""})
    if not rows:
        raise DataError(f"{path}: no conversations")
    return Rows(rows, seed, shuffle)


_WORDS = ("load", "latency", "token", "stream", "server", "model", "request", "queue", "batch", "cluster", "cache",
          "metric", "window", "report", "user", "answer", "question", "system", "network", "memory")


class Synthetic:
    """Prompts of a target token length: words drawn by a seeded RNG, cut to the exact count.

    With `prefix_tokens`, a prompt of n tokens is one of `prefix_pool` prefixes (drawn uniformly by the
    seeded RNG) of exactly prefix_tokens tokens, then n - prefix_tokens tokens of its own; n is at least
    prefix_tokens + 1. Every piece is a run of single-token " word"s, so prefix + suffix re-tokenizes to
    exactly n tokens."""

    def __init__(self, input_mean: int, input_stddev: float, output_mean: int, output_stddev: float,
                 seed: int | None, prefix_tokens: int = 0, prefix_pool: int = 1):
        self.input_mean, self.input_stddev = input_mean, input_stddev
        self.output_mean, self.output_stddev = output_mean, output_stddev
        self._rng = random.Random(seed)
        self._tokenizer = tok = tokenizer.active()
        # a long stream of single-token words to cut prompts from: a cut between two of them
        # re-tokenizes to exactly its length
        words = [w for w in _WORDS if len(tok.encode(" " + w)) == 1]
        if not words:
            raise tokenizer.TokenizerError(f"tokenizer {tok.name}: no single-token English words to build "
                                           "synthetic prompts of exact lengths from")
        text = " ".join(self._rng.choice(words) for _ in range(20000))
        self._tokens = tok.encode(text)
        self.prefix_tokens = prefix_tokens
        self.prefixes: list[str] = []
        self.fields = frozenset({"prompt", "max_tokens", "input_tokens"})
        if prefix_tokens:
            self.fields |= {"prefix", "suffix", "prefix_id"}
            self._prefix_rng = random.Random(f"prefix:{seed}")
            spaced = [" " + w for w in words]
            seen: set[str] = set()
            while len(self.prefixes) < prefix_pool:  # distinct from their first words on
                prefix = "".join(self._prefix_rng.choice(spaced) for _ in range(prefix_tokens))
                head = prefix[:200]
                if head not in seen:
                    seen.add(head)
                    self.prefixes.append(prefix)

    def _cut(self, n: int, skip_first: bool) -> str:
        """n tokens of the word stream (from its second token on when skip_first: all of them " word"s)."""
        low = 1 if skip_first else 0
        start = self._rng.randrange(low, len(self._tokens) - n) if n < len(self._tokens) - low else low
        ids = (self._tokens * (n // len(self._tokens) + 2))[start:start + n]
        return self._tokenizer.decode(ids)

    def next(self) -> dict:
        n = max(1, round(self._rng.gauss(self.input_mean, self.input_stddev)))
        out = max(1, round(self._rng.gauss(self.output_mean, self.output_stddev)))
        if not self.prefix_tokens:
            start = self._rng.randrange(0, len(self._tokens) - n) if n < len(self._tokens) else 0
            ids = (self._tokens * (n // len(self._tokens) + 1))[start:start + n]
            return {"prompt": self._tokenizer.decode(ids), "max_tokens": out, "input_tokens": n}
        n = max(n, self.prefix_tokens + 1)
        index = self._prefix_rng.randrange(len(self.prefixes))
        suffix = self._cut(n - self.prefix_tokens, skip_first=True)
        prefix = self.prefixes[index]
        return {"prompt": prefix + suffix, "prefix": prefix, "suffix": suffix, "prefix_id": index,
                "max_tokens": out, "input_tokens": n}
