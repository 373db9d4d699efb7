"""A Session: one process's part of a run (settings, request, records, quota, self-check, Locust events).

A process is `local` (standalone Locust), `master` or `worker`. Standalone, records go to
DIR/requests-local.csv. Distributed, workers ship their records to the master, which writes
DIR/requests-w<index>.csv per worker (see distributed.py) and holds the global quota.
`install(events)` hooks tokenstorm into Locust; locustfiles only define User classes.
"""

from __future__ import annotations

import gc
import itertools
import json
import random
import socket
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import gevent
from locust import events as locust_events
from locust.runners import MasterRunner, WorkerRunner

from ..client.arrivals import schedule, share
from ..client.httpclient import Connection, ConnectionLost, HTTPError, Target
from ..client.monitor import Monitor
from ..client.writer import RecordWriter
from ..core import tokenizer
from ..core.clock import realtime_to_monotonic, sleep_until
from ..core.formats import FORMATS
from ..core.records import CLIENT_CANCELLED, CONVERSATION_FIELDS, Record
from . import server_metrics, webui
from .distributed import RECORDS_WRITTEN, SCHEDULE_DONE, WORKER_SUMMARY, MasterCollector, RecordShipper
from .live import LiveStats
from .locust_internals import set_master_heartbeat_timeout, silence_final_stats_tables
from .options import SECRET_OPTIONS, OptionError, Settings, add_arguments, keep_secrets
from .progress import ProgressLine
from .quota import TICKETS_GRANT, LocalQuota, RemoteQuota

LOG_PREFIX = "tokenstorm:"
AUTH_HEADERS = {"authorization", "x-api-key", "api-key"}  # headers that carry a key (OpenAI, Anthropic, Azure)


def has_key_header(headers: list[tuple[str, str]]) -> bool:
    return any(name.lower() in AUTH_HEADERS for name, _ in headers)


@dataclass(frozen=True)
class Request:
    upstream: str  # its name in records and reports
    target: Target
    path: str
    body: bytes
    prompt_tokens: int | None
    model: str
    label: str  # the name in Locust's table


class OpenLoop:
    """This process's share of the global arrival schedule (see tokenstorm.client.arrivals)."""

    def __init__(self, settings: Settings, start_unix: float, index: int, count: int):
        trace = settings.scenario.trace if settings.scenario is not None else None
        offsets = trace.offsets() if trace is not None else schedule(settings.arrival, settings.arrival_stages,
                                                                       settings.burstiness, settings.arrival_seed)
        self._arrivals = share(offsets, index, count)
        self.start = start_unix
        self.exhausted = False
        self.pending = 0  # arrivals claimed and not yet finished

    def claim(self) -> tuple[int, float] | None:
        """(global arrival number, intended send time in unix s) of this process's next arrival; None
        when the schedule ended."""
        try:
            k, offset = next(self._arrivals)
        except StopIteration:
            self.exhausted = True
            return None
        self.pending += 1
        return k, self.start + offset

    @staticmethod
    def wait_until(unix_time: float) -> None:
        sleep_until(realtime_to_monotonic(unix_time, time.monotonic()))


class StreamFailure(Exception):
    """The exception Locust is given for a failed request (its message groups the failures table)."""


def role_of(runner) -> str:
    if isinstance(runner, MasterRunner):
        return "master"
    if isinstance(runner, WorkerRunner):
        return "worker"
    return "local"


