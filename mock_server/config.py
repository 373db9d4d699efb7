"""The mock's configuration: a YAML file validated by pydantic, overridden by CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tokenstorm.core.assets import configs_dir

PROFILE_DIR = configs_dir() / "mock"  # shipped in the package (tokenstorm/core/assets.py)
FAULTS = ("http_429", "http_500", "http_503", "error_event", "truncate", "stall", "disconnect",
          "slow", "malformed")
FaultName = Literal["http_429", "http_500", "http_503", "error_event", "truncate", "stall",
                    "disconnect", "slow", "malformed"]


class ConfigError(Exception):
    """A bad config file or flag; the message is one line naming what is wrong."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Server(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8082, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=256)
    log_requests: str | None = Field(None, description="append every generation request body to this file")


class Auth(_Section):
    enabled: bool = True
    api_keys: list[str] = Field(default_factory=lambda: ["mock-key"], min_length=1)


class ModelSpec(_Section):
    id: str = Field(min_length=1)
    owned_by: str = "tokenstorm"
    reasoning_tokens: int | None = Field(None, ge=0, description="overrides output.reasoning_tokens")


class Latency(_Section):
    ttft_ms: float = Field(200.0, ge=0, description="fixed part of TTFT (scheduling + prefill)")
    per_input_token_ms: float = Field(0.0, ge=0, description="prefill time per prompt token")
    itl_ms: float = Field(20.0, ge=0, description="time between output tokens; 0 = back to back")
    jitter: float = Field(0.0, ge=0, le=5, description="lognormal coefficient of variation; 0 = exact")
    load_slope: float = Field(0.0, ge=0, description="TTFT/ITL grow by this fraction per extra running stream")


class Capacity(_Section):
    max_num_seqs: int = Field(0, ge=0, description="running slots; 0 = unlimited")
    max_queue: int = Field(1024, ge=0, description="requests waiting for a slot before 429")


class PrefixCache(_Section):
    """vLLM-style automatic prefix caching (prefix_cache.py): cached prompt blocks cost no prefill."""

    capacity_tokens: int = Field(0, ge=0, le=16_777_216, description="prompt tokens the cache holds (LRU); "
                                 "0 = off")
    block_size: int = Field(16, ge=1, le=65_536, description="tokens per cached block (vLLM: 16)")


class Output(_Section):
    mean_tokens: int = Field(128, ge=1, description="natural output length when max_tokens allows")
    cv: float = Field(0.0, ge=0, le=5, description="lognormal spread of the natural length")
    language: Literal["en", "zh"] = "en"
    tokenizer: str = Field("", description="a local Hugging Face tokenizer.json that generates and counts tokens "
                                           "('' = tiktoken cl100k_base)")
    reasoning_tokens: int = Field(0, ge=0, description="reasoning_content tokens before the answer")
    tool_call_probability: float = Field(0.5, ge=0, le=1, description="chance of a call with tool_choice auto")
    max_parallel_tool_calls: int = Field(1, ge=1, le=16)
    role_chunk: Literal["with-first-token", "with-headers"] = Field(
        "with-first-token", description="when the role-only chat chunk is sent (vLLM, SGLang: with the first token)")


class TimelineFault(_Section):
    fault: FaultName
    start_s: float = Field(ge=0, description="seconds after the server started")
    duration_s: float = Field(gt=0)
    probability: float = Field(1.0, ge=0, le=1)


class Faults(_Section):
    probabilities: dict[FaultName, float] = Field(default_factory=dict)
    timeline: list[TimelineFault] = Field(default_factory=list)
    after_tokens: int = Field(8, ge=0, description="tokens sent before a mid-stream fault")
    stall_s: float = Field(300.0, gt=0, description="how long a stalled stream stays open")
    slow_factor: float = Field(10.0, ge=1, description="ITL multiplier of the slow fault")
    retry_after_s: float = Field(1.0, ge=0, description="retry hint of injected 429s")

    @model_validator(mode="after")
    def _check_probabilities(self) -> Faults:
        for name, p in self.probabilities.items():
            if not 0 <= p <= 1:
                raise ValueError(f"faults.probabilities.{name} must be between 0 and 1, got {p}")
        if sum(self.probabilities.values()) > 1:
            raise ValueError("faults.probabilities add up to more than 1")
        return self


class RateLimit(_Section):
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)


class Limits(_Section):
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    idle_timeout_s: float = Field(60.0, gt=0, description="a keep-alive connection unused this long is closed")
    header_timeout_s: float = Field(10.0, gt=0, description="a request head must arrive within this (else 408)")
    body_timeout_s: float = Field(60.0, gt=0, description="a request body must arrive within this (else 408)")
    write_timeout_s: float = Field(60.0, gt=0, description="a client that takes none of an answer's bytes this "
                                   "long is cut off (its slot freed)")
    max_connections: int | None = Field(None, ge=1, description="open connections kept; None = from ulimit -n")


class MockConfig(_Section):
    server: Server = Field(default_factory=Server)
    auth: Auth = Field(default_factory=Auth)
    models: list[ModelSpec] = Field(default_factory=lambda: [
        ModelSpec(id="mock-llm"), ModelSpec(id="mock-reasoner", reasoning_tokens=64)], min_length=1)
    accept_any_model: bool = False
    latency: Latency = Field(default_factory=Latency)
    capacity: Capacity = Field(default_factory=Capacity)
    prefix_cache: PrefixCache = Field(default_factory=PrefixCache)
    output: Output = Field(default_factory=Output)
    faults: Faults = Field(default_factory=Faults)
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    limits: Limits = Field(default_factory=Limits)
    seed: int = 0

    def model_spec(self, model_id: str) -> ModelSpec | None:
        for spec in self.models:
            if spec.id == model_id:
                return spec
        return ModelSpec(id=model_id) if self.accept_any_model else None


def describe_validation_error(exc: ValidationError, where: str) -> str:
    """One line: every problem as `field.path: message`."""
    problems = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        problems.append(f"{path}: {msg}" if path else msg)
    return f"{where}: " + "; ".join(problems)


def resolve_profile(name_or_path: str) -> Path:
    """A file path, or the name of a profile in configs/mock/ (e.g. `chaos`)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    profile = PROFILE_DIR / f"{name_or_path}.yaml"
    if "/" not in name_or_path and profile.exists():
        return profile
    known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
    raise ConfigError(f"config file {name_or_path} not found (profiles: {known})")


def load_config(path: str | None) -> MockConfig:
    if path is None:
        return MockConfig()
    file = resolve_profile(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {file}: cannot read it ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {file}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file}: the top level must be a mapping of sections")
    try:
        return MockConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, f"config file {file}")) from None


def apply_overrides(config: MockConfig, overrides: dict[str, object]) -> MockConfig:
    """Set dotted fields (`latency.itl_ms`) from CLI flags; None means not given."""
    data = config.model_dump()
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    try:
        return MockConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, "command line")) from None
