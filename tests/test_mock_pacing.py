"""Pacing with --jitter 0: TTFT and ITL as configured, at 1 and 100 streams; the queue is real.

Arrivals are kernel-stamped by the probe; what the mock itself measured as its lateness (its lag
histogram) is the only slack beyond a fixed tolerance, so these hold on a busy machine and still
fail on a mock that schedules wrongly or hides its lateness."""

from __future__ import annotations

import re
import statistics
import time

import gevent
import pytest
import sse_probe
from mock_metrics import mock_lag_bound_ms, mock_lag_buckets, mock_metrics, run_queue_wait_s

CHAT = {"model": "mock-llm", "messages": [{"role": "user", "content": "hi"}], "stream": True,
        "max_tokens": 40, "extra": "ignored"}


def run_streams(port: int, n: int, body: dict = CHAT, **kwargs) -> list[sse_probe.Probe]:
    jobs = [gevent.spawn(sse_probe.request, port, body, **kwargs) for _ in range(n)]
    gevent.joinall(jobs, timeout=60, raise_error=True)
    return [j.value for j in jobs]


@pytest.mark.parametrize("streams", [1, 100])
def test_ttft_and_itl_match_configuration(start_mock, streams):
    mock = start_mock("--ttft-ms", "150", "--itl-ms", "20", "--jitter", "0")
    run_streams(mock.port, 1)  # warm-up: first-request costs are not what we measure
    before, first_before, waited = mock_lag_buckets(mock), mock_lag_buckets(mock, True), run_queue_wait_s(mock)
    probes = run_streams(mock.port, streams)
    after, first_after = mock_lag_buckets(mock), mock_lag_buckets(mock, True)
    starved = (run_queue_wait_s(mock) - waited) * 1000  # what the OS withheld from the mock (~0 when idle)
    late_most, late_all = mock_lag_bound_ms(before, after, 0.75), mock_lag_bound_ms(before, after)
    late_first = mock_lag_bound_ms(first_before, first_after, 0.75) + starved
    assert all(p.status == 200 and p.complete for p in probes)
    ttfts = [p.ttft * 1000 for p in probes]
    itls = [gap * 1000 for p in probes for gap in p.itls()]
    assert all(len(p.content_times()) == 40 for p in probes)
    # a median gap has both ends among the 75% least late chunks
    assert -0.5 < statistics.median(ttfts) - 150 < 2 + late_first, (ttfts, late_first)
    assert abs(statistics.median(itls) - 20) < 2 + late_most
    assert abs(statistics.mean(itls) - 20) < 2 + late_all / 39  # (last - first) / 39 gaps per stream


