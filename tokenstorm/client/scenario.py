"""Scenario files: what to send, where, how to read the answer, from which data.

YAML or JSON, validated with one message per problem and unknown keys rejected. The body is
a template: any string may hold `{{name}}` placeholders filled from the data source's row; a
string that is exactly one placeholder takes the value with its type (a list of messages, a
number). Header values may reference environment variables as `${VAR}` (for secrets): they
are resolved once at load, and a missing variable is an error before any request is sent.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..core import tokenizer
from ..core.assets import assets_dir
from .datasets import DataError, Rows, Synthetic, load_csv, load_jsonl
from .httpclient import Target
from .trace import Trace, load_trace

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
FORMATS = ("openai-chat", "openai-completions", "openai-responses", "anthropic", "raw")
DEFAULT_PATHS = {"openai-chat": "/v1/chat/completions", "openai-completions": "/v1/completions",
                 "openai-responses": "/v1/responses", "anthropic": "/v1/messages", "raw": "/raw/stream"}


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the file and the field or value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Upstream(_Strict):
    url: str
    weight: float = Field(1.0, gt=0)
    name: str = ""


class TokenTarget(_Strict):
    mean: int = Field(ge=1)
    stddev: float = Field(0.0, ge=0)


class Prefix(_Strict):
    """Shared prompt prefixes (prefix-cache workloads): each prompt starts with one of `pool` prefixes."""

    tokens: int = Field(ge=1, le=1_000_000, description="tokens of every prefix")
    pool: int = Field(1, ge=1, le=100_000, description="distinct prefixes (1: one shared system prompt)")


class Data(_Strict):
    type: Literal["csv", "jsonl", "synthetic", "mooncake"]
    file: str | None = None
    column: str | None = None
    encoding: str = "utf-8"
    seed: int | None = 0
    shuffle: bool = False
    input_tokens: TokenTarget | None = None
    output_tokens: TokenTarget | None = None
    prefix: Prefix | None = None
    speedup: float = Field(1.0, gt=0, description="mooncake: replay the trace this many times faster")

    @model_validator(mode="after")
    def _complete(self) -> Data:
        if self.type in ("csv", "jsonl", "mooncake") and not self.file:
            raise ValueError(f"a {self.type} data source needs `file`")
        if self.type == "synthetic" and (self.input_tokens is None or self.output_tokens is None):
            raise ValueError("a synthetic data source needs `input_tokens` and `output_tokens` ({mean, stddev})")
        if self.speedup != 1.0 and self.type != "mooncake":
            raise ValueError("`speedup` is for a mooncake trace only")
        if self.prefix is not None:
            if self.type != "synthetic":
                raise ValueError("`prefix` is for synthetic data only")
            if self.prefix.tokens >= self.input_tokens.mean:
                raise ValueError(f"prefix.tokens ({self.prefix.tokens}) must be less than input_tokens.mean "
                                 f"({self.input_tokens.mean}): the prefix is part of the prompt")
        return self


class Timeouts(_Strict):
    connect_s: float | None = Field(None, gt=0)
    first_token_s: float | None = Field(None, gt=0)
    stall_s: float | None = Field(None, gt=0)
    total_s: float | None = Field(None, gt=0)


class Slos(_Strict):
    ttft_ms: float | None = Field(None, gt=0)
    tpot_ms: float | None = Field(None, gt=0)
    e2e_ms: float | None = Field(None, gt=0)


class Stage(_Strict):
    duration_s: float = Field(gt=0)
    users: int = Field(ge=0, description="concurrency (closed loop) or the cap on streams in flight (open loop)")
    spawn_rate: float | None = Field(None, gt=0)
    rate: float | None = Field(None, ge=0, description="open-loop arrivals per second in this stage")


class Agent(_Strict):
    max_turns: int = Field(4, ge=1, le=50)
    tool_result: str = '{"ok": true}'


class ThinkTime(_Strict):
    mean: float = Field(ge=0)
    stddev: float = Field(0.0, ge=0)


class UserTurns(_Strict):
    """The user's messages of turns 2..T: synthetic text of `tokens` tokens, or `texts` in turn."""

    tokens: int | None = Field(None, ge=1)
    texts: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one(self) -> UserTurns:
        if (self.tokens is None) == (self.texts is None):
            raise ValueError("give exactly one of `tokens` (synthetic) or `texts` (a list of messages)")
        return self


