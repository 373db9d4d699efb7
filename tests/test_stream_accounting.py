"""Stream accounting against real servers: every failure class with its partial timings, and
every SSE form a server may write, timed by the read that completes each event."""

from __future__ import annotations

import json
import time

import gevent
import pytest
from gevent.server import StreamServer
from mock_metrics import mock_lag_bound_ms, mock_lag_buckets, own_run_queue_wait_s, run_queue_wait_s

from tokenstorm.client.httpclient import Connection, Target
from tokenstorm.client.stream import Timeouts, stream_request
from tokenstorm.core.formats import OpenAIChat, OpenAICompletions
from tokenstorm.core.records import Record
from tokenstorm.core.tokenizer import count_tokens

HEADERS = [("Authorization", "Bearer mock-key"), ("Content-Type", "application/json")]


def chat_body(**extra) -> bytes:
    return json.dumps({"model": "mock-llm", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                       "stream_options": {"include_usage": True}, "max_tokens": 20, **extra}).encode()


@pytest.fixture(scope="module")
def mock():
    from tokenstorm.mockproc import MockProcess

    proc = MockProcess(["--ttft-ms", "50", "--itl-ms", "5", "--config", "tests/data/mock-fast-stall.yaml"])
    yield proc
    proc.stop()


def run(url: str, fault: str | None = None, body: bytes | None = None, timeouts: Timeouts | None = None,
        path: str = "/v1/chat/completions", fmt=None) -> Record:
    conn = Connection(Target.parse(url), 5)
    headers = HEADERS + ([("X-Mock-Fault", fault), ("X-Mock-Fault-After", "4")] if fault else [])
    try:
        return stream_request(conn, path, body or chat_body(), headers, fmt or OpenAIChat(),
                              timeouts or Timeouts(), Record())
    finally:
        conn.close()


def late_ms(mock, record_fn):
    """(record, ms): the record `record_fn()` makes, and how late its timings may honestly be against
    the configured schedule: the mock's own lag for every chunk it sent meanwhile, plus the time
    before the mock read the request (at most the time to the response headers, which it sends at
    once), plus the time the OS kept the mock, the kernel's packet delivery or this client off the
    CPU meanwhile. On an idle machine these are well under a millisecond; on a busy one they are
    what the run itself measured, not a guess."""
    before, waited = mock_lag_buckets(mock), run_queue_wait_s(mock) + own_run_queue_wait_s()
    record = record_fn()
    starved_ms = (run_queue_wait_s(mock) + own_run_queue_wait_s() - waited) * 1000
    return record, mock_lag_bound_ms(before, mock_lag_buckets(mock)) + (record.ttfb_ms or 0.0) + starved_ms


def test_successful_stream_has_every_metric(mock):
    record, late = late_ms(mock, lambda: run(mock.url))
    assert record.ok and record.finish_reason == "length" and record.http_status == 200
    assert record.output_tokens == record.output_tokens_usage == record.output_tokens_tokenizer == 20
    assert record.output_tokens_source == "usage" and record.chunks == 20
    assert record.ttfb_ms < record.ttft_ms == record.ttfvt_ms < record.e2e_ms <= record.total_ms
    assert 49.7 < record.ttft_ms < 51.5 + late  # never early; late only by what the mock measured
    assert abs(record.tpot_ms - 5) < 0.5 + late / 19 and abs(record.itl_mean_ms - 5) < 0.5 + late / 19
    assert record.itl_max_ms < 8 + late
    assert record.input_tokens > 0 and record.tokens_per_s > 0


def test_output_tokens_fall_back_to_the_tokenizer_without_usage(mock):
    record = run(mock.url, body=chat_body(stream_options=None, max_tokens=30))
    assert record.ok and record.output_tokens_usage is None
    assert record.output_tokens_source == "tokenizer" and record.output_tokens == 30


def test_reasoning_model_ttft_counts_reasoning_ttfvt_waits_for_content(mock):
    record, late = late_ms(mock, lambda: run(mock.url, body=chat_body(model="mock-reasoner", max_tokens=100)))
    assert record.ok and record.reasoning_tokens == 64
    assert abs(record.ttfvt_ms - record.ttft_ms - 64 * 5) < 3 + late


def test_tool_call_fragments_are_output(mock):
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}
    record = run(mock.url, body=chat_body(tools=[tool], tool_choice="required"))
    assert record.ok and record.finish_reason == "tool_calls"
    assert record.ttft_ms is not None and record.ttfvt_ms is None
    assert record.output_tokens == record.output_tokens_usage


def test_legacy_completions_format(mock):
    body = json.dumps({"model": "mock-llm", "prompt": "hi", "stream": True, "max_tokens": 12,
                       "stream_options": {"include_usage": True}}).encode()
    record = run(mock.url, body=body, path="/v1/completions", fmt=OpenAICompletions())
    assert record.ok and record.output_tokens == 12 == record.output_tokens_tokenizer


