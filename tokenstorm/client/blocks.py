"""Prompts made of 512-token blocks, one per hash id: equal ids give equal blocks (real prefix sharing).

A block is 512 words drawn by an RNG seeded with (seed, hash id), each word one cl100k token
that starts with a space (" load"). cl100k's pre-tokenizer splits text before every " word",
so no token spans two words: blocks concatenate to exactly the sum of their token counts, and a
partial last block of n tokens is the block's first n words.
"""

from __future__ import annotations

import random
from functools import lru_cache

from ..core import tokenizer

BLOCK_TOKENS = 512
_WORDS = ("load", "latency", "token", "stream", "server", "model", "request", "queue", "batch", "cluster", "cache",
          "metric", "window", "report", "user", "answer", "question", "system", "network", "memory", "block",
          "prefix", "time", "rate", "value", "table", "graph", "node", "input", "output", "page", "line")


@lru_cache(maxsize=1)
def _vocabulary() -> tuple[str, ...]:
    enc = tokenizer.get_encoding()
    return tuple(" " + w for w in _WORDS if len(enc.encode_ordinary(" " + w)) == 1)


class PromptSynth:
    """Deterministic prompts for (hash_ids, input_length), blocks cached by hash id (bounded)."""

    def __init__(self, seed: int = 0, cache_blocks: int = 4096):
        self.seed = seed
        self._block = lru_cache(maxsize=cache_blocks)(self._make_block)

    def _make_block(self, hash_id: int) -> tuple[str, ...]:
        rng = random.Random(f"block:{self.seed}:{hash_id}")
        return tuple(rng.choices(_vocabulary(), k=BLOCK_TOKENS))

    def block(self, hash_id: int, tokens: int = BLOCK_TOKENS) -> str:
        """The text of block `hash_id`, cut to its first `tokens` tokens."""
        return "".join(self._block(hash_id)[:tokens])

    def prompt(self, hash_ids: list[int], input_length: int) -> str:
        """input_length tokens: the blocks of hash_ids in order, the last one cut to fit."""
        parts, left = [], input_length
        for hash_id in hash_ids:
            parts.append(self.block(hash_id, min(left, BLOCK_TOKENS)))
            left -= BLOCK_TOKENS
            if left <= 0:
                break
        return "".join(parts)