class Conversation(_Strict):
    """Response-conditioned multi-turn: each turn sends the history with the server's actual answers."""

    turns: int = Field(ge=1, le=200)
    think_time_s: ThinkTime = Field(default_factory=lambda: ThinkTime(mean=0.0),
                                    description="seconds from a turn's end to the next send: fixed or {mean, stddev}")
    user_turns: UserTurns = Field(default_factory=lambda: UserTurns(tokens=32))

    @field_validator("think_time_s", mode="before")
    @classmethod
    def _fixed(cls, value: Any) -> Any:
        return {"mean": value} if isinstance(value, int | float) and not isinstance(value, bool) else value


class Cancel(_Strict):
    share: float = Field(ge=0, le=1, description="share of streams the client closes on purpose")
    after_tokens: int = Field(1, ge=1, description="close after this many output chunks (1: the first token)")


class ScenarioFile(_Strict):
    name: str = Field(min_length=1)
    format: Literal["openai-chat", "openai-completions", "openai-responses", "anthropic", "raw"] = "openai-chat"
    method: Literal["POST"] = "POST"
    path: str = Field("", description="default: the format's usual path (DEFAULT_PATHS)")
    upstreams: list[Upstream] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    body: dict[str, Any]
    data: Data | None = None
    users: int | None = Field(None, ge=1)
    total_requests: int | None = Field(None, ge=0)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    slos: Slos = Field(default_factory=Slos)
    agent: Agent | None = None
    conversation: Conversation | None = None
    cancel: Cancel | None = None
    stages: list[Stage] = Field(default_factory=list)
    seed: int = 0

    @model_validator(mode="after")
    def _default_path(self) -> ScenarioFile:
        if self.conversation is not None and self.agent is not None:
            raise ValueError("`conversation` and `agent` are two kinds of conversation: give one of them")
        if self.conversation is not None and self.format not in ("openai-chat", "anthropic"):
            raise ValueError(f"`conversation` needs a messages format (openai-chat or anthropic), not {self.format}")
        if not self.path:
            self.path = DEFAULT_PATHS[self.format]
        if self.data is not None and self.data.type == "mooncake" and any(st.rate is not None for st in self.stages):
            raise ValueError("stages: a mooncake trace is the arrival schedule; stages may set users, not rate")
        return self


