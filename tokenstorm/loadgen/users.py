"""Locust User classes: each user streams one request after another (users = concurrency)."""

from __future__ import annotations

from gevent import GreenletExit
from locust import User, constant, task
from locust.exception import StopUser

from ..httpclient import Connection
from ..stream import Record, StreamAccount, stream_request
from . import run as run_state


class StreamingUser(User):
    """Sends the run's streaming request in a loop, one at a time, and records each one."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        self.run = run_state.current()
        self.user_id = self.run.next_user_id()
        self.connections: dict = {}  # one keep-alive connection per upstream

    def on_stop(self) -> None:
        for conn in self.connections.values():
            conn.close()

    def connection(self, target) -> Connection:
        conn = self.connections.get(target)
        if conn is None:
            conn = self.connections[target] = self.run.connection(target)
        return conn

    def send(self, request, account: StreamAccount | None = None, intended: float | None = None) -> Record:
        """One streamed request, recorded and reported; re-raises the run's end (cancelled)."""
        run = self.run
        record = run.new_record(self.user_id, request)
        record.t_intended = intended
        run.monitor.in_flight += 1
        try:
            stream_request(self.connection(request.target), request.path, request.body, run.headers,
                           run.format_class(), run.settings.timeouts, record, request.prompt_tokens, account)
        finally:
            run.monitor.in_flight -= 1
            if intended is not None:
                record.schedule_lag_ms = round((record.t_start - intended) * 1000, 3)
            run.finish(record, request.label)
        if record.error_type == "cancelled":
            raise GreenletExit()
        return record

    @task
    def stream(self) -> None:
        run = self.run
        if not run.quota.claim():
            raise StopUser()
        intended = None
        if run.open_loop is not None:  # open loop: wait for this process's next arrival
            intended = run.open_loop.claim()
            if intended is None:
                run.check_schedule_done()
                raise StopUser()
            run.open_loop.wait_until(intended)
        self.send(run.next_request(), intended=intended)


class ChatStreamUser(StreamingUser):
    """Streams OpenAI-compatible chat completions (or legacy completions with --api completions)."""