@pytest.mark.parametrize("role_chunk", ["with-first-token", "with-headers"])
def test_headers_arrive_before_the_first_token_and_the_role_chunk_when_asked(start_mock, role_chunk):
    mock = start_mock("--ttft-ms", "200", "--itl-ms", "5", "--role-chunk", role_chunk)
    before = mock_lag_buckets(mock)
    (probe,) = run_streams(mock.port, 1)
    late = mock_lag_bound_ms(before, mock_lag_buckets(mock)) / 1000
    assert probe.t_headers - probe.t_sent < 0.05
    assert probe.json_events()[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    role_at = probe.events[0][0] - probe.t_sent
    assert 0.1995 < probe.ttft < 0.205 + late
    if role_chunk == "with-headers":
        assert role_at < 0.05
    else:  # vLLM's way: the role chunk leaves with the first token
        assert abs(role_at - probe.ttft) < 0.002


def test_itl_zero_writes_tokens_back_to_back(start_mock):
    mock = start_mock("--ttft-ms", "0", "--itl-ms", "0")
    (probe,) = run_streams(mock.port, 1, {**CHAT, "max_tokens": 2000, "ignore_eos": True})
    times = probe.content_times()
    assert len(times) == 2000 and times[-1] - times[0] < 0.2


def test_queue_makes_later_requests_wait_for_earlier_ones(start_mock):
    mock = start_mock("--ttft-ms", "100", "--itl-ms", "10", "--max-num-seqs", "2")
    before = mock_lag_buckets(mock)
    probes = run_streams(mock.port, 4, {**CHAT, "max_tokens": 30})
    late = mock_lag_bound_ms(before, mock_lag_buckets(mock)) / 1000
    e2e = sorted(p.content_times()[-1] - p.t_sent for p in probes)
    ttfts = sorted(p.ttft for p in probes)
    first_done = 0.100 + 29 * 0.010
    # Two run at once; the other two get a slot when those finish, then do their own prefill.
    assert all(0.0995 < t < 0.105 + late for t in ttfts[:2]), (ttfts, late)
    assert all(abs(t - (first_done + 0.100)) < 0.01 + 2 * late for t in ttfts[2:]), (ttfts, late)
    assert abs(e2e[-1] - 2 * first_done) < 0.015 + 2 * late


def test_full_queue_answers_429_with_an_estimated_wait(start_mock):
    mock = start_mock("--ttft-ms", "300", "--itl-ms", "10", "--max-num-seqs", "1", "--max-queue", "1")
    jobs = [gevent.spawn(sse_probe.request, mock.port, CHAT) for _ in range(2)]
    gevent.sleep(0.1)  # both admitted: one running, one queued
    rejected = sse_probe.request(mock.port, CHAT)
    gevent.joinall(jobs)
    assert [j.value.status for j in jobs] == [200, 200]
    assert rejected.status == 429
    assert int(rejected.headers["retry-after-ms"]) > 300
    assert b"queue_full" in rejected.body


def test_client_that_disconnects_frees_its_slot_at_once(start_mock):
    mock = start_mock("--ttft-ms", "50", "--itl-ms", "50", "--max-num-seqs", "1")
    long_body = {**CHAT, "max_tokens": 200, "ignore_eos": True}  # would hold the slot ~10 s
    first = sse_probe.request(mock.port, long_body, close_after_events=4)  # role + 3 tokens, then hang up
    assert len(first.events) == 4
    start = time.monotonic()
    (second,) = run_streams(mock.port, 1, {**CHAT, "max_tokens": 5})
    assert second.status == 200 and second.ttft < 0.2, second.ttft  # the slot was free, not queued
    assert time.monotonic() - start < 1
    metrics = sse_probe.request(mock.port, None, path="/metrics", method="GET").body.decode()
    assert re.search(r"^mock_client_disconnects_total 1\.0$", metrics, re.M)


def test_disconnect_while_waiting_for_the_first_token_frees_the_slot(start_mock):
    mock = start_mock("--ttft-ms", "5000", "--itl-ms", "10", "--max-num-seqs", "1", "--role-chunk", "with-headers")
    sse_probe.request(mock.port, CHAT, close_after_events=1)  # role chunk, then hang up during prefill
    gevent.sleep(0.2)
    health = sse_probe.request(mock.port, None, path="/health", method="GET")
    assert b'"running": 0' in health.body


def test_lag_histogram_counts_every_chunk_and_its_max(start_mock):
    # How small the lag stays is the mock's capacity: bench/mock_capacity.py measures it.
    mock = start_mock("--ttft-ms", "10", "--itl-ms", "5", "--jitter", "0")
    run_streams(mock.port, 20)
    text = mock_metrics(mock)
    count = float(re.search(r"^mock_token_lag_seconds_count (\S+)$", text, re.M).group(1))
    chunks = float(re.search(r"^mock_chunks_total (\S+)$", text, re.M).group(1))
    largest = float(re.search(r"^mock_token_lag_max_seconds (\S+)$", text, re.M).group(1))
    buckets = mock_lag_buckets(mock)
    assert count == chunks == 20 * 40
    first = float(re.search(r"^mock_first_token_lag_seconds_count (\S+)$", text, re.M).group(1))
    assert first == 20  # one first chunk per stream, in its own histogram too
    below = max((le for le, n in buckets.items() if n < count), default=0.0)  # the largest lag is above this
    assert below <= largest <= mock_lag_bound_ms({}, buckets) / 1000
