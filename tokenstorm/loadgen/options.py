"""tokenstorm's options on Locust's own parser (CLI, .conf files and LOCUST_* variables alike).

Types and ranges are checked by argparse (Locust prints `locust: error: argument ...` and
exits 2); the rest (host URL, results folder, prompt file, key, model) by Settings.build(),
whose OptionError becomes one line on stderr and exit code 2 before any load is sent.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..client.arrivals import KINDS
from ..client.httpclient import Target
from ..client.scenario import Scenario, ScenarioError, load_scenario
from ..client.stream import Timeouts
from ..client.writer import check_writable

DEFAULT_PROMPT = ("You are helping with a load test. Write a short, friendly paragraph about why measuring "
                  "time to first token matters for chat applications.")
APIS = {"chat": "/chat/completions", "completions": "/completions"}


class OptionError(Exception):
    """A bad option value; the message is one line naming the option."""


def _number(cast: type, check, requirement: str):
    """An argparse type: `cast` the text, then `check` it, else say `requirement`."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            what = "a whole number" if cast is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value
    return parse


_non_negative_int = _number(int, lambda v: v >= 0, "0 or more")
_positive_float = _number(float, lambda v: v > 0, "more than 0")
_non_negative_float = _number(float, lambda v: v >= 0, "0 or more")
_temperature = _number(float, lambda v: 0 <= v <= 2, "between 0 and 2")


def _header(text: str) -> str:
    name, sep, _value = text.partition(":")
    if not sep or not name.strip() or any(c in text for c in "\r\n"):
        raise argparse.ArgumentTypeError(f"{text!r} is not 'Name: value'")
    return text


TYPES: dict[str, object] = {}  # dest -> argparse type of every tokenstorm option, for normalize()
DEFAULTS: dict[str, object] = {}


class _Group:
    """An argument group whose options can also be set as LOCUST_<NAME> environment variables."""

    def __init__(self, group):
        self._group = group

    def add_argument(self, flag: str, **kwargs):
        kwargs.setdefault("env_var", "LOCUST_" + flag.lstrip("-").replace("-", "_").upper())
        # what LocustArgumentParser.add_argument records for its web UI form (a group does not)
        ui = {key: kwargs.pop(key, default) for key, default in
              (("include_in_web_ui", True), ("is_secret", False), ("is_required", False), ("is_multiple", False))}
        action = self._group.add_argument(flag, **kwargs)
        for key, value in ui.items():
            setattr(action, key, value)
        TYPES[action.dest] = kwargs.get("type")
        DEFAULTS[action.dest] = kwargs.get("default")
        return action


def normalize(options) -> None:
    """Give values typed into Locust's start form their types again (it keeps options whose default
    is None as strings, and an empty field as ''), checking them as the command line would."""
    for dest, kind in TYPES.items():
        value = getattr(options, dest, None)
        if dest == "header":
            if isinstance(value, str):
                value = [value] if value.strip() else []
            for item in value or []:
                try:
                    _header(item)
                except argparse.ArgumentTypeError as exc:
                    raise OptionError(f"--header: {exc}") from None
            setattr(options, dest, value or [])
            continue
        if not isinstance(value, str) or kind is None:
            continue
        if value.strip() == "":
            setattr(options, dest, DEFAULTS.get(dest))
            continue
        try:
            setattr(options, dest, kind(value))
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise OptionError(f"--{dest.replace('_', '-')}: {exc}") from None


