"""--total-requests as a quota of tickets: one per request, claimed before it is sent.

Standalone, the process holds the whole quota (LocalQuota). Distributed, the master holds it
(TicketLedger) and workers ask for tickets as their users need them (RemoteQuota), so the
total is exact whatever the number of workers: a per-process counter would give N x workers.
A ticket is used once its request's record reaches the master; the master ends the run when
every ticket is used, so no request is cut and none is lost on the way.
"""

from __future__ import annotations

from collections.abc import Callable

from gevent.event import Event

TICKETS_REQUEST = "tokenstorm_tickets"  # worker -> master: {"want": n}
TICKETS_GRANT = "tokenstorm_grant"  # master -> worker: {"n": granted}; 0 = the quota is spent


class LocalQuota:
    def __init__(self, total: int, on_spent: Callable[[], None]):
        self.total = total
        self.claimed = 0
        self.completed = 0
        self._on_spent = on_spent

    def claim(self) -> bool:
        if self.total and self.claimed >= self.total:
            return False
        self.claimed += 1
        return True

    def complete(self) -> None:
        self.completed += 1
        if self.total and self.completed >= self.total:
            self._on_spent()


class RemoteQuota:
    """A worker's side: a small local pool refilled from the master on demand."""

    def __init__(self, total: int, send: Callable[[str, dict], None]):
        self.total = total  # 0 = unlimited: no tickets are needed
        self._send = send
        self._pool = 0
        self._waiting = 0
        self._asked = False
        self._spent = False
        self._granted = Event()

    def claim(self) -> bool:
        if not self.total:
            return True
        while True:
            if self._pool > 0:
                self._pool -= 1
                return True
            if self._spent:
                return False
            self._waiting += 1
            if not self._asked:
                self._asked = True
                self._granted.clear()
                self._send(TICKETS_REQUEST, {"want": self._waiting})
            try:
                self._granted.wait()
            finally:
                self._waiting -= 1

    def on_grant(self, n: int) -> None:
        self._asked = False
        if n <= 0:
            self._spent = True
        self._pool += max(0, n)
        self._granted.set()

    def complete(self) -> None:
        """Completion is reported by the record reaching the master."""


class TicketLedger:
    """The master's side: issues tickets, counts used ones, takes back a lost worker's."""

    def __init__(self, total: int):
        self.total = total
        self.issued = 0
        self.used = 0
        self.issued_to: dict[str, int] = {}
        self.used_by: dict[str, int] = {}

    @property
    def spent(self) -> bool:
        return bool(self.total) and self.used >= self.total

    def grant(self, worker: str, want: int) -> int:
        n = max(0, min(want, self.total - self.issued))
        self.issued += n
        self.issued_to[worker] = self.issued_to.get(worker, 0) + n
        return n

    def use(self, worker: str, n: int) -> None:
        self.used += n
        self.used_by[worker] = self.used_by.get(worker, 0) + n

    def reclaim(self, worker: str) -> int:
        """A lost worker's tickets that no record will ever use go back to the pool."""
        outstanding = max(0, self.issued_to.get(worker, 0) - self.used_by.get(worker, 0))
        self.issued -= outstanding
        self.issued_to[worker] = self.issued_to.get(worker, 0) - outstanding
        return outstanding
