"""The one tokenizer of the suite: tiktoken cl100k_base by default, working offline, or a local
Hugging Face tokenizer.json (`--tokenizer PATH`, see use()).

Every caller goes through the process's active tokenizer (active()): a small interface
(name, encode, decode, pieces) with two implementations, Tiktoken and HFTokenizer.

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
import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Protocol

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


class Tokenizer(Protocol):
    """What the suite needs of a tokenizer. Special-token strings are plain text; no BOS/EOS added."""

    name: str  # what records and reports say counted: "cl100k_base" or the tokenizer.json's file name
    default: bool  # the shipped cl100k_base, not necessarily the model's tokenizer

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def pieces(self, text: str) -> list[bytes]:
        """`text` cut token by token: one bytes item per token of encode(text), joined they are text.encode()
        (a piece may hold part of a UTF-8 character)."""
        ...


class Tiktoken:
    """A tiktoken encoding (cl100k_base by default), loaded offline (see get_encoding)."""

    default = True

    def __init__(self, name: str = DEFAULT_ENCODING):
        self.name = name
        self.encoding = get_encoding(name)
        self.default = name == DEFAULT_ENCODING

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        return self.encoding.decode(ids)

    def pieces(self, text: str) -> list[bytes]:
        return [self.encoding.decode_single_token_bytes(t) for t in self.encode(text)]


class HFTokenizer:
    """A Hugging Face tokenizer.json read with `tokenizers` (imported only when one is used)."""

    default = False

    def __init__(self, path: Path):
        from tokenizers import Tokenizer as _HF

        self.path = path
        self.name = path.name if path.name != "tokenizer.json" else f"{path.parent.name}/{path.name}"
        self.hf = _HF.from_file(str(path))

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=False)

    def pieces(self, text: str) -> list[bytes]:
        offsets = self.hf.encode(text, add_special_tokens=False).offsets
        out, previous = [], 0
        for i, (_start, end) in enumerate(offsets):
            end = len(text) if i == len(offsets) - 1 else max(end, previous)
            out.append(text[previous:end].encode())
            previous = end
        return out


_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load(path: str) -> HFTokenizer:
    """The tokenizer.json at `path`, or a one-line TokenizerError naming it: only local files are read."""
    only_local = "only local Hugging Face tokenizer.json files are read (no hub downloads)"
    file = Path(path).expanduser()
    if file.is_dir():
        inside = " (it holds a tokenizer.json: give that file)" if (file / "tokenizer.json").is_file() else ""
        raise TokenizerError(f"--tokenizer {path}: is a directory{inside}; {only_local}")
    if not file.exists():
        hint = " (that looks like a hub model name)" if _HUB_NAME.match(path) and not path.endswith(".json") else ""
        raise TokenizerError(f"--tokenizer {path}: no such file{hint}; {only_local}")
    try:
        data = json.loads(file.read_bytes())
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or "not JSON"
        raise TokenizerError(f"--tokenizer {path}: not a tokenizer.json ({reason}); {only_local}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise TokenizerError(f"--tokenizer {path}: not a tokenizer.json (no \"model\" object); {only_local}")
    try:
        return HFTokenizer(file)
    except ImportError:
        raise TokenizerError(f"--tokenizer {path}: the `tokenizers` package is not installed "
                             "(pip install tokenizers)") from None
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TokenizerError(f"--tokenizer {path}: not a tokenizer.json `tokenizers` can read ({reason})") from None


_active: Tokenizer | None = None


def active() -> Tokenizer:
    """The process's tokenizer: the one given to use(), else cl100k_base."""
    global _active
    if _active is None:
        _active = Tiktoken()
    return _active


def use(path: str | None) -> Tokenizer:
    """Make the tokenizer.json at `path` (None or "": cl100k_base) this process's tokenizer."""
    global _active
    _active = load(path) if path else Tiktoken()
    return _active


def _resolve(encoding: str | None) -> Tokenizer:
    return active() if encoding is None else _tiktoken(encoding)


@functools.cache
def _tiktoken(name: str) -> Tiktoken:
    return Tiktoken(name)


def count_tokens(text: str, encoding: str | None = None) -> int:
    """Number of tokens in `text` (the active tokenizer, or the tiktoken `encoding` named);
    special-token strings count as plain text."""
    return len(_resolve(encoding).encode(text))


def count_tokens_cached(text: str, encoding: str | None = None) -> int:
    """count_tokens for texts that repeat (prompts replayed from a dataset)."""
    return _count_cached(text, _resolve(encoding))


@functools.lru_cache(maxsize=8192)
def _count_cached(text: str, tok: Tokenizer) -> int:
    if len(text) >= OFFLOAD_CHARS:
        import gevent

        return gevent.get_hub().threadpool.apply(lambda: len(tok.encode(text)))
    return len(tok.encode(text))


def count_tokens_offloaded(text: str, encoding: str | None = None) -> int:
    """count_tokens run in gevent's thread pool (tiktoken and tokenizers release the GIL there)."""
    import gevent

    tok = _resolve(encoding)
    return gevent.get_hub().threadpool.apply(lambda: len(tok.encode(text)))


def encode(text: str, encoding: str | None = None) -> list[int]:
    return _resolve(encoding).encode(text)


def decode(ids: list[int], encoding: str | None = None) -> str:
    return _resolve(encoding).decode(ids)


def pieces(text: str, encoding: str | None = None) -> list[bytes]:
    """`text` cut token by token (see Tokenizer.pieces)."""
    return _resolve(encoding).pieces(text)


def token_bytes(token_ids: list[int], encoding: str = DEFAULT_ENCODING) -> list[bytes]:
    """The raw bytes of each token of a tiktoken encoding (a token may hold part of a UTF-8 character)."""
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


def count_chat_prompt(messages: list[dict], encoding: str | None = None) -> int:
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