def add_arguments(parser) -> None:
    group = _Group(parser.add_argument_group("tokenstorm", "Streaming LLM load test options"))
    group.add_argument("--scenario", default="", metavar="FILE",
                       help="Scenario file (YAML/JSON): path, headers, body template, data, format, upstreams, "
                            "SLOs; -u and --total-requests on the command line override it")
    group.add_argument("--total-requests", type=_non_negative_int, default=0, metavar="N",
                       help="Send exactly N requests in total, then end the run (in-flight requests finish). "
                            "0 = no limit.")
    group.add_argument("--results-dir", default="", metavar="DIR",
                       help="Folder for per-request records and run metadata (default: results/<timestamp>)")
    group.add_argument("--model", default="", help="Model name (default: the first of GET /v1/models)")
    group.add_argument("--api", choices=sorted(APIS), default="chat",
                       help="chat = /v1/chat/completions, completions = legacy /v1/completions")
    group.add_argument("--endpoint-path", default="", metavar="PATH",
                       help="Request path, overriding the one --api implies (relative to --host)")
    group.add_argument("--max-tokens", type=_non_negative_int, default=256, metavar="N",
                       help="max_tokens of every request (0 = do not send it)")
    group.add_argument("--max-tokens-field", choices=("max_tokens", "max_completion_tokens"), default="max_tokens",
                       help="The body field that carries --max-tokens (OpenAI's reasoning models take only "
                            "max_completion_tokens)")
    group.add_argument("--ignore-eos", action="store_true", default=False,
                       help="Send ignore_eos: true (vLLM and the mock then emit exactly max-tokens tokens)")
    group.add_argument("--temperature", type=_temperature, default=None, help="Sampling temperature")
    group.add_argument("--prompt", default="", help="The user message of every request")
    group.add_argument("--prompt-file", default="", metavar="FILE", help="Read the user message from FILE")
    group.add_argument("--no-include-usage", action="store_true", default=False,
                       help="Do not ask for stream_options.include_usage (for servers that reject it)")
    group.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                       help="Environment variable holding the API key (sent as a Bearer token)")
    # default None, not []: Locust's start form turns an empty list field into int("") (a 500)
    group.add_argument("--header", action="append", type=_header, default=None, metavar="'NAME: VALUE'",
                       help="Extra request header (repeatable)", is_secret=True)
    group.add_argument("--tls-ca", default="", metavar="FILE",
                       help="Verify https targets against this CA bundle (PEM) instead of the system's")
    group.add_argument("--tls-insecure", action="store_true", default=False,
                       help="Do not verify https certificates (self-signed test gateways only)")
    group.add_argument("--slo-ttft-ms", type=_positive_float, default=None, metavar="MS",
                       help="Goodput SLO: TTFT at most this")
    group.add_argument("--slo-tpot-ms", type=_positive_float, default=None, metavar="MS",
                       help="Goodput SLO: TPOT at most this")
    group.add_argument("--slo-e2e-ms", type=_positive_float, default=None, metavar="MS",
                       help="Goodput SLO: E2E at most this")
    group.add_argument("--arrival-rate", type=_non_negative_float, default=0.0, metavar="R",
                       help="Open loop: send R requests/s in total (across all workers), whatever the server does; "
                            "users (-u) become the cap on streams in flight. 0 = closed loop (users = concurrency)")
    group.add_argument("--arrival", choices=KINDS, default="poisson",
                       help="Arrival process of --arrival-rate: constant gaps, poisson, or gamma (see --burstiness)")
    group.add_argument("--burstiness", type=_positive_float, default=1.0, metavar="CV",
                       help="Coefficient of variation of gamma gaps (1 = poisson, >1 burstier)")
    group.add_argument("--arrival-duration", type=_non_negative_float, default=0.0, metavar="S",
                       help="Length of the arrival schedule in seconds; the run ends when it is done (0 = no end)")
    group.add_argument("--arrival-seed", type=int, default=0, metavar="N", help="Seed of the arrival schedule")
    # set by the master for its workers (one shared schedule), not by users
    group.add_argument("--arrival-start", type=float, default=0.0, help=argparse.SUPPRESS, include_in_web_ui=False)
    group.add_argument("--arrival-processes", type=int, default=0, help=argparse.SUPPRESS, include_in_web_ui=False)
    group.add_argument("--connect-timeout", type=_positive_float, default=10.0, metavar="S",
                       help="Seconds to open a connection")
    group.add_argument("--first-token-timeout", type=_positive_float, default=120.0, metavar="S",
                       help="Seconds from sending a request to its first output token")
    group.add_argument("--stall-timeout", type=_positive_float, default=30.0, metavar="S",
                       help="Longest silence between output chunks, in seconds")
    group.add_argument("--request-timeout", type=_positive_float, default=600.0, metavar="S",
                       help="Seconds from sending a request to the end of its stream")
    group.add_argument("--master-lost-after", type=_positive_float, default=60.0, metavar="S",
                       help="Given to a worker: it quits after S seconds without a heartbeat from "
                       "its master (Locust's own limit: 60)", include_in_web_ui=False)


