"""Time for exact streaming: absolute-deadline sleeps and kernel timestamps on one clock.

gevent's timers ride on libev, which blocks in epoll_wait with a timeout rounded up to whole
milliseconds: measured here, gevent.sleep() woke 0.7 ms late at the median and 1.3 ms at p99.
For a mock whose TTFT must be exact to well under 2 ms that is a systematic error. This clock
keeps every pending deadline in one heap and arms a single Linux timerfd (nanosecond
resolution, absolute CLOCK_MONOTONIC, the clock of time.monotonic()) for the earliest one; the
hub wakes when the timerfd becomes readable and switches to every greenlet that is due.
One timer for all streams is also cheaper than one libev timer per sleep.

Where timerfd is unavailable (not Linux) it falls back to gevent.sleep.

Kernel receive timestamps (SO_TIMESTAMPNS) are CLOCK_REALTIME; realtime_to_monotonic() puts them
on time.monotonic()'s clock. Converting each stamp with `time.monotonic() - (time.time() - stamp)`
is wrong by whatever time passes between the two clock reads (a preemption there moved a stamp
77 us into the past in a test), so the offset between the clocks is measured from the tightest
of a few read pairs and reused for a second.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import heapq
import itertools
import os
import struct
import time

import gevent
import gevent.socket
from gevent.hub import Waiter, get_hub

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


class _TimerFD:
    """timerfd_create/timerfd_settime: os.* on Python 3.13+, libc through ctypes before that."""

    def __init__(self) -> None:
        if hasattr(os, "timerfd_create"):
            self.fd = os.timerfd_create(time.CLOCK_MONOTONIC, flags=os.TFD_NONBLOCK | os.TFD_CLOEXEC)
            self._settime = lambda at: os.timerfd_settime_ns(self.fd, flags=os.TFD_TIMER_ABSTIME,
                                                             initial=int(at * 1e9))
            return
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        settime = libc.timerfd_settime
        settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        spec = ctypes.create_string_buffer(32)  # struct itimerspec: interval (0), value

        def arm(at: float) -> None:
            sec = int(at)
            nsec = max(int((at - sec) * 1e9), 0 if sec else 1)  # an all-zero value would disarm it
            struct.pack_into("qqqq", spec, 0, 0, 0, sec, nsec)
            if settime(self.fd, _TFD_TIMER_ABSTIME, spec, None) != 0:
                raise OSError(ctypes.get_errno(), "timerfd_settime failed")

        self._settime = arm

    def arm(self, at: float) -> None:
        self._settime(at)

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)


class PreciseClock:
    def __init__(self) -> None:
        self._timer = _TimerFD()
        self._heap: list[tuple[float, int, Waiter]] = []
        self._seq = itertools.count()
        self._armed = float("inf")
        self._watcher = get_hub().loop.io(self._timer.fd, 1)
        self._watcher.start(self._fire)

    def _arm(self, at: float) -> None:
        self._armed = at
        self._timer.arm(at)

    def wait(self, deadline: float, waiter: Waiter) -> None:
        """Switch `waiter` (with None) at `deadline`; the caller then calls waiter.get()."""
        heapq.heappush(self._heap, (deadline, next(self._seq), waiter))
        if deadline < self._armed:
            self._arm(deadline)

    def sleep_until(self, deadline: float) -> None:
        if deadline <= time.monotonic():
            return
        waiter = Waiter()
        self.wait(deadline, waiter)
        waiter.get()

    def _fire(self) -> None:  # runs in the hub
        self._timer.drain()
        heap = self._heap
        self._armed = float("inf")
        now = time.monotonic()
        while heap:
            due = heap[0][0]
            if due > now:
                if due - now > SPIN_S:
                    break
                # Due within SPIN_S: wait for it here rather than re-arm the timer, go back to the
                # loop and wake again (three system calls). Only happens when deadlines are dense.
                while time.monotonic() < due:
                    pass
            heapq.heappop(heap)[2].switch(None)  # runs that greenlet until it blocks again
            now = time.monotonic()
        if heap and heap[0][0] < self._armed:
            self._arm(heap[0][0])


SPIN_S = 0.0001

_clock: PreciseClock | None = None
_unavailable = False


def _forget_in_child() -> None:
    global _clock
    _clock = None  # a forked worker makes its own (its own timerfd, its own hub)


os.register_at_fork(after_in_child=_forget_in_child)


def clock() -> PreciseClock | None:
    """This process's clock (created on first use, so each forked worker has its own)."""
    global _clock, _unavailable
    if _clock is None and not _unavailable:
        try:
            _clock = PreciseClock()
        except (OSError, AttributeError):
            _unavailable = True
    return _clock


def wait_until_or_readable(deadline: float, fd: int) -> bool:
    """Sleep to `deadline`, or less: True as soon as `fd` becomes readable."""
    precise = clock()
    if precise is None:
        try:
            gevent.socket.wait_read(fd, timeout=max(0.0, deadline - time.monotonic()), timeout_exc=TimeoutError)
        except TimeoutError:
            sleep_until(deadline)
            return False
        return True
    waiter = Waiter()
    watcher = get_hub().loop.io(fd, 1)
    watcher.start(waiter.switch, True)
    try:
        precise.wait(deadline, waiter)
        return bool(waiter.get())
    finally:
        watcher.stop()
        watcher.close()


def sleep_until(deadline: float) -> None:
    """Sleep to an absolute time.monotonic() deadline."""
    precise = clock()
    if precise is not None:
        precise.sleep_until(deadline)
        return
    while (delay := deadline - time.monotonic()) > 0:  # libev's clock is cached: re-check
        gevent.sleep(delay)


# -- kernel timestamps on the monotonic clock ----------------------------------------------
_REFRESH_S = 1.0
_offset = 0.0  # realtime - monotonic
_measured_at = -1e9


def _measure() -> float:
    best_gap, best = float("inf"), 0.0
    for _ in range(5):
        m1 = time.monotonic()
        r = time.time()
        m2 = time.monotonic()
        if m2 - m1 < best_gap:
            best_gap, best = m2 - m1, r - (m1 + m2) / 2
    return best


def realtime_to_monotonic(stamp: float, now: float) -> float:
    """`stamp` (unix seconds) on the monotonic clock; `now` is a fresh time.monotonic()."""
    global _offset, _measured_at
    if now - _measured_at > _REFRESH_S:
        _offset, _measured_at = _measure(), now
    return stamp - _offset
