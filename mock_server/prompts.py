"""Prompt token counts for the mock: a cache bounded by total size, long prompts off the event loop.

Tokenizing an 8 MB prompt takes ~0.5 s of CPU; on the event loop that stalls every other
stream, so prompts of OFFLOAD_CHARS or more are tokenized in gevent's thread pool (tiktoken
releases the GIL). Prompts replayed from a dataset repeat, so counts are cached, but by total
characters (CACHE_CHARS), not by entries: 8,192 entries of 8 MB would be 64 GB.
"""

from __future__ import annotations

import json
from collections import OrderedDict

from tokenstorm.core.tokenizer import Tiktoken, active, count_tokens, message_text

OFFLOAD_CHARS = 16_384
CACHE_CHARS = 64 * 1024 * 1024
_cache: OrderedDict[str, int] = OrderedDict()
_cached_chars = 0


def count(text: str) -> int:
    """Tokens of `text` (the active tokenizer, cl100k_base by default), cached; long texts are tokenized
    in the thread pool."""
    global _cached_chars
    hit = _cache.get(text)
    if hit is not None:
        _cache.move_to_end(text)
        return hit
    if len(text) >= OFFLOAD_CHARS:
        import gevent

        n = gevent.get_hub().threadpool.apply(_count_long, (text,))
    else:
        n = count_tokens(text)
    if len(text) <= CACHE_CHARS // 8:
        _cache[text] = n
        _cached_chars += len(text)
        while _cached_chars > CACHE_CHARS:
            old, _ = _cache.popitem(last=False)
            _cached_chars -= len(old)
    return n


def _count_long(text: str) -> int:
    """count_tokens without a Python int per token: the token list of an 8 MB prompt is built holding
    the GIL (~40 ms of other streams' time); tiktoken's numpy buffer is not (~10 ms). Same count:
    no special tokens allowed, none disallowed is encode_ordinary."""
    tok = active()
    if not isinstance(tok, Tiktoken):
        return count_tokens(text)
    try:
        return len(tok.encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=()))
    except ImportError:  # numpy missing
        return count_tokens(text)


def cached_chars() -> int:
    return _cached_chars


def chat_prompt(messages: list[dict], tools: list[dict] | None = None) -> int:
    """Prompt tokens of a chat request as OpenAI counts them (its cookbook's rule for cl100k models: 3 per
    message, plus role, content and name (+1), plus 3 priming the reply), plus the tool definitions,
    counted as their JSON text."""
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            if key == "content":
                total += count(message_text(value))
            elif key in ("role", "name") and isinstance(value, str):
                total += count(value) + (1 if key == "name" else 0)
    if tools:
        total += count(json.dumps(tools, separators=(",", ":"), ensure_ascii=False))
    return total