def _expand(value: str, env: dict[str, str], where: str) -> str:
    """`${VAR}` and `${VAR:-default}` from the environment; a missing VAR without default is an error."""
    def one(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ScenarioError(f"{where} needs the environment variable {name}, which is not set")
    return ENV_REF.sub(one, value)


def _placeholders(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(PLACEHOLDER.findall(value))
    if isinstance(value, dict):
        return set().union(*(_placeholders(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_placeholders(v) for v in value)) if value else set()
    return set()


def fill(template: Any, row: dict) -> Any:
    """The template with every {{name}} replaced by row[name] (typed when it is the whole string)."""
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template.strip())
        if whole:
            return row[whole.group(1)]
        return PLACEHOLDER.sub(lambda m: str(row[m.group(1)]), template)
    if isinstance(template, dict):
        return {k: fill(v, row) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, row) for v in template]
    return template


class Scenario:
    """A validated scenario with its data source opened and its headers resolved."""

    def __init__(self, spec: ScenarioFile, source: Path, env: dict[str, str]):
        self.spec = spec
        self.source = source
        where = f"scenario {source}"
        self.headers: list[tuple[str, str]] = []
        for name, value in spec.headers.items():
            self.headers.append((name, _expand(value, env, f"{where}: headers.{name}")))
        self.data = self._open_data(where)
        needed = _placeholders(spec.body)
        available = set(self.data.fields) if self.data is not None else set()
        unknown = sorted(needed - available)
        if unknown:
            have = ", ".join(sorted(available)) or "none (no data source)"
            raise ScenarioError(f"{where}: body uses {{{{{unknown[0]}}}}}, which the data does not provide "
                                f"(fields: {have})")
        self.upstreams = []
        for i, upstream in enumerate(spec.upstreams):
            try:
                target = Target.parse(_expand(upstream.url, env, f"{where}: upstreams.{i}.url"))
            except ValueError as exc:
                raise ScenarioError(f"{where}: upstreams.{i}.url: {exc}") from None
            self.upstreams.append((upstream.name or target.origin + target.base_path, target, upstream.weight))
        self._current = [0.0] * len(self.upstreams)
        self._user_text: Synthetic | None = None

    @property
    def trace(self) -> Trace | None:
        """The trace replayed as the open-loop schedule (data type mooncake), else None."""
        return self.data if isinstance(self.data, Trace) else None

    def _open_data(self, where: str) -> Rows | Synthetic | Trace | None:
        data = self.spec.data
        if data is None:
            return None
        try:
            if data.type == "synthetic":
                prefix = data.prefix
                return Synthetic(data.input_tokens.mean, data.input_tokens.stddev, data.output_tokens.mean,
                                 data.output_tokens.stddev, data.seed, prefix.tokens if prefix else 0,
                                 prefix.pool if prefix else 1)
            path = Path(data.file)
            if not path.is_absolute() and not path.exists():
                path = self.source.parent / data.file  # relative to the scenario file
                if not path.exists():
                    path = assets_dir() / data.file  # or to the shipped files (data/...)
            if data.type == "mooncake":
                return Trace(path, load_trace(path), data.speedup, data.seed or 0)
            if data.type == "csv":
                return load_csv(path, data.column, data.encoding, data.seed, data.shuffle)
            return load_jsonl(path, data.encoding, data.seed, data.shuffle)
        except (DataError, tokenizer.TokenizerError) as exc:
            raise ScenarioError(f"{where}: data: {exc}") from None

    @property
    def name(self) -> str:
        return self.spec.name

    def next_body(self, arrival: int | None = None) -> tuple[dict, int | None]:
        """The next request body and its prompt tokens (for the record when the server sends no usage);
        with a trace, the body of the trace's entry number `arrival` (the global arrival number)."""
        if isinstance(self.data, Trace):
            row = self.data.row(arrival or 0)
        else:
            row = self.data.next() if self.data is not None else {}
        body = fill(self.spec.body, row) if row else self.spec.body
        return body, prompt_tokens(body)

    def user_turn(self, turn: int) -> str:
        """The user's message of a conversation's turn (2..T; the scenario's `conversation.user_turns`):
        texts[turn - 2] (cycled), or fresh synthetic text of the given tokens."""
        turns = self.spec.conversation.user_turns
        if turns.texts is not None:
            return turns.texts[(turn - 2) % len(turns.texts)]
        if self._user_text is None:
            self._user_text = Synthetic(turns.tokens, 0.0, 1, 0.0, self.spec.seed)
        return self._user_text.next()["prompt"]

    def pick_upstream(self):
        """(name, target) of the next request: smooth weighted round robin (as nginx balances), so
        weights 3:1 give exactly 3 of every 4 requests to the first upstream, interleaved."""
        if len(self.upstreams) == 1:
            return self.upstreams[0][:2]
        total = 0.0
        for i, (_, _, weight) in enumerate(self.upstreams):
            self._current[i] += weight
            total += weight
        best = max(range(len(self.upstreams)), key=self._current.__getitem__)
        self._current[best] -= total
        return self.upstreams[best][:2]


def prompt_tokens(body: dict) -> int | None:
    """The prompt tokens of a chat, Responses or legacy completions body, counted as the mock and
    OpenAI's cookbook count them (tool definitions left out)."""
    if "input" in body and "messages" not in body:
        messages = tokenizer.responses_messages(body["input"], body.get("instructions"))
        return tokenizer.count_chat_prompt(messages) if messages else None
    messages = body.get("messages")
    if isinstance(messages, list):
        system = body.get("system")
        messages = ([{"role": "system", "content": system}] if isinstance(system, str) else []) + [
            m for m in messages if isinstance(m, dict)]
        return tokenizer.count_chat_prompt(messages)
    if isinstance(body.get("prompt"), str):
        return tokenizer.count_tokens_cached(body["prompt"])
    return None


def load_scenario(path: str | Path, env: dict[str, str] | None = None) -> Scenario:
    source = Path(path)
    where = f"scenario {source}"
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{where}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        raw = json.loads(text) if source.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else (f" line {exc.lineno}" if hasattr(exc, "lineno") else "")
        raise ScenarioError(f"{where}{line}: not valid {'JSON' if source.suffix == '.json' else 'YAML'}") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: the top level must be a mapping")
    try:
        spec = ScenarioFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            problems.append(f"{field}: {err['msg'].removeprefix('Value error, ')}" if field else err["msg"])
        raise ScenarioError(f"{where}: " + "; ".join(problems)) from None
    return Scenario(spec, source, dict(os.environ) if env is None else env)