@pytest.mark.parametrize(("fault", "error_type", "needle"), [
    ("http_503", "http_status", "HTTP 503 Service Unavailable: The server is overloaded"),
    ("http_429", "http_status", "HTTP 429"),
    ("error_event", "sse_error", "The server had an error while generating"),
    ("truncate", "truncated", "stream ended without finish_reason or [DONE] after 4 output chunks"),
    ("disconnect", "truncated", "connection reset by peer after 4 output chunks"),
    ("malformed", "malformed", "chunk is not valid JSON"),
])
def test_failure_classes_keep_partial_timings(mock, fault, error_type, needle):
    record, late = late_ms(mock, lambda: run(mock.url, fault))
    assert (record.status, record.error_type) == ("error", error_type)
    assert needle in record.error
    if error_type == "http_status":
        assert record.http_status == int(fault[-3:]) and record.ttft_ms is None and record.ttfb_ms > 0
    else:
        # e2e kept; equal to TTFT only when a late read found all 4 chunks waiting (one kernel stamp)
        assert record.chunks == 4 and 49.7 < record.ttft_ms < 51.5 + late and record.e2e_ms >= record.ttft_ms
        assert record.tpot_ms is not None


def test_timeout_before_first_token(mock):
    record = run(mock.url, "stall", timeouts=Timeouts(first_token_s=0.3))
    assert record.error_type == "timeout_first_token" and "within 0.3 s" in record.error
    assert record.ttfb_ms is not None and record.ttft_ms is None


def test_stall_between_chunks(start_mock):
    mock = start_mock("--ttft-ms", "20", "--itl-ms", "20", "--config", "tests/data/mock-fast-stall.yaml")
    # the slow fault stretches ITL to 200 ms: a 100 ms stall limit trips after the first token
    record = run(mock.url, "slow", timeouts=Timeouts(stall_s=0.1))
    assert record.error_type == "stall" and record.chunks == 1 and record.ttft_ms is not None


def test_total_timeout(mock):
    record = run(mock.url, body=chat_body(max_tokens=200), timeouts=Timeouts(total_s=0.3))
    assert record.error_type == "timeout_total" and 40 < record.chunks < 60


def test_connect_error():
    record = run("http://127.0.0.1:1")
    assert record.error_type == "connect" and "refused" in record.error and record.ttfb_ms is None


def test_connection_is_reused_between_requests(mock):
    conn = Connection(Target.parse(mock.url), 5)
    first = stream_request(conn, "/v1/chat/completions", chat_body(), HEADERS, OpenAIChat(), Timeouts(), Record())
    second = stream_request(conn, "/v1/chat/completions", chat_body(), HEADERS, OpenAIChat(), Timeouts(), Record())
    conn.close()
    assert first.ok and second.ok and first.connect_ms is not None and second.connect_ms is None


# -- every SSE form, from a server that writes exactly the given bytes at given instants -------
def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def c(text: str, finish: str | None = None) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]}).encode()


FORMS = {  # name -> list of (delay before the write in s, bytes of the body)
    "no-space-after-colon": [(0.05, b"data:" + c("Hello") + b"\n\n"), (0.02, b"data:" + c(" world", "stop") +
                                                                        b"\n\ndata:[DONE]\n\n")],
    "crlf-line-endings": [(0.05, b"data: " + c("Hello") + b"\r\n\r\n"),
                          (0.02, b"data: " + c(" world", "stop") + b"\r\n\r\ndata: [DONE]\r\n\r\n")],
    "comments-and-fields": [(0.0, b": keep-alive\n\n"), (0.05, b"event: message\nid: 1\ndata: " + c("Hello") +
                                                         b"\n\n: ping\n\n"),
                            (0.02, b"data: " + c(" world", "stop") + b"\n\ndata: [DONE]\n\n")],
    "several-events-in-one-read": [(0.05, b"data: " + c("Hello") + b"\n\ndata: " + c(" world") + b"\n\n"),
                                   (0.02, b"data: " + c("", "stop") + b"\n\ndata: [DONE]\n\n")],
    "event-split-across-reads": [(0.03, b"data: " + c("Hello")[:10]), (0.02, c("Hello")[10:] + b"\n\n"),
                                 (0.02, b"data: " + c(" world", "stop") + b"\n\ndata: [DONE]\n\n")],
    "utf8-split-across-reads": [(0.03, b"data: " + c("你好")[:-8]),
                                (0.02, c("你好")[-8:] + b"\n\n"),
                                (0.02, b"data: " + c(" world", "stop") + b"\n\ndata: [DONE]\n\n")],
}
FIRST_OUTPUT_AT = {"several-events-in-one-read": 0.05, "comments-and-fields": 0.05,
                   "no-space-after-colon": 0.05, "crlf-line-endings": 0.05}


@pytest.fixture
def sse_server():
    """A raw HTTP server that answers every request with the current FORM's writes, timed."""
    state = {"writes": []}

    def handle(sock, _addr):
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(65536)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for delay, data in state["writes"]:
            gevent.sleep(delay)
            sock.sendall(chunk(data))
        sock.sendall(b"0\r\n\r\n")
        gevent.sleep(0.05)
        sock.close()

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    yield server, state
    server.stop()


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_sse_form_is_parsed_and_timed(sse_server, form):
    server, state = sse_server
    state["writes"] = FORMS[form]
    start = time.monotonic()
    record = run(f"http://127.0.0.1:{server.server_port}")
    assert record.ok, record.error
    text = "你好 world" if form.startswith("utf8") else "Hello world"
    assert record.output_tokens_tokenizer == count_tokens(text) and record.finish_reason == "stop"
    # TTFT is the write that completed the first content event, not an earlier partial one
    complete_at = sum(d for d, _ in FORMS[form][:2]) if "split" in form else FIRST_OUTPUT_AT[form]
    assert complete_at * 1000 - 1 < record.ttft_ms < complete_at * 1000 + 15, record.ttft_ms
    assert time.monotonic() - start < 2
