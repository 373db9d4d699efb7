"""tokenstorm's options: declared once in a pydantic model, registered on Locust's own parser.

Each field of `RunOptions` is one option of the command line, of .conf files, of a LOCUST_<NAME>
variable and of the web UI's start form alike. The same parser checks a value whichever way it
came: on the command line Locust prints `locust: error: argument --max-tokens: ...` and exits 2;
a value typed into the start form (a string, or '' for "not given") is checked when the test
starts. The rest (host URL, results folder, prompt file, key, model) is checked by
Settings.build(), whose OptionError becomes one line on stderr and exit code 2 before any load.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ..client.arrivals import KINDS
from ..client.httpclient import Target
from ..client.scenario import Scenario, ScenarioError, load_scenario
from ..client.stream import Timeouts
from ..client.writer import check_writable
from ..core import tokenizer as tokenizer_module
from ..core.assets import find
from .server_metrics import SCRAPE_INTERVAL_S, metrics_target, public_url

DEFAULT_PROMPT = ("You are helping with a load test. Write a short, friendly paragraph about why measuring "
                  "time to first token matters for chat applications.")
APIS = {"chat": "/chat/completions", "completions": "/completions", "responses": "/responses"}


class OptionError(Exception):
    """A bad option value; the message is one line naming the option."""


# -- value parsers: one per kind of option, shared by argparse and the model ------------------
def _number(cast: type, check, requirement: str, optional: bool = False):
    """Parse `cast` from text (or take it as is), then `check` it, else say `requirement`."""
    def parse(value: Any):
        if optional and value is None:
            return None
        if isinstance(value, str) or (cast is int and isinstance(value, float)):
            try:
                number = cast(value.strip() if isinstance(value, str) else str(value))
            except ValueError:
                what = "a whole number" if cast is int else "a number"
                raise ValueError(f"{value!r} is not {what}") from None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number = cast(value)
        else:
            raise ValueError(f"{value!r} is not a number")
        if not check(number):
            raise ValueError(f"must be {requirement}, got {value}")
        return number
    return parse


def _header(value: Any) -> str:
    text = str(value)
    name, sep, _value = text.partition(":")
    if not sep or not name.strip() or any(c in text for c in "\r\n"):
        raise ValueError(f"{text!r} is not 'Name: value'")
    return text


def _headers(value: Any) -> list[str]:
    """--header is repeatable; the start form gives one string ('' for none)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [_header(item) for item in items if str(item).strip()]


def _kind(parse, python_type: Any) -> Any:
    return Annotated[python_type, BeforeValidator(parse)]


NonNegativeInt = _kind(_number(int, lambda v: v >= 0, "0 or more"), int)
Integer = _kind(_number(int, lambda v: True, "a whole number"), int)
PositiveFloat = _kind(_number(float, lambda v: v > 0, "more than 0"), float)
NonNegativeFloat = _kind(_number(float, lambda v: v >= 0, "0 or more"), float)
Float = _kind(_number(float, lambda v: True, "a number"), float)
OptionalPositiveFloat = _kind(_number(float, lambda v: v > 0, "more than 0", optional=True), float | None)
Temperature = _kind(_number(float, lambda v: 0 <= v <= 2, "between 0 and 2", optional=True), float | None)
Headers = _kind(_headers, list[str])


def _opt(default: Any, help: str, metavar: str | None = None, **ui: bool) -> Any:
    """A field that is also an option; `ui` holds Locust's web-form flags (include_in_web_ui, is_secret)."""
    return Field(default, description=help, json_schema_extra={"metavar": metavar, **ui})


HIDDEN = {"include_in_web_ui": False, "hidden": True}