class Session:
    """This process's part of the run: what it sends, where its records go, its quota and self-check."""

    def __init__(self, environment, settings: Settings):
        self.environment = environment
        self.settings = settings
        self.role = role_of(environment.runner)
        runner = environment.runner
        self.worker_id = f"w{runner.worker_index}" if self.role == "worker" else self.role
        scenario = self.scenario = settings.scenario
        default_format = {"chat": "openai-chat", "responses": "openai-responses"}.get(settings.api,
                                                                                     "openai-completions")
        self.format_class = FORMATS[scenario.spec.format if scenario else default_format]
        self.headers = [("Content-Type", "application/json"), ("Accept", "text/event-stream"),
                        ("Accept-Encoding", "identity")]
        given = (scenario.headers if scenario is not None else []) + settings.extra_headers
        self.headers += given
        if settings.api_key and not has_key_header(given):
            # the key goes unless a header already says how to authenticate (a scenario's headers
            # that do not, e.g. only a trace id, must not silently drop it)
            anthropic = scenario is not None and scenario.spec.format == "anthropic"
            self.headers.append(("x-api-key", settings.api_key) if anthropic
                                else ("Authorization", f"Bearer {settings.api_key}"))
        if scenario is None:
            self.body = json.dumps(self.request_body()).encode()
            self.prompt_tokens = (tokenizer.count_chat_prompt([{"role": "user", "content": settings.prompt}])
                                  if settings.api in ("chat", "responses") else tokenizer.count_tokens(settings.prompt))
        self.scenario_name = scenario.name if scenario else "default"
        self.several_upstreams = bool(scenario and len(scenario.upstreams) > 1)
        if self.role == "worker":
            self.quota = RemoteQuota(settings.total_requests, lambda kind, data: runner.send_message(kind, data))
        else:
            self.quota = LocalQuota(settings.total_requests, self._quota_spent)
        self.monitor = Monitor()
        self.writer: RecordWriter | RecordShipper | None = None
        self.conversations: RecordWriter | None = None
        self.collector: MasterCollector | None = None
        self.started: float | None = None
        self.ended: float | None = None
        self._sequence = itertools.count()
        self.write_error: OSError | None = None
        self._users = itertools.count()
        self._ssl_context = settings.ssl_context()
        self.open_loop: OpenLoop | None = None
        self.live = LiveStats(settings.slos)  # the web UI's LLM tab (and the progress line)
        self.progress: ProgressLine | None = None
        self._schedule_done_sent = False
        self.scraper: server_metrics.Scraper | None = None  # --server-metrics (master/local)

    # -- the request ---------------------------------------------------------------------
    def request_body(self) -> dict:
        s = self.settings
        body: dict = {"model": s.model, "stream": True}
        if s.api == "responses":  # usage always comes with response.completed: no stream_options
            body["input"] = [{"role": "user", "content": s.prompt}]
            if s.max_tokens:
                body["max_output_tokens"] = s.max_tokens
        else:
            if s.api == "chat":
                body["messages"] = [{"role": "user", "content": s.prompt}]
            else:
                body["prompt"] = s.prompt
            if s.include_usage:
                body["stream_options"] = {"include_usage": True}
            if s.max_tokens:
                body[s.max_tokens_field if s.api == "chat" else "max_tokens"] = s.max_tokens
        if s.ignore_eos:
            body["ignore_eos"] = True
        if s.temperature is not None:
            body["temperature"] = s.temperature
        return body

    def connection(self, target=None) -> Connection:
        target = target or self.settings.target
        context = self._ssl_context if target.scheme == "https" else None
        return Connection(target, self.settings.timeouts.connect_s, context)

    def next_request(self, arrival: int | None = None) -> Request:
        """What the next request sends, and where (`arrival`: its number in a trace's schedule)."""
        settings, scenario = self.settings, self.scenario
        if scenario is None:
            target = settings.target
            return Request(target.origin, target, settings.path, self.body, self.prompt_tokens, settings.model,
                           settings.path)
        body, prompt_tokens = scenario.next_body(arrival)
        name, target = scenario.pick_upstream() if scenario.upstreams else (settings.target.origin, settings.target)
        label = f"{settings.path} [{name}]" if self.several_upstreams else settings.path
        return Request(name, target, target.base_path + settings.path, json.dumps(body).encode(), prompt_tokens,
                       str(body.get("model", "")), label)

    def next_user_id(self) -> int:
        return next(self._users)

    def cancel_after(self, request_id: str) -> int | None:
        """The scenario's `cancel`: whether the client closes this stream on purpose, after how many
        output chunks; decided by the scenario's seed and the request id, so a run repeats."""
        cancel = self.scenario.spec.cancel if self.scenario is not None else None
        if cancel is None or not cancel.share:
            return None
        draw = random.Random(f"{self.scenario.spec.seed}:{request_id}").random()
        return cancel.after_tokens if draw < cancel.share else None

    def new_record(self, user_id: int, request: Request) -> Record:
        return Record(request_id=f"{self.worker_id}-{next(self._sequence)}", worker_id=self.worker_id,
                      user_id=user_id, scenario=self.scenario_name, upstream=request.upstream, model=request.model)

    # -- the test ------------------------------------------------------------------------
    def start(self) -> None:
        folder = self.settings.results_dir
        if self.settings.arrival_stages and self.role != "master" and self.open_loop is None:
            options = self.environment.parsed_options
            count = options.arrival_processes or 1
            index = self.environment.runner.worker_index % count if self.role == "worker" else 0
            self.open_loop = OpenLoop(self.settings, options.arrival_start or time.time() + 1.0, index, count)
        if self.role == "master":
            if self.collector is None:
                self.collector = MasterCollector(self.environment, folder, self.settings.total_requests,
                                                 self._quota_spent, self.live, on_write_error=self.write_failed)
        elif self.writer is None:
            if self.role == "worker":
                self.writer = RecordShipper(self.environment.runner, self.worker_id, self.monitor.summary,
                                            lambda: self.monitor.in_flight)
            else:
                self.writer = RecordWriter(folder / f"requests-{self.worker_id}.csv", on_error=self.write_failed)
        if self.started is None:
            self.started = time.time()
        options = self.environment.parsed_options
        if getattr(options, "progress", False) and self.role != "worker" and self.progress is None:
            self.progress = ProgressLine(self.live, self.settings.total_requests, getattr(options, "run_time", None))
        if self.settings.server_metrics and self.role != "worker":
            if self.scraper is None:
                self.scraper = server_metrics.Scraper(self.settings.server_metrics, folder, self._ssl_context)
            self.scraper.start()
        self.monitor.start(on_sample=self._every_second)

    def _every_second(self, _sample) -> None:
        if isinstance(self.writer, RecordWriter):
            self.writer.flush()
        self.live.in_flight[self.worker_id] = self.monitor.in_flight
        self.live.sample()
        if self.progress is not None:
            self.progress.tick()

    def flush_records(self) -> None:
        """Everything finished so far on disk (for downloads during a run)."""
        if isinstance(self.writer, RecordWriter):
            self.writer.flush()
        if self.collector is not None:
            self.collector.flush()

    def stop(self) -> None:
        if self.collector is not None:
            self.collector.stop_watching()
        self.monitor.stop()
        self.live.in_flight[self.worker_id] = self.monitor.in_flight
        if self.scraper is not None:
            self.scraper.stop()
        self.ended = time.time()
        if self.progress is not None:
            self.progress.finish()
            silence_final_stats_tables()  # tokenstorm's report follows
        if self.writer is not None:
            self.writer.flush()
        if self.role == "worker":
            self.environment.runner.send_message(WORKER_SUMMARY, {"worker": self.worker_id,
                                                                  "client": self.monitor.summary()})

    def finish(self, record: Record, name: str | None = None) -> None:
        """Keep the record and tell Locust: one request event, then TTFT/TPOT when it succeeded."""
        if record.status not in ("ok", "error"):  # the request never reached its end (an error of ours)
            record.status, record.error_type = "error", record.error_type or "client_error"
            record.error = record.error or "the request ended without an outcome (an error in tokenstorm)"
        if self.writer is not None:
            self.writer.write(record)
        if self.role == "local":
            self.live.add(record.upstream, record.scenario, record.status, record.error_type, record.ttft_ms,
                          record.tpot_ms, record.e2e_ms, record.output_tokens, time.time())
        self.monitor.done += 1
        if self.open_loop is not None and record.t_intended is not None:
            self.open_loop.pending -= 1
            self.check_schedule_done()
        if record.error_type == "cancelled":
            return
        fire = self.environment.events.request.fire
        name = name or self.settings.path
        failed = not record.ok and record.error_type != CLIENT_CANCELLED  # a client cancel is on purpose
        exception = StreamFailure(_failure_label(record)) if failed else None
        fire(request_type="POST", name=name, response_time=record.total_ms or record.e2e_ms or 0,
             response_length=record.output_tokens or 0, exception=exception, context={"request_id": record.request_id})
        if record.ok and record.ttft_ms is not None:
            fire(request_type="TTFT", name=name, response_time=record.ttft_ms, response_length=0,
                 exception=None, context={})
            if record.tpot_ms is not None:
                fire(request_type="TPOT", name=name, response_time=record.tpot_ms, response_length=0,
                     exception=None, context={})
        self.quota.complete()

    def write_conversation(self, row: dict) -> None:
        values = [row.get(f) for f in CONVERSATION_FIELDS]
        if isinstance(self.writer, RecordShipper):
            self.writer.write_conversation(values)
            return
        if self.conversations is None:
            self.conversations = RecordWriter(self.settings.results_dir / f"conversations-{self.worker_id}.csv",
                                              CONVERSATION_FIELDS, on_error=self.write_failed)
        self.conversations.write_row(values)
        self.conversations.flush()

    def check_schedule_done(self) -> None:
        """An open-loop run ends when the schedule is done and nothing sent is still streaming."""
        loop = self.open_loop
        if loop is None or not loop.exhausted or loop.pending > 0 or self._schedule_done_sent:
            return
        self._schedule_done_sent = True
        if self.role == "worker":
            if self.writer is not None:
                self.writer.flush()
            self.environment.runner.send_message(SCHEDULE_DONE, {"worker": self.worker_id})
        else:
            self._quota_spent()

    def write_failed(self, error: OSError) -> None:
        """A record file cannot be written (a full disk): the run stops now, with one line, and the
        process exits 2; what is on disk is whole (RecordWriter cuts back a partly written row)."""
        if self.write_error is not None:
            return
        self.write_error = error
        print(f"{LOG_PREFIX} {error}; stopping the run", file=sys.stderr, flush=True)
        self.environment.process_exit_code = 2
        self._quota_spent()

    def _quota_spent(self) -> None:
        runner = self.environment.runner
        if runner is not None:
            gevent.spawn_later(0, runner.quit)
        # With the web UI, Locust's process lives as long as the UI: --autostart --autoquit N ends it
        # N seconds after the run, as Locust does at the end of --run-time.
        options, web_ui = self.environment.parsed_options, self.environment.web_ui
        autoquit = getattr(options, "autoquit", -1) if getattr(options, "autostart", False) else -1
        if web_ui is not None and autoquit is not None and autoquit >= 0:
            gevent.spawn_later(autoquit, web_ui.stop)

    def _await_stopped_streams(self, limit_s: float = 5.0) -> None:
        """A stream cut by the end of the run writes its `cancelled` record when its greenlet gets
        the kill; wait (bounded) until none is in flight, so no record comes after the files close."""
        deadline = time.monotonic() + limit_s
        while self.monitor.in_flight > 0 and time.monotonic() < deadline:
            gevent.sleep(0.01)

    def close(self) -> None:
        """At the end of the process: last records out, metadata written (master/local)."""
        self._await_stopped_streams()
        if self.role == "worker":
            if self.writer is not None:
                try:
                    kept = self.writer.close(self.settings.results_dir)
                except OSError as exc:
                    print(f"{LOG_PREFIX} the master is gone and {exc}: these records are lost", file=sys.stderr,
                          flush=True)
                else:
                    if kept is not None:
                        print(f"{LOG_PREFIX} the master is gone; the records it did not confirm are in {kept}",
                              file=sys.stderr, flush=True)
            return
        if self.role == "master" and self.collector is not None:
            self.collector.close()
        if isinstance(self.writer, RecordWriter):
            self.writer.close()
        if self.conversations is not None:
            self.conversations.close()
        if self.scraper is not None:
            self.scraper.close()
        try:
            self.write_metadata()
        except OSError as exc:
            print(f"{LOG_PREFIX} cannot write the run's metadata in {self.settings.results_dir} "
                  f"({exc.strerror or exc})", file=sys.stderr, flush=True)

    def report(self) -> None:
        """The end-of-run report of the whole run (master or standalone), from the records on disk."""
        from .report import build_report_elsewhere, final_report

        settings = self.settings
        final_report(settings.results_dir, settings.slos, settings.public(), {self.worker_id: self.monitor.summary()},
                     self.collector.metadata() if self.collector is not None else None)
        if getattr(self.environment.parsed_options, "full_report", False):
            problem = build_report_elsewhere(settings.results_dir)
            folder = settings.results_dir
            print(f"{LOG_PREFIX} no report.html: {problem}" if problem else
                  f"report: {folder}/report.html   {folder}/report.md   plots: {folder}/plots/", flush=True)

    def write_metadata(self) -> None:
        folder = self.settings.results_dir
        options = self.environment.parsed_options
        meta = {"role": self.role, "worker_id": self.worker_id, "started": self.started, "ended": self.ended,
                "users": getattr(options, "num_users", None), "spawn_rate": getattr(options, "spawn_rate", None),
                "settings": self.settings.public(), "client": self.monitor.summary(), "versions": _versions()}
        if self.collector is not None:
            meta |= self.collector.metadata()
            meta["records"] = sum(w["records"] for w in meta["workers"].values())
        else:
            meta["records"] = self.writer.count if self.writer else 0
        (folder / f"run-{self.worker_id}.json").write_text(json.dumps(meta, indent=2))
        with open(folder / f"monitor-{self.worker_id}.csv", "w", encoding="utf-8") as f:
            f.write("t,cpu_pct,loop_lag_ms,in_flight,done\n")
            for s in self.monitor.samples:
                f.write(f"{s.t:.3f},{s.cpu_pct:.1f},{s.loop_lag_ms:.3f},{s.in_flight},{s.done}\n")


