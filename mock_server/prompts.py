"""Prompt token counts for the mock: a cache bounded by total size, long prompts off the event loop.

Tokenizing an 8 MB prompt takes ~0.5 s of CPU; on the event loop that stalls every other
stream, so prompts of OFFLOAD_CHARS or more are tokenized in gevent's thread pool (tiktoken
releases the GIL). Prompts replayed from a dataset repeat, so counts are cached, but by total
characters (CACHE_CHARS), not by entries: 8,192 entries of 8 MB would be 64 GB.

With the prefix cache on (prefix_cache.py) the mock needs the prompt's token ids, not only their
count: ids() keeps them as uint32 bytes in a second cache bounded by bytes (IDS_CACHE_BYTES), and
remembers the count, so a prompt is tokenized once.
"""

from __future__ import annotations

import json
from array import array
from collections import OrderedDict

from tokenstorm.core.tokenizer import Tiktoken, active, count_tokens, message_text

OFFLOAD_CHARS = 16_384
CACHE_CHARS = 64 * 1024 * 1024
_cache: OrderedDict[str, int] = OrderedDict()
_cached_chars = 0


def count(text: str) -> int:
    """Tokens of `text` (the active tokenizer, cl100k_base by default), cached; long texts are tokenized
    in the thread pool."""
    hit = _cache.get(text)
    if hit is not None:
        _cache.move_to_end(text)
        return hit
    if len(text) >= OFFLOAD_CHARS:
        import gevent

        n = gevent.get_hub().threadpool.apply(_count_long, (text,))
    else:
        n = count_tokens(text)
    _remember(text, n)
    return n


def _remember(text: str, n: int) -> None:
    global _cached_chars
    if len(text) <= CACHE_CHARS // 8 and text not in _cache:
        _cache[text] = n
        _cached_chars += len(text)
        while _cached_chars > CACHE_CHARS:
            old, _ = _cache.popitem(last=False)
            _cached_chars -= len(old)


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


# -- token ids, for the prefix cache (prefix_cache.py) ---------------------------------------
# uint32 bytes: 4 bytes a token instead of ~36 for a list of ints. Bounded by total bytes.
IDS_CACHE_BYTES = 64 * 1024 * 1024
_ids_cache: OrderedDict[str, bytes] = OrderedDict()
_ids_bytes = 0
# Stand-ins for the chat template's framing tokens (OpenAI's 3 per message, 3 priming the reply):
# fixed ids, so the framing of a message is part of the prefix as in a real template.
_MESSAGE_FRAME = array("I", [100264, 100265, 100266]).tobytes()
_REPLY_PRIMING = array("I", [100264, 100266, 100265]).tobytes()
_NAME_MARK = array("I", [100267]).tobytes()


def ids(text: str) -> bytes:
    """The token ids of `text` (the active tokenizer) as uint32 bytes (len // 4 == count(text)), cached; long texts are
    tokenized in the thread pool. The count is remembered too: count(text) then tokenizes nothing."""
    global _ids_bytes
    hit = _ids_cache.get(text)
    if hit is not None:
        _ids_cache.move_to_end(text)
        return hit
    if len(text) >= OFFLOAD_CHARS:
        import gevent

        out = gevent.get_hub().threadpool.apply(_ids_long, (text,))
    else:
        out = array("I", active().encode(text)).tobytes()
    _remember(text, len(out) // 4)
    size = len(text) + len(out)
    if size <= IDS_CACHE_BYTES // 8:
        _ids_cache[text] = out
        _ids_bytes += size
        while _ids_bytes > IDS_CACHE_BYTES:
            old, value = _ids_cache.popitem(last=False)
            _ids_bytes -= len(old) + len(value)
    return out


def _ids_long(text: str) -> bytes:
    tok = active()
    if isinstance(tok, Tiktoken):
        try:
            return tok.encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=()).tobytes()
        except ImportError:  # numpy missing
            pass
    return array("I", tok.encode(text)).tobytes()


def id_list(tokens: list[int]) -> bytes:
    """Token ids sent as a prompt (the completions API's list of ints) as uint32 bytes."""
    return array("I", [t & 0xFFFFFFFF for t in tokens]).tobytes()


def chat_prompt_ids(messages: list[dict], tools: list[dict] | None = None) -> bytes:
    """The prompt of chat_prompt as token ids, exactly chat_prompt() tokens long: the tool definitions
    first (a chat template puts them in the system prompt), then every message's framing, role,
    content and name, then the priming of the reply."""
    parts = []
    if tools:
        parts.append(ids(json.dumps(tools, separators=(",", ":"), ensure_ascii=False)))
    for message in messages:
        parts.append(_MESSAGE_FRAME)
        for key, value in message.items():
            if key == "content":
                parts.append(ids(message_text(value)))
            elif key in ("role", "name") and isinstance(value, str):
                parts.append(ids(value))
                if key == "name":
                    parts.append(_NAME_MARK)
    parts.append(_REPLY_PRIMING)
    return b"".join(parts)


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
