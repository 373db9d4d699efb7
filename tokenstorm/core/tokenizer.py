"""The one tokenizer of the suite: tiktoken, cl100k_base by default, working offline.

tiktoken downloads its BPE files on first use. tokenstorm ships cl100k_base in data/ (in the
package too, see core/assets.py) and
loads it through tiktoken's own encoding constructor, so the regex, the special tokens and
the expected sha256 all come from tiktoken itself; only the file location changes. When
tiktoken's cache already holds the file (the normal tiktoken path), that copy is used.
Other encodings load by name when tiktoken can get them (cache, internet, or a
``NAME.tiktoken`` file dropped into the data folder); otherwise a TokenizerError says why.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import importlib
import os
import tempfile
import threading
from pathlib import Path

import tiktoken
import tiktoken.load
import tiktoken.registry

from .assets import data_dir

DEFAULT_ENCODING = "cl100k_base"
DATA_DIR = Path(os.environ.get("TOKENSTORM_DATA_DIR") or data_dir())  # shipped in the package (core/assets.py)

# Texts longer than this are tokenized in gevent's thread pool when called from a greenlet,
# so a long prompt does not freeze every other stream of the process (docs/FIELD_NOTES.md s5).
OFFLOAD_CHARS = 16_384

_lock = threading.Lock()


class TokenizerError(Exception):
    """An encoding that cannot be loaded; the message says which and why."""


def _tiktoken_cache_path(url: str) -> Path | None:
    """Where tiktoken's read_file_cached keeps `url` (None when caching is disabled)."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if cache_dir == "":
        return None
    return Path(cache_dir) / hashlib.sha1(url.encode()).hexdigest()


def _read_bpe_file(path: Path, expected_hash: str | None) -> dict[bytes, int]:
    data = path.read_bytes()
    if expected_hash and hashlib.sha256(data).hexdigest() != expected_hash:
        raise TokenizerError(f"tokenizer file {path} is corrupt: its sha256 is not {expected_hash}")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[binascii.a2b_base64(token)] = int(rank)
    return ranks


def _load_bpe(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """Stand-in for tiktoken.load.load_tiktoken_bpe: tiktoken's cache, else data/."""
    cached = _tiktoken_cache_path(url)
    if cached is not None and cached.exists():
        return tiktoken.load.load_tiktoken_bpe(url, expected_hash)
    shipped = DATA_DIR / url.rsplit("/", 1)[-1]
    if shipped.exists():
        return _read_bpe_file(shipped, expected_hash)
    return tiktoken.load.load_tiktoken_bpe(url, expected_hash)


def _encoding_params(name: str) -> dict:
    """tiktoken's own constructor for `name` (regex, special tokens, expected sha256), with its BPE
    file read by _load_bpe. The one place that relies on tiktoken internals: its registry of
    constructors (registry._find_constructors, ENCODING_CONSTRUCTORS), the constructor module's
    load_tiktoken_bpe name, swapped for the call, and its cache's file naming (_tiktoken_cache_path).
    Checked on tiktoken 0.8-0.14 (pyproject pins tiktoken < 0.15)."""
    if tiktoken.registry.ENCODING_CONSTRUCTORS is None:
        tiktoken.registry._find_constructors()
    constructors = tiktoken.registry.ENCODING_CONSTRUCTORS or {}
    constructor = constructors.get(name)
    if constructor is None:
        raise TokenizerError(f"unknown tokenizer encoding {name!r} (tiktoken knows: {', '.join(sorted(constructors))})")
    module = importlib.import_module(constructor.__module__)
    with _lock:
        original = getattr(module, "load_tiktoken_bpe", None)
        module.load_tiktoken_bpe = _load_bpe
        try:
            return constructor()
        finally:
            module.load_tiktoken_bpe = original


def get_encoding(name: str = DEFAULT_ENCODING) -> tiktoken.Encoding:
    """The tiktoken Encoding called `name`, loaded without internet when data/ has its file."""
    return _load_encoding(name)


@functools.cache
def _load_encoding(name: str) -> tiktoken.Encoding:
    try:
        return tiktoken.Encoding(**_encoding_params(name))
    except TokenizerError:
        raise
    except Exception as exc:  # network, hash mismatch, missing blobfile...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TokenizerError(
            f"tokenizer encoding {name!r} could not be loaded ({reason}); without internet, "
            f"put its {name}.tiktoken file in {DATA_DIR}"
        ) from None


def count_tokens(text: str, encoding: str = DEFAULT_ENCODING) -> int:
    """Number of tokens in `text`; special-token strings count as plain text."""
    return len(get_encoding(encoding).encode_ordinary(text))


@functools.lru_cache(maxsize=8192)
def count_tokens_cached(text: str, encoding: str = DEFAULT_ENCODING) -> int:
    """count_tokens for texts that repeat (prompts replayed from a dataset)."""
    if len(text) >= OFFLOAD_CHARS:
        return count_tokens_offloaded(text, encoding)
    return count_tokens(text, encoding)


def count_tokens_offloaded(text: str, encoding: str = DEFAULT_ENCODING) -> int:
    """count_tokens run in gevent's thread pool (tiktoken releases the GIL there)."""
    import gevent

    return gevent.get_hub().threadpool.apply(count_tokens, (text, encoding))


def encode(text: str, encoding: str = DEFAULT_ENCODING) -> list[int]:
    return get_encoding(encoding).encode_ordinary(text)


def token_bytes(token_ids: list[int], encoding: str = DEFAULT_ENCODING) -> list[bytes]:
    """The raw bytes of each token (a token may hold part of a UTF-8 character)."""
    enc = get_encoding(encoding)
    return [enc.decode_single_token_bytes(t) for t in token_ids]


def message_text(content) -> str:
    """The text of a chat message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    return ""


def responses_messages(input_, instructions=None) -> list[dict]:
    """A Responses API request's `input` (a string, or a list of items) and `instructions` as chat
    messages, so its prompt is counted as chat prompts are: messages as they are, a function
    call's arguments and a function call's output as the assistant's and the tool's content."""
    messages: list[dict] = [{"role": "system", "content": instructions}] if isinstance(instructions, str) else []
    if isinstance(input_, str):
        return messages + [{"role": "user", "content": input_}]
    for item in input_ if isinstance(input_, list) else ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message" and isinstance(item.get("role"), str):
            messages.append({"role": item["role"], "content": item.get("content")})
        elif kind == "function_call":
            messages.append({"role": "assistant", "content": (item.get("name") or "") + (item.get("arguments") or "")})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "content": output if isinstance(output, str | list) else ""})
    return messages


def count_chat_prompt(messages: list[dict], encoding: str = DEFAULT_ENCODING) -> int:
    """Prompt tokens of a chat request the way OpenAI counts them (its cookbook's rule for the
    cl100k-era models): 3 per message, plus its role, content and name (name +1), plus 3 that
    prime the reply. Tool definitions are not counted."""
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            if key == "content":
                total += count_tokens_cached(message_text(value), encoding)
            elif key in ("role", "name") and isinstance(value, str):
                total += count_tokens_cached(value, encoding) + (1 if key == "name" else 0)
    return total