class RunOptions(BaseModel):
    """Every tokenstorm option, its type, range, default and help text."""

    model_config = ConfigDict(extra="ignore")

    scenario: str = _opt("", "Scenario file (YAML/JSON): path, headers, body template, data, format, upstreams, "
                             "SLOs; -u and --total-requests on the command line override it", "FILE")
    total_requests: NonNegativeInt = _opt(0, "Send exactly N requests in total, then end the run (in-flight "
                                             "requests finish). 0 = no limit.", "N")
    results_dir: str = _opt("", "Folder for per-request records and run metadata (default: results/<timestamp>)",
                            "DIR")
    model: str = _opt("", "Model name (default: the first of GET /v1/models)")
    api: Literal["chat", "completions", "responses"] = _opt(
        "chat", "chat = /v1/chat/completions, completions = legacy /v1/completions, responses = OpenAI's "
                "Responses API /v1/responses")
    endpoint_path: str = _opt("", "Request path, overriding the one --api implies (relative to --host)", "PATH")
    max_tokens: NonNegativeInt = _opt(256, "max_tokens of every request (0 = do not send it)", "N")
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = _opt(
        "max_tokens", "The body field that carries --max-tokens (OpenAI's reasoning models take only "
                      "max_completion_tokens)")
    ignore_eos: bool = _opt(False, "Send ignore_eos: true (vLLM and the mock then emit exactly max-tokens tokens)")
    temperature: Temperature = _opt(None, "Sampling temperature")
    prompt: str = _opt("", "The user message of every request (default: a short fixed request for a paragraph)")
    prompt_file: str = _opt("", "Read the user message from FILE", "FILE")
    tokenizer: str = _opt("", "A local Hugging Face tokenizer.json (the model's) for synthetic prompt lengths and "
                              "the output token count when the server sends no usage (default: tiktoken "
                              "cl100k_base, which may not be the model's); never downloaded", "PATH")
    no_include_usage: bool = _opt(False, "Do not ask for stream_options.include_usage (for servers that reject it)")
    api_key_env: str = _opt("OPENAI_API_KEY", "Environment variable holding the API key (sent as a Bearer token)",
                            "VAR")
    # default None, not []: Locust's start form turns an empty list field into int("") (a 500)
    header: Headers = _opt(None, "Extra request header (repeatable)", "'NAME: VALUE'", is_secret=True)
    tls_ca: str = _opt("", "Verify https targets against this CA bundle (PEM) instead of the system's", "FILE")
    tls_insecure: bool = _opt(False, "Do not verify https certificates (self-signed test gateways only)")
    slo_ttft_ms: OptionalPositiveFloat = _opt(None, "Goodput SLO: TTFT at most this", "MS")
    slo_tpot_ms: OptionalPositiveFloat = _opt(None, "Goodput SLO: TPOT at most this", "MS")
    slo_e2e_ms: OptionalPositiveFloat = _opt(None, "Goodput SLO: E2E at most this", "MS")
    arrival_rate: NonNegativeFloat = _opt(0.0, "Open loop: send R requests/s in total (across all workers), "
                                               "whatever the server does; users (-u) become the cap on streams "
                                               "in flight. 0 = closed loop (users = concurrency)", "R")
    arrival: Literal[KINDS] = _opt("poisson", "Arrival process of --arrival-rate: constant gaps, poisson, or gamma "
                                              "(see --burstiness)")
    burstiness: PositiveFloat = _opt(1.0, "Coefficient of variation of gamma gaps (1 = poisson, >1 burstier)", "CV")
    arrival_duration: NonNegativeFloat = _opt(0.0, "Length of the arrival schedule in seconds; the run ends when "
                                                   "it is done (0 = no end)", "S")
    arrival_seed: Integer = _opt(0, "Seed of the arrival schedule", "N")
    # set by the master for its workers (one shared schedule), not by users
    arrival_start: Float = _opt(0.0, "", **HIDDEN)
    arrival_processes: NonNegativeInt = _opt(0, "", **HIDDEN)
    server_metrics: str = _opt("", f"The target's Prometheus metrics URL (e.g. http://127.0.0.1:8000/metrics): "
                                   f"scraped every {SCRAPE_INTERVAL_S:g} s into DIR/server-metrics.csv; the report "
                                   "plots it and reconciles the server's TTFT/E2E/TPOT with the client's",
                                   "URL")
    connect_timeout: PositiveFloat = _opt(10.0, "Seconds to open a connection", "S")
    first_token_timeout: PositiveFloat = _opt(120.0, "Seconds from sending a request to its first output token", "S")
    stall_timeout: PositiveFloat = _opt(30.0, "Longest silence between output chunks, in seconds", "S")
    request_timeout: PositiveFloat = _opt(600.0, "Seconds from sending a request to the end of its stream", "S")
    progress: bool = _opt(False, "Headless: one live progress line (requests, ETA, req/s, tokens/s, TTFT, TPOT, "
                                 "errors) instead of Locust's stats tables (tokenstorm run's default)",
                          include_in_web_ui=False)
    full_report: bool = _opt(False, "At the end, also write report.md, report.html and plots/ into the results "
                                    "folder (tokenstorm run's default)", include_in_web_ui=False)
    master_lost_after: PositiveFloat = _opt(60.0, "Given to a worker: it quits after S seconds without a heartbeat "
                                                  "from its master (Locust's own limit: 60)", "S",
                                            include_in_web_ui=False)

    @classmethod
    def read(cls, options: argparse.Namespace) -> RunOptions:
        """Check tokenstorm's values in Locust's parsed options, wherever they came from, and give
        them their types back in `options` (the start form leaves strings, and '' for "not given")."""
        raw = {}
        for name, field in cls.model_fields.items():
            value = getattr(options, name, field.default)
            raw[name] = field.default if isinstance(value, str) and not value.strip() and name != "header" else value
        try:
            parsed = cls.model_validate(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            name = str(error["loc"][0])
            raise OptionError(f"{flag(name)}: {_message(error)}") from None
        for name in cls.model_fields:
            setattr(options, name, getattr(parsed, name))
        return parsed


SECRET_OPTIONS = tuple(name for name, field in RunOptions.model_fields.items()
                       if (field.json_schema_extra or {}).get("is_secret"))
# What the web UI's start form shows for a secret option set on the command line; sent back
# unchanged, it stands for that value (which never reaches the page).
SECRET_MASK = "(hidden: the value given at start)"


def keep_secrets(options: argparse.Namespace, given: dict[str, Any]) -> None:
    """Put back the `given` values of secret options the start form returned masked."""
    for name, value in given.items():
        current = getattr(options, name, None)
        if current == SECRET_MASK or (isinstance(current, list) and current == [SECRET_MASK]):
            setattr(options, name, value)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _message(error: dict) -> str:
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    if error["type"] == "literal_error":
        return f"{error['input']!r} is not one of {error['ctx']['expected']}"
    return error["msg"]


def _argparse_type(field) -> Any:
    """The field's own parser, raising what argparse reports as `argument --x: <message>`."""
    for meta in field.metadata:
        if isinstance(meta, BeforeValidator):
            def parse(text: str, _parse=meta.func):
                try:
                    return _parse(text)
                except ValueError as exc:
                    raise argparse.ArgumentTypeError(str(exc)) from None
            return parse
    return None


def help_text(field) -> str:
    """The field's help with its default, unless the help already says it (or it is off/empty)."""
    text, default = field.description or "", field.default
    if default in (None, "", False, []) or "default" in text.lower():
        return text
    return f"{text} (default: {default:g})" if isinstance(default, float) else f"{text} (default: {default})"


GROUP_DESCRIPTION = ("Streaming LLM load test options; each is also LOCUST_<NAME> in the environment "
                     "(e.g. LOCUST_MAX_TOKENS=64) or `name = value` in a .conf file")


def add_arguments(parser) -> None:
    """Register every RunOptions field on Locust's parser, each also settable as LOCUST_<NAME>."""
    group = parser.add_argument_group("tokenstorm", GROUP_DESCRIPTION)
    for name, field in RunOptions.model_fields.items():
        extra = dict(field.json_schema_extra or {})
        kwargs: dict[str, Any] = {"default": field.default, "env_var": "LOCUST_" + name.upper(),
                                  "help": argparse.SUPPRESS if extra.pop("hidden", False) else help_text(field)}
        if extra.get("metavar"):
            kwargs["metavar"] = extra["metavar"]
        extra.pop("metavar", None)
        annotation = field.annotation
        if annotation is bool:
            kwargs["action"] = "store_true"
        elif get_origin(annotation) is Literal:
            kwargs["choices"] = get_args(annotation)
        elif name == "header":
            kwargs["action"] = "append"
            kwargs["type"] = _header_type
        else:
            kwargs["type"] = _argparse_type(field)
        action = group.add_argument(flag(name), **kwargs)
        # what LocustArgumentParser.add_argument records for its web UI form (a group does not)
        for key, default in (("include_in_web_ui", True), ("is_secret", False), ("is_required", False),
                             ("is_multiple", False)):
            setattr(action, key, extra.get(key, default))


def describe(prog: str = "tokenstorm options") -> str:
    """tokenstorm's options alone, as `--help` lists them (Locust prints its help before it loads a
    locustfile, so `locust -f ... --help` never shows them): `tokenstorm options`,
    `python -m tokenstorm.loadgen.options`."""
    import configargparse  # what Locust's parser is built on

    usage = f"{prog}   (these go after `locust -f LOCUSTFILE` or `tokenstorm run`)"
    parser = configargparse.ArgumentParser(prog=prog, add_help=False, add_env_var_help=False, usage=usage)
    add_arguments(parser)
    return parser.format_help()


def _header_type(text: str) -> str:
    try:
        return _header(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- settings: the options resolved into what a run sends -----------------------------------
class Settings(BaseModel):
    """What one process's part of a run sends, where, and how it is timed and judged."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    target: Target
    path: str
    api: str
    model: str
    max_tokens: int
    ignore_eos: bool
    temperature: float | None
    prompt: str
    include_usage: bool
    api_key_env: str
    api_key: str | None = Field(repr=False)  # never logged, never written
    extra_headers: list[tuple[str, str]] = Field(repr=False)
    total_requests: int
    results_dir: Path
    timeouts: Timeouts
    slos: dict[str, float] = {}
    scenario: Scenario | None = None
    tls_ca: str = ""
    max_tokens_field: str = "max_tokens"
    tls_insecure: bool = False
    arrival_stages: list[tuple[float, float]] = []  # [(duration_s, rate)]; [] = closed loop
    arrival: str = "poisson"
    burstiness: float = 1.0
    arrival_seed: int = 0
    server_metrics: str = Field("", repr=False)  # the /metrics URL ("" = off)
    tokenizer: str = ""  # the --tokenizer path ("" = cl100k_base)
    tokenizer_name: str = tokenizer_module.DEFAULT_ENCODING

    @classmethod
    def build(cls, options: argparse.Namespace, host: str | None, results_dir: Path,
              check_dir: bool = True) -> Settings:
        opts = RunOptions.read(options)
        try:  # before the scenario: its synthetic prompts are cut with this tokenizer
            active = tokenizer_module.use(opts.tokenizer or None)
        except tokenizer_module.TokenizerError as exc:
            raise OptionError(str(exc)) from None
        scenario = _scenario(opts.scenario)
        target = _target(host, scenario)
        if check_dir:
            _check_results_dir(results_dir)
        if opts.tls_ca and not Path(opts.tls_ca).is_file():
            raise OptionError(f"--tls-ca {opts.tls_ca}: no such file")
        if opts.server_metrics:
            try:
                metrics_target(opts.server_metrics)
            except ValueError as exc:
                raise OptionError(f"--server-metrics: {exc}") from None
        if opts.max_tokens == 0 and opts.ignore_eos:
            raise OptionError("--ignore-eos needs --max-tokens > 0")
        timeouts = Timeouts(opts.connect_timeout, opts.first_token_timeout, opts.stall_timeout, opts.request_timeout)
        slos = {"ttft_ms": opts.slo_ttft_ms, "tpot_ms": opts.slo_tpot_ms, "e2e_ms": opts.slo_e2e_ms}
        path, api, total = _request_path(opts, target), opts.api, opts.total_requests
        if scenario is not None:
            spec = scenario.spec
            path = spec.path if spec.path.startswith("/") else "/" + spec.path  # after each upstream's base path
            given = {k: v for k, v in spec.timeouts.model_dump().items() if v is not None}
            timeouts = Timeouts(**(timeouts.__dict__ | given))
            slos = {k: slos[k] or v for k, v in spec.slos.model_dump().items()}
            total = total or spec.total_requests or 0
            api = options.api = {"openai-completions": "completions", "openai-responses": "responses"}.get(
                spec.format, api)
        return cls(
            target=target, path=path, api=api, model=opts.model, max_tokens=opts.max_tokens,
            ignore_eos=opts.ignore_eos, temperature=opts.temperature, prompt=_prompt(opts),
            include_usage=not opts.no_include_usage, api_key_env=opts.api_key_env,
            api_key=os.environ.get(opts.api_key_env) or None,
            extra_headers=[(name.strip(), value.strip()) for name, _, value in
                           (raw.partition(":") for raw in opts.header)],
            total_requests=total, results_dir=results_dir, timeouts=timeouts,
            slos={k: v for k, v in slos.items() if v}, scenario=scenario, arrival_stages=_stages(opts, scenario),
            arrival=opts.arrival, burstiness=opts.burstiness, arrival_seed=opts.arrival_seed,
            tls_ca=opts.tls_ca, tls_insecure=opts.tls_insecure, max_tokens_field=opts.max_tokens_field,
            server_metrics=opts.server_metrics, tokenizer=opts.tokenizer, tokenizer_name=active.name)

    def ssl_context(self):
        """The TLS settings of https connections (gevent's context: its sockets cooperate)."""
        from gevent import ssl as gssl

        context = gssl.create_default_context(cafile=self.tls_ca or None)
        if self.tls_insecure:
            context.check_hostname = False
            context.verify_mode = gssl.CERT_NONE
        return context

    def public(self) -> dict:
        """The settings as written to run metadata: everything but secrets."""
        return {
            "host": self.target.origin + self.target.base_path, "path": self.path, "api": self.api,
            "model": self.model, "max_tokens": self.max_tokens, "ignore_eos": self.ignore_eos,
            "temperature": self.temperature, "prompt_chars": len(self.prompt), "include_usage": self.include_usage,
            "api_key_env": self.api_key_env, "api_key_set": self.api_key is not None,
            "extra_headers": [name for name, _ in self.extra_headers],  # values may be secrets
            "total_requests": self.total_requests, "results_dir": str(self.results_dir),
            "timeouts": self.timeouts.__dict__, "slos": self.slos, "tls_ca": self.tls_ca,
            "tls_insecure": self.tls_insecure, "tokenizer": self.tokenizer_name,
            "tokenizer_default": not self.tokenizer,
            "server_metrics": public_url(self.server_metrics) if self.server_metrics else None,
            "arrivals": {"stages": self.arrival_stages, "process": self.arrival, "burstiness": self.burstiness,
                         "seed": self.arrival_seed} if self.arrival_stages else None,
            "trace": None if self.scenario is None or self.scenario.trace is None else {
                "file": str(self.scenario.trace.path), "requests": len(self.scenario.trace.entries),
                "speedup": self.scenario.trace.speedup},
            "scenario": None if self.scenario is None else {
                "file": str(self.scenario.source), "name": self.scenario.name, "format": self.scenario.spec.format,
                "upstreams": [name for name, _, _ in self.scenario.upstreams],
                "headers": [name for name, _ in self.scenario.headers]},  # values may be secrets
        }


def _scenario(path: str) -> Scenario | None:
    if not path:
        return None
    try:
        return load_scenario(find(path))  # configs/scenarios/... works installed too (core/assets.py)
    except ScenarioError as exc:
        raise OptionError(str(exc)) from None


def _target(host: str | None, scenario: Scenario | None) -> Target:
    if scenario is not None and scenario.upstreams and not host:
        host = scenario.upstreams[0][1].origin + scenario.upstreams[0][1].base_path
    if not host:
        raise OptionError("no target: give --host URL (e.g. --host http://127.0.0.1:8082)")
    try:
        return Target.parse(host)
    except ValueError as exc:
        raise OptionError(f"--host: {exc}") from None


def _check_results_dir(results_dir: Path) -> None:
    try:
        check_writable(results_dir)
    except OSError as exc:
        raise OptionError(f"--results-dir {results_dir}: cannot write there ({exc.strerror or exc})") from None


def _prompt(opts: RunOptions) -> str:
    if not opts.prompt_file:
        return opts.prompt or DEFAULT_PROMPT
    try:
        prompt = Path(opts.prompt_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError(f"--prompt-file {opts.prompt_file}: cannot read it ({exc})") from None
    if not prompt.strip():
        raise OptionError(f"--prompt-file {opts.prompt_file}: the file is empty")
    return prompt


def _request_path(opts: RunOptions, target: Target) -> str:
    base = target.base_path
    path = opts.endpoint_path or ((base if base.endswith("/v1") else base + "/v1") + APIS[opts.api])
    return path if path.startswith("/") else base + "/" + path


def _stages(opts: RunOptions, scenario: Scenario | None) -> list[tuple[float, float]]:
    """The open-loop schedule: a trace's span (its own times), the scenario's rate stages, else
    --arrival-rate; [] = closed loop."""
    trace = scenario.trace if scenario is not None else None
    if trace is not None:
        if opts.arrival_rate > 0:
            raise OptionError(f"--arrival-rate: scenario {scenario.source} replays a trace, which is the schedule")
        return [(trace.duration_s + 1e-3, len(trace.entries) / max(trace.duration_s, 1e-3))]
    if scenario is not None and scenario.spec.stages and any(st.rate is not None for st in scenario.spec.stages):
        return [(st.duration_s, st.rate or 0.0) for st in scenario.spec.stages]
    if opts.arrival_rate > 0:
        return [(opts.arrival_duration or float("inf"), opts.arrival_rate)]
    return []


if __name__ == "__main__":
    print(describe("python -m tokenstorm.loadgen.options"), end="")
