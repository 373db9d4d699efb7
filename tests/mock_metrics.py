"""What the mock says about itself on /metrics: requests seen, streams running, and how late it
sent its chunks, which is what timing tests allow for on a machine too busy to keep a schedule."""

from __future__ import annotations

import re

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


def run_queue_wait_s(mock) -> float:
    """Seconds the mock's main thread (its event loop) has been ready to run while the OS ran
    something else (Linux schedstat): what a busy machine withheld from it, which no lag it measures
    of itself can see (the OS may stop it between taking the time and writing). 0 where the kernel
    does not say."""
    pid = mock.proc.pid
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0
