"""The mock's prefix KV cache: prompt blocks seen recently cost no prefill time.

As vLLM's automatic prefix caching: a prompt is cut into blocks of `block_size` tokens and a
block's identity is hash(previous block's identity, its token ids), so only a shared *prefix*
hits (the same block after a different prefix is another block). Only full blocks are cached,
and never the prompt's last token (a server computes at least one token to produce the first
output). The cache holds at most capacity_tokens // block_size block identities (one int each,
~100 bytes with the dict entry), evicted least recently used; a request's blocks are touched
last-to-first, so the tail of a chain is evicted before its head (as vLLM frees them).

Blocks are entered when a request is admitted, not when its prefill ends: two requests with the
same new prefix arriving together both count the second as a hit.
"""

from __future__ import annotations

from collections import OrderedDict

TOKEN_BYTES = 4  # prompt token ids travel as uint32 bytes (prompts.prompt_ids)


def block_hashes(ids: bytes, block_size: int) -> list[int]:
    """The chained identities of the full blocks of `ids` (uint32 bytes) before its last token."""
    step = block_size * TOKEN_BYTES
    end = (len(ids) // TOKEN_BYTES - 1) // block_size * step
    out: list[int] = []
    append = out.append
    h = 0
    for i in range(0, end, step):
        h = hash((h, ids[i:i + step]))
        append(h)
    return out


class PrefixCache:
    """An LRU set of block identities; lookup() answers the cached prefix and enters the prompt."""

    def __init__(self, capacity_tokens: int, block_size: int):
        self.block_size = block_size
        self.capacity_blocks = capacity_tokens // block_size
        self._blocks: OrderedDict[int, None] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.capacity_blocks > 0

    def __len__(self) -> int:
        return len(self._blocks)

    def lookup(self, hashes: list[int]) -> int:
        """Tokens of the prompt's leading blocks already cached; then all its blocks are cached."""
        blocks = self._blocks
        hits = 0
        for h in hashes:
            if h not in blocks:
                break
            hits += 1
        for h in reversed(hashes[: self.capacity_blocks]):
            blocks[h] = None
            blocks.move_to_end(h)
        while len(blocks) > self.capacity_blocks:
            blocks.popitem(last=False)
        return hits * self.block_size
