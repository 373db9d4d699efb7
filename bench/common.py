"""Helpers the benchmarks share."""

from __future__ import annotations

import socket

import psutil


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU seconds of processes (those that ended count as 0)."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
