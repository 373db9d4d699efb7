"""What the mock says about itself on /metrics: requests seen, streams running, and how late it
sent its chunks, which is what timing tests allow for on a machine too busy to keep a schedule."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import sse_probe


def mock_metrics(mock) -> str:
    return sse_probe.request(mock.port, None, path="/metrics", method="GET").body.decode()


def chat_requests_seen(mock) -> float:
    found = re.findall(r'^mock_requests_total\{endpoint="/v1/chat/completions",status="\d+"\} (\S+)$',
                       mock_metrics(mock), re.M)
    return sum(float(x) for x in found)


def mock_lag_buckets(mock, first_tokens: bool = False) -> dict[float, float]:
    """The mock's own chunk-lag histogram (seconds late against each chunk's deadline -> count), or
    with `first_tokens` that of the streams' first chunks only."""
    name = "mock_first_token_lag_seconds" if first_tokens else "mock_token_lag_seconds"
    found = re.findall(rf'^{name}_bucket\{{le="([^"]+)"\}} (\S+)$', mock_metrics(mock), re.M)
    return {float(le): float(count) for le, count in found}


def mock_lag_bound_ms(before: dict[float, float], after: dict[float, float], share: float = 1.0) -> float:
    """Upper bound (ms) of how late the mock sent `share` of the chunks it sent between two
    histogram readings (1.0: every one of them): what a timing may exceed the configured schedule
    by, on a machine too busy to keep it."""
    new = {le: after[le] - before.get(le, 0.0) for le in after}
    total = new[float("inf")]
    return min(le for le, count in new.items() if count >= share * total) * 1000


def first_tokens_sent(mock) -> float:
    """Streams whose first token the mock has sent."""
    found = re.search(r"^mock_first_token_lag_seconds_count (\S+)$", mock_metrics(mock), re.M)
    return float(found.group(1)) if found else 0.0


def running_streams(mock) -> float:
    found = re.search(r"^mock_running_streams (\S+)$", mock_metrics(mock), re.M)
    return float(found.group(1)) if found else 0.0


def _schedstat_wait_s(pid: int, tid: int) -> float:
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _softirq_threads() -> list[int]:
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().startswith("ksoftirqd/"):
                found.append(int(comm.parent.name))
        except OSError:
            continue
    return found


SOFTIRQ_THREADS = _softirq_threads()


def run_queue_wait_s(mock) -> float:
    """Seconds the mock's main thread (its event loop) and the kernel's softirq threads have been
    ready to run while the OS ran something else (Linux schedstat): what a busy machine withheld,
    which no lag the mock measures of itself can see (the OS may stop it between taking the time
    and writing; on a loaded machine ksoftirqd delivers loopback packets, so a chunk written on time
    can wait there before the kernel stamps its arrival). 0 where the kernel does not say."""
    pid = mock.proc.pid
    return _schedstat_wait_s(pid, pid) + sum(_schedstat_wait_s(t, t) for t in SOFTIRQ_THREADS)


def own_run_queue_wait_s() -> float:
    """The same for the calling thread: a client kept off the CPU reads late, and a late read that
    finds several chunks waiting carries the kernel's stamp of the last one."""
    return _schedstat_wait_s(os.getpid(), threading.get_native_id())
