"""Locust User classes: each user streams one request after another (users = concurrency)."""

from __future__ import annotations

from gevent import GreenletExit
from locust import User, constant, task
from locust.exception import StopUser

from ..stream import stream_request
from . import run as run_state


class StreamingUser(User):
    """Sends the run's streaming request in a loop, one at a time, and records each one."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        self.run = run_state.current()
        self.user_id = self.run.next_user_id()
        self.conn = self.run.connection()

    def on_stop(self) -> None:
        self.conn.close()

    @task
    def stream(self) -> None:
        run = self.run
        if not run.quota.claim():
            raise StopUser()
        record = run.new_record(self.user_id)
        settings = run.settings
        run.monitor.in_flight += 1
        try:
            stream_request(self.conn, settings.path, run.body, run.headers, run.format, settings.timeouts,
                           record, run.prompt_tokens)
        finally:
            run.monitor.in_flight -= 1
            run.finish(record)
        if record.error_type == "cancelled":
            raise GreenletExit()


class ChatStreamUser(StreamingUser):
    """Streams OpenAI-compatible chat completions (or legacy completions with --api completions)."""
