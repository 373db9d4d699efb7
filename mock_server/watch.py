"""Waiting (for a deadline or a queue slot) while noticing that the client has left.

A readable socket during a wait means one of three things: the client pipelined its next request
(data), it is gone (reset), or it sent a FIN. A FIN is either a full close or a half-close
(shutdown(SHUT_WR): the client still waits for its answer), and TCP cannot tell them apart until
something is written: a closed peer answers with a reset. So on a FIN, a stream whose headers
are out writes a probe its client ignores (an SSE comment) and looks for that reset; an answer
that cannot be probed (not streamed yet, or plain text) is still written, and a gone client then
shows at the write. After a half-close the socket stays readable, so it is not watched again.
"""

from __future__ import annotations

import socket
import struct

import gevent
from gevent.event import Event
from gevent.hub import Waiter, get_hub

from tokenstorm.core.clock import sleep_until, wait_until_or_readable

from .http import AbortConnection

TCP_CLOSE = 7  # tcpi_state after a reset
PROBE_WAIT_S = 0.05  # time for a closed peer's reset to come back


class ClientGone(AbortConnection):
    """The client closed its connection while the mock was waiting."""


class Watch:
    """One request's view of its client; `probe` is a chunk its client ignores, or None."""

    def __init__(self, sock: socket.socket | None, probe: bytes | None = None):
        self.sock = sock
        self.probe = probe
        self.headers_sent = False
        self.quiet = sock is None  # pipelined data or a half-close: stop watching

    def sleep(self, deadline: float) -> None:
        """sleep_until that raises ClientGone as soon as the client hangs up (frees its slot at once)."""
        while not self.quiet and wait_until_or_readable(deadline, self.sock.fileno()):
            self._readable()
        sleep_until(deadline)

    def wait(self, event: Event) -> None:
        """Wait for `event` (a queue slot); ClientGone when the client leaves the queue."""
        while not event.is_set() and not self.quiet:
            if _event_or_readable(event, self.sock.fileno()):
                self._readable()
        event.wait()

    def _readable(self) -> None:
        try:
            peek = self.sock.recv(1, socket.MSG_PEEK)
        except OSError:
            raise ClientGone() from None
        if peek:  # the client pipelined a request: cannot watch, just wait
            self.quiet = True
            return
        if self.probe is not None and self.headers_sent:
            try:
                self.sock.sendall(b"%x\r\n%b\r\n" % (len(self.probe), self.probe))
                gevent.sleep(PROBE_WAIT_S)
                info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
                if struct.unpack_from("B", info)[0] == TCP_CLOSE:
                    raise ClientGone()
                self.sock.sendall(b"%x\r\n%b\r\n" % (len(self.probe), self.probe))
            except OSError:
                raise ClientGone() from None
        self.quiet = True  # a half-close: the client waits for its answer


def _event_or_readable(event: Event, fd: int) -> bool:
    """Block until `event` is set (False) or `fd` is readable (True)."""
    waiter = Waiter()
    fired: list[bool] = []

    def fire(readable: bool) -> None:
        if not fired:
            fired.append(readable)
            waiter.switch(readable)

    def on_set(_event) -> None:
        fire(False)

    watcher = get_hub().loop.io(fd, 1)
    watcher.start(fire, True)
    event.rawlink(on_set)
    try:
        return bool(waiter.get())
    finally:
        event.unlink(on_set)
        watcher.stop()
        watcher.close()
