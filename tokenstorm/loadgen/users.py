"""Locust User classes: each user streams one request after another (users = concurrency)."""

from __future__ import annotations

from gevent import GreenletExit
from gevent.event import Event
from locust import User, constant, task
from locust.exception import StopUser

from ..client.httpclient import Connection
from ..client.stream import StreamAccount, stream_request
from ..core.records import Record
from .conversation import multi_turn
from .session import prepare_failed, session_of


class StreamingUser(User):
    """Sends the run's streaming request in a loop, one at a time, and records each one."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        session = session_of(self.environment)
        self.connections: dict = {}  # one keep-alive connection per upstream
        if session is None and prepare_failed(self.environment):
            # the reason is printed already and the process is quitting, which ends this greenlet quietly
            # (Locust logs a traceback for anything raised in on_start, even StopUser)
            Event().wait()
        if session is None:
            raise RuntimeError("tokenstorm is not set up: load it with tokenstorm.loadgen.session.install()")
        self.session = session
        self.user_id = self.session.next_user_id()

    def on_stop(self) -> None:
        for conn in self.connections.values():
            conn.close()

    def connection(self, target) -> Connection:
        conn = self.connections.get(target)
        if conn is None:
            conn = self.connections[target] = self.session.connection(target)
        return conn

    def send(self, request, account: StreamAccount | None = None, intended: float | None = None,
             conversation: tuple[str, int] | None = None) -> Record:
        """One streamed request, recorded and reported; re-raises the run's end (cancelled).
        `conversation`: (conversation id, 1-based turn) of a turn."""
        session = self.session
        record = session.new_record(self.user_id, request)
        record.t_intended = intended
        if conversation is not None:
            record.conversation_id, record.turn = conversation
        session.monitor.in_flight += 1
        try:
            stream_request(self.connection(request.target), request.path, request.body, session.headers,
                           session.format_class(), session.settings.timeouts, record, request.prompt_tokens, account,
                           session.cancel_after(record.request_id))
        finally:
            session.monitor.in_flight -= 1
            if intended is not None:
                record.schedule_lag_ms = round((record.t_start - intended) * 1000, 3)
            session.finish(record, request.label)
        if record.error_type == "cancelled":
            raise GreenletExit()
        return record

    @task
    def _one(self) -> None:  # Locust's only task; subclasses override iteration(), never add a @task
        self.iteration()

    def iteration(self) -> None:
        """One request (or, with the scenario's `conversation`, one conversation)."""
        session = self.session
        if session.scenario is not None and session.scenario.spec.conversation is not None:
            multi_turn(self)  # a response-conditioned conversation instead of one request
            return
        if not session.quota.claim():
            raise StopUser()
        intended = arrival = None
        if session.open_loop is not None:  # open loop: wait for this process's next arrival
            claimed = session.open_loop.claim()
            if claimed is None:
                session.check_schedule_done()
                raise StopUser()
            arrival, intended = claimed
            session.open_loop.wait_until(intended)
        self.send(session.next_request(arrival), intended=intended)


class ChatStreamUser(StreamingUser):
    """Streams OpenAI-compatible chat completions (legacy completions with --api completions, the Responses
    API with --api responses)."""
