"""Every fault of the mock, by header, by probability and on a timeline, as seen on the wire."""

from __future__ import annotations

import json
import re
import time

import gevent
import pytest
import sse_probe
from mock_metrics import mock_lag_bound_ms, mock_lag_buckets

CHAT = {"model": "mock-llm", "messages": [{"role": "user", "content": "hi"}], "stream": True,
        "max_tokens": 20, "stream_options": {"include_usage": True}}


@pytest.fixture(scope="module")
def mock():
    from tokenstorm.mockproc import MockProcess

    proc = MockProcess(["--ttft-ms", "20", "--itl-ms", "2", "--config", "tests/data/mock-fast-stall.yaml"])
    yield proc
    proc.stop()


def faulted(mock, fault: str, body: dict = CHAT, **headers) -> sse_probe.Probe:
    return sse_probe.request(mock.port, body, headers={"X-Mock-Fault": fault, **headers})


def data_events(probe: sse_probe.Probe) -> list[bytes]:
    return [d for _, d in probe.events]


@pytest.mark.parametrize(("fault", "status", "code"), [
    ("http_429", 429, "rate_limit_exceeded"), ("http_500", 500, "internal_error"),
    ("http_503", 503, "service_unavailable")])
def test_http_faults_answer_in_openai_error_shape(mock, fault, status, code):
    probe = faulted(mock, fault)
    assert probe.status == status
    error = json.loads(probe.body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    assert probe.headers["x-request-id"].startswith("req_")
    if status == 429:
        assert probe.headers["retry-after"] == "1" and probe.headers["retry-after-ms"] == "1000"


def test_error_event_after_k_tokens_then_the_response_ends(mock):
    probe = faulted(mock, "error_event", **{"X-Mock-Fault-After": "3"})
    events = data_events(probe)
    assert probe.status == 200 and probe.complete
    assert len(probe.content_times()) == 3
    assert json.loads(events[-1])["error"]["type"] == "server_error"
    assert b"[DONE]" not in events and b"finish_reason\":\"stop" not in probe.body


def test_truncate_ends_the_http_response_without_finish_reason_or_done(mock):
    probe = faulted(mock, "truncate", **{"X-Mock-Fault-After": "5"})
    assert probe.status == 200 and probe.complete and not probe.error
    assert len(probe.content_times()) == 5
    assert b"[DONE]" not in data_events(probe)
    assert all(c["choices"][0]["finish_reason"] is None for c in probe.json_events())


def test_disconnect_resets_the_connection_mid_stream(mock):
    probe = faulted(mock, "disconnect", **{"X-Mock-Fault-After": "4"})
    assert probe.status == 200 and not probe.complete
    assert len(probe.content_times()) == 4
    assert "ConnectionResetError" in probe.error


def test_stall_sends_headers_then_nothing(mock):
    start = time.monotonic()
    probe = faulted(mock, "stall")  # the profile stalls 1.5 s, then closes
    assert probe.status == 200 and probe.events == []
    assert probe.t_headers - probe.t_sent < 0.1
    assert 1.4 < time.monotonic() - start < 3
    assert not probe.complete


def test_slow_streams_tokens_far_slower(mock):
    before = mock_lag_buckets(mock)
    probe = faulted(mock, "slow", {**CHAT, "max_tokens": 10})
    late_s = mock_lag_bound_ms(before, mock_lag_buckets(mock)) / 1000  # what the mock measured of itself
    itls = probe.itls()
    assert probe.complete and len(itls) == 9
    assert all(abs(gap - 0.02) < 0.005 + late_s for gap in itls), (itls, late_s)  # 2 ms x slow_factor 10


def test_malformed_chunk_is_invalid_json_and_the_stream_goes_on(mock):
    probe = faulted(mock, "malformed", **{"X-Mock-Fault-After": "2"})
    bad = []
    for data in data_events(probe)[:-1]:
        try:
            json.loads(data)
        except ValueError:
            bad.append(data)
    assert len(bad) == 1 and probe.complete
    assert data_events(probe)[-1] == b"[DONE]"


@pytest.mark.parametrize("fault", ["error_event", "truncate", "malformed", "disconnect", "stall", "slow"])
def test_stream_faults_also_apply_without_streaming(mock, fault):
    probe = faulted(mock, fault, {**CHAT, "stream": False, "stream_options": None, "max_tokens": 5})
    if fault == "error_event":
        assert probe.status == 500 and json.loads(probe.body)["error"]["type"] == "server_error"
    elif fault == "truncate":
        assert probe.status == 200 and not probe.complete
    elif fault == "malformed":
        assert probe.status == 200
        with pytest.raises(ValueError):
            json.loads(probe.body)
    elif fault in ("disconnect", "stall"):
        assert probe.status == 0 and probe.error
    else:
        assert probe.status == 200 and json.loads(probe.body)["usage"]["completion_tokens"] == 5


def test_unknown_fault_name_is_a_400(mock):
    probe = faulted(mock, "explode")
    assert probe.status == 400 and b"unknown X-Mock-Fault" in probe.body


def test_faults_counted_in_metrics(mock):
    faulted(mock, "http_500")
    text = sse_probe.request(mock.port, None, path="/metrics", method="GET").body.decode()
    assert float(re.search(r'^mock_faults_injected_total\{fault="http_500"\} (\S+)$', text, re.M).group(1)) >= 1


def test_random_faults_follow_their_probabilities(start_mock, tmp_path):
    config = tmp_path / "p.yaml"
    config.write_text("faults:\n  probabilities:\n    http_503: 0.5\nlatency:\n  ttft_ms: 0\n  itl_ms: 0\n")
    proc = start_mock("--config", str(config))
    jobs = [gevent.spawn(sse_probe.request, proc.port, {**CHAT, "max_tokens": 2}) for _ in range(200)]
    gevent.joinall(jobs)
    statuses = [j.value.status for j in jobs]
    assert set(statuses) == {200, 503}
    assert 60 < statuses.count(503) < 140  # binomial(200, 0.5): outside this is < 1e-8


def test_timeline_fault_is_active_only_in_its_window(start_mock, tmp_path):
    config = tmp_path / "t.yaml"
    config.write_text("faults:\n  timeline:\n    - {fault: http_503, start_s: 0, duration_s: 1.5}\n"
                      "latency: {ttft_ms: 0, itl_ms: 0}\n")
    proc = start_mock("--config", str(config))
    early = sse_probe.request(proc.port, CHAT)
    time.sleep(1.6)
    late = sse_probe.request(proc.port, CHAT)
    assert (early.status, late.status) == (503, 200)
