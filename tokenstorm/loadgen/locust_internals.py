"""The parts of Locust's runners that are not public API, in one place.

Checked against Locust 2.40-2.47 (pyproject pins locust < 3); if an upgrade breaks one of these,
it breaks here, not all over loadgen/. Everything else uses Locust's documented events and messages.
"""

from __future__ import annotations

import logging
import time

import gevent
from locust import runners
from locust.exception import RPCError, RPCReceiveError


def silence_final_stats_tables() -> None:
    """Locust prints its stats tables at shutdown through the `locust.stats_logger` logger (no
    option turns that off; --only-summary keeps them); with tokenstorm's own report they only
    repeat it with the TTFT/TPOT rows added into the Aggregated row."""
    logging.getLogger("locust.stats_logger").disabled = True


def set_master_heartbeat_timeout(seconds: float) -> None:
    """How long a worker waits without a master heartbeat before it quits (module global
    MASTER_HEARTBEAT_TIMEOUT, read by WorkerRunner at every check; no option for it in Locust)."""
    runners.MASTER_HEARTBEAT_TIMEOUT = seconds


def master_lost(worker_runner) -> bool:
    """True when the worker has had no heartbeat from its master for that long (or never had one)."""
    last = getattr(worker_runner, "last_heartbeat_timestamp", None)
    return last is None or time.time() - last >= runners.MASTER_HEARTBEAT_TIMEOUT


def message_loop_running(worker_runner) -> bool:
    """Whether the worker's own greenlets (its message loop among them) still run; they are
    killed when the worker is told to quit."""
    return bool(len(worker_runner.greenlet))


def receive_message(worker_runner, timeout_s: float):
    """Read the next message from the master on the worker's ZeroMQ channel (runner.client),
    for when the worker's message loop has stopped; None on timeout or a broken channel."""
    with gevent.Timeout(max(0.0, timeout_s), False):
        try:
            return worker_runner.client.recv()
        except (RPCError, RPCReceiveError):
            return None
    return None