@dataclass
class Settings:
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
    api_key: str | None  # never logged, never written
    extra_headers: list[tuple[str, str]]
    total_requests: int
    results_dir: Path
    timeouts: Timeouts
    slos: dict[str, float] = field(default_factory=dict)
    scenario: Scenario | None = None
    tls_ca: str = ""
    max_tokens_field: str = "max_tokens"
    tls_insecure: bool = False
    arrival_stages: list[tuple[float, float]] = field(default_factory=list)  # [(duration_s, rate)]; [] = closed loop
    arrival: str = "poisson"
    burstiness: float = 1.0
    arrival_seed: int = 0

    @classmethod
    def build(cls, options, host: str | None, results_dir: Path, check_dir: bool = True) -> Settings:
        normalize(options)
        scenario = None
        if options.scenario:
            try:
                scenario = load_scenario(options.scenario)
            except ScenarioError as exc:
                raise OptionError(str(exc)) from None
        if scenario is not None and scenario.upstreams and not host:
            host = scenario.upstreams[0][1].origin + scenario.upstreams[0][1].base_path
        if not host:
            raise OptionError("no target: give --host URL (e.g. --host http://127.0.0.1:8082)")
        try:
            target = Target.parse(host)
        except ValueError as exc:
            raise OptionError(f"--host: {exc}") from None
        prompt = options.prompt or DEFAULT_PROMPT
        if options.prompt_file:
            try:
                prompt = Path(options.prompt_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise OptionError(f"--prompt-file {options.prompt_file}: cannot read it ({exc})") from None
            if not prompt.strip():
                raise OptionError(f"--prompt-file {options.prompt_file}: the file is empty")
        if check_dir:
            try:
                check_writable(results_dir)
            except OSError as exc:
                raise OptionError(f"--results-dir {results_dir}: cannot write there ({exc.strerror or exc})") from None
        if options.tls_ca and not Path(options.tls_ca).is_file():
            raise OptionError(f"--tls-ca {options.tls_ca}: no such file")
        if options.max_tokens == 0 and options.ignore_eos:
            raise OptionError("--ignore-eos needs --max-tokens > 0")
        base = target.base_path
        path = options.endpoint_path or ((base if base.endswith("/v1") else base + "/v1") + APIS[options.api])
        if not path.startswith("/"):
            path = base + "/" + path
        headers = []
        for raw in options.header or []:
            name, _, value = raw.partition(":")
            headers.append((name.strip(), value.strip()))
        slos = {"ttft_ms": options.slo_ttft_ms, "tpot_ms": options.slo_tpot_ms, "e2e_ms": options.slo_e2e_ms}
        timeouts = Timeouts(options.connect_timeout, options.first_token_timeout, options.stall_timeout,
                            options.request_timeout)
        total = options.total_requests
        if scenario is not None:
            spec = scenario.spec
            path = spec.path if spec.path.startswith("/") else "/" + spec.path  # after each upstream's base path
            given = {k: v for k, v in spec.timeouts.model_dump().items() if v is not None}
            timeouts = Timeouts(**(timeouts.__dict__ | given))
            slos = {k: slos[k] or v for k, v in spec.slos.model_dump().items()}
            total = total or spec.total_requests or 0
            options.api = {"openai-completions": "completions"}.get(spec.format, options.api)
        stages: list[tuple[float, float]] = []
        if scenario is not None and scenario.spec.stages and any(st.rate is not None for st in scenario.spec.stages):
            stages = [(st.duration_s, st.rate or 0.0) for st in scenario.spec.stages]
        elif options.arrival_rate > 0:
            stages = [(options.arrival_duration or float("inf"), options.arrival_rate)]
        return cls(
            target=target, path=path, api=options.api, model=options.model, max_tokens=options.max_tokens,
            ignore_eos=options.ignore_eos, temperature=options.temperature, prompt=prompt,
            include_usage=not options.no_include_usage, api_key_env=options.api_key_env,
            api_key=os.environ.get(options.api_key_env) or None, extra_headers=headers,
            total_requests=total, results_dir=results_dir, timeouts=timeouts,
            slos={k: v for k, v in slos.items() if v}, scenario=scenario, arrival_stages=stages,
            arrival=options.arrival, burstiness=options.burstiness, arrival_seed=options.arrival_seed,
            tls_ca=options.tls_ca, tls_insecure=options.tls_insecure, max_tokens_field=options.max_tokens_field)

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
            "tls_insecure": self.tls_insecure,
            "arrivals": {"stages": self.arrival_stages, "process": self.arrival, "burstiness": self.burstiness,
                         "seed": self.arrival_seed} if self.arrival_stages else None,
            "scenario": None if self.scenario is None else {
                "file": str(self.scenario.source), "name": self.scenario.name, "format": self.scenario.spec.format,
                "upstreams": [name for name, _, _ in self.scenario.upstreams],
                "headers": [name for name, _ in self.scenario.headers]},  # values may be secrets
        }