def _failure_label(record: Record) -> str:
    if record.error_type == "http_status":
        return record.error[:160]
    return record.error_type


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("tokenstorm", "locust", "gevent", "tiktoken"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


# -- model and key discovery ------------------------------------------------------------
def models_path(settings: Settings) -> str:
    """<base>/v1/models: where the model list is, under --host's path."""
    base = settings.target.base_path
    return (base if base.endswith("/v1") else base + "/v1") + "/models"


def probe_models(settings: Settings) -> tuple[int, list[str]]:
    """GET <base>/v1/models with the key (if any): (HTTP status, model ids)."""
    path = models_path(settings)
    conn = Connection(settings.target, settings.timeouts.connect_s,
                      settings.ssl_context() if settings.target.scheme == "https" else None)
    conn.deadline = time.monotonic() + settings.timeouts.connect_s + 10
    headers = [("Accept", "application/json"), *settings.extra_headers]
    if settings.api_key and not has_key_header(settings.extra_headers):
        headers.append(("Authorization", f"Bearer {settings.api_key}"))
    try:
        response, _ = conn.request("GET", path, headers)
        body = response.read_all()
    except (HTTPError, ConnectionLost) as exc:
        raise OptionError(f"cannot reach --host {settings.target.origin}{settings.target.base_path}: {exc}") from None
    finally:
        conn.disarm()
        conn.close()
    ids = []
    if response.status == 200:
        try:
            ids = [m["id"] for m in json.loads(body).get("data", []) if isinstance(m, dict)
                   and isinstance(m.get("id"), str) and m["id"]]
        except (ValueError, AttributeError, TypeError):
            ids = []
    return response.status, ids


def resolve(settings: Settings) -> Settings:
    """Check the key against the target and pick a model when none was given."""
    keyless = settings.api_key is None and not has_key_header(settings.extra_headers)
    if keyless or not settings.model:
        status, ids = probe_models(settings)
        url = settings.target.origin + models_path(settings)  # the whole URL: --host's path included
        if keyless and status in (401, 403):
            raise OptionError(f"{settings.api_key_env} is not set and {url} answered {status} to GET: "
                              f"export {settings.api_key_env}=<your key>")
        if status in (401, 403):
            where = f"the key in {settings.api_key_env}" if settings.api_key else "the key in --header"
            raise OptionError(f"{where} was rejected: GET {url} answered {status}; check the key")
        if not settings.model:
            if status != 200 or not ids:
                raise OptionError(f"no --model given and GET {url} gave "
                                  f"{'no models' if status == 200 else f'HTTP {status}'}: pass --model NAME")
            settings.model = ids[0]
    return settings


# -- Locust wiring ----------------------------------------------------------------------
# Locust builds the User and LoadTestShape objects, so they find their session through their
# environment (one per process; tests may build several). Weak keys: a finished environment goes.
_sessions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_unprepared: weakref.WeakSet = weakref.WeakSet()  # environments whose session could not be built


def prepare_failed(environment) -> bool:
    """True when this process could not build its session (its error is printed; it is quitting)."""
    return environment in _unprepared
# secret options as given at start: the web UI's form only ever shows them masked
_given_secrets: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_of(environment) -> Session | None:
    """The session of `environment` (None before its test is prepared)."""
    return _sessions.get(environment)


def _fail(message: str) -> None:
    print(f"{LOG_PREFIX} {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def prepare(environment) -> Session:
    """Build this process's Session from the parsed options (and the host of the test being started).

    The master (or a standalone process) checks everything and resolves the model and the
    prompt file; what it resolved travels to the workers with Locust's spawn message. Workers
    write nothing locally (unless their master dies) and read the API key from their own environment.
    """
    options = environment.parsed_options
    keep_secrets(options, _given_secrets.get(environment, {}))
    role = role_of(environment.runner)
    if role != "worker" and not options.results_dir:
        options.results_dir = time.strftime("results/%Y%m%d-%H%M%S")
    host = environment.host or getattr(options, "host", None)
    try:
        settings = Settings.build(options, host, Path(options.results_dir or "."), check_dir=role != "worker")
    except OptionError as exc:
        if role == "worker" and str(exc).startswith("--tokenizer"):
            raise OptionError(f"{exc} [on this worker, {socket.gethostname()}: every worker needs the master's "
                              "--tokenizer file at the same path]") from None
        raise
    if role != "worker":
        if settings.scenario is None:  # a scenario's body names its model
            settings = resolve(settings)
        options.model = settings.model
        options.prompt, options.prompt_file = settings.prompt, ""
        if settings.server_metrics:  # scrapable now, or no load at all
            try:
                server_metrics.check(settings.server_metrics, settings.ssl_context())
            except ValueError as exc:
                raise OptionError(f"--server-metrics: {exc}") from None
    if settings.scenario is not None and options.num_users is None and settings.scenario.spec.users:
        options.num_users = settings.scenario.spec.users  # -u on the command line wins
    session = _sessions[environment] = Session(environment, settings)
    return session


def install(events=locust_events, require_agent: bool = False, require_stages: bool = False) -> None:
    """Hook tokenstorm into Locust; require_agent / require_stages: the run needs a scenario with an
    `agent` / a `stages` section."""
    @events.init_command_line_parser.add_listener
    def _arguments(parser):
        add_arguments(parser)

    @events.init.add_listener
    def _init(environment, **_kwargs):
        runner = environment.runner
        if environment.web_ui is not None:
            if environment.parsed_options is not None:
                _given_secrets[environment] = {name: getattr(environment.parsed_options, name, None)
                                               for name in SECRET_OPTIONS}
            webui.install(environment, lambda: session_of(environment))
        if isinstance(runner, WorkerRunner):
            def _granted(environment, msg, **_kwargs):
                session = session_of(environment)
                if session is not None:
                    session.quota.on_grant(msg.data["n"])

            def _written(environment, msg, **_kwargs):
                session = session_of(environment)
                if session is not None and isinstance(session.writer, RecordShipper):
                    session.writer.on_written(msg.data["seq"])

            runner.register_message(TICKETS_GRANT, _granted)
            runner.register_message(RECORDS_WRITTEN, _written)
            if environment.parsed_options is not None:  # read by Locust's worker at every check
                set_master_heartbeat_timeout(environment.parsed_options.master_lost_after)
            return  # a worker's other options arrive with the master's spawn message
        options = environment.parsed_options
        if options is not None and (options.num_users or 0) < 0:  # Locust would raise in a greenlet and hang
            _fail(f"-u/--users: must be 0 or more, got {options.num_users}")
        if options is None or not options.headless:
            return  # the web UI sets host and options when a test starts
        try:
            session = prepare(environment)
        except OptionError as exc:
            _fail(str(exc))
        users, rate = options.num_users or 0, options.spawn_rate or 0
        if session.settings.arrival_stages and users > rate:
            # open loop: users are only the cap on streams in flight; spawned at Locust's default 1/s,
            # the schedule would wait for them and fall behind from its first second
            options.spawn_rate = float(users)
            print(f"{LOG_PREFIX} open loop: spawning all {users} users (the cap on streams in flight) at once "
                  f"instead of -r {rate:g}/s", file=sys.stderr, flush=True)
        if require_stages and (session.scenario is None or not session.scenario.spec.stages):
            _fail("this locustfile follows the scenario's stages: give --scenario FILE with a `stages` section")
        if session.scenario is not None and session.scenario.spec.conversation is not None \
                and session.settings.arrival_stages:
            _fail("a scenario with `conversation` runs closed loop (each user its conversations, turn after turn): "
                  "drop --arrival-rate / the stages' rate")
        if require_agent and (session.scenario is None or session.scenario.spec.agent is None):
            _fail("this locustfile runs tool-calling agents: give --scenario FILE with an `agent` section "
                  "(e.g. configs/scenarios/tool-agent.yaml)")

    @events.test_start.add_listener
    def _test_start(environment, **_kwargs):
        runner = environment.runner
        session = session_of(environment)
        if isinstance(runner, MasterRunner) and session is not None and session.settings.arrival_stages:
            # one schedule for all workers: its start and how many share it go with the spawn message
            environment.parsed_options.arrival_start = time.time() + 2.0
            environment.parsed_options.arrival_processes = max(1, runner.worker_count)
        if session is None or role_of(environment.runner) == "worker":
            try:
                session = prepare(environment)
            except OptionError as exc:
                print(f"{LOG_PREFIX} {exc}", file=sys.stderr, flush=True)
                _unprepared.add(environment)
                if environment.runner is not None:
                    gevent.spawn_later(0, environment.runner.quit)
                return
        session.start()

    @events.spawning_complete.add_listener
    def _spawned(**_kwargs):
        # Everything alive now (users, connections, Locust's state) lives for the whole run. A full
        # GC pass over it stalled the event loop for 30-50 ms at 1,000 users, delaying reads and so
        # the timings; frozen objects are left out of collections from here on. (No gc.collect()
        # first: that would be one such stall, in the middle of the first users' streams.)
        gc.freeze()

    @events.test_stop.add_listener
    def _test_stop(environment, **_kwargs):
        session = session_of(environment)
        if session is not None:
            session.stop()

    @events.quit.add_listener
    def _quit(exit_code, **_kwargs):  # Locust's quit event names no environment: every session ends
        for session in list(_sessions.values()):
            if session.writer is None and session.collector is None:
                continue
            session.close()
            if session.role != "worker":
                try:
                    session.report()
                except OSError as exc:
                    print(f"{LOG_PREFIX} cannot write the report in {session.settings.results_dir} "
                          f"({exc.strerror or exc})", file=sys.stderr, flush=True)
