"""The client against a server that misbehaves on purpose: every request ends as exactly one
record with the class a user expects and a message naming what the server did, within its
timeouts, never ok by accident and never a traceback."""

from __future__ import annotations

import collections
import csv
import itertools
import json
import socket
import threading
import time

import pytest
from hostile_server import CASES, CHUNK_HEAD, ROTATION, HostileServer, chunk, delta, sse, valid_stream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from locust_procs import run_locust

from tokenstorm.client.httpclient import Connection, Target
from tokenstorm.client.stream import Timeouts, stream_request
from tokenstorm.core.formats import OpenAIChat
from tokenstorm.core.records import Record

HEADERS = [("Authorization", "Bearer k"), ("Content-Type", "application/json")]
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
TIMEOUTS = Timeouts(connect_s=2, first_token_s=3, stall_s=3, total_s=6)


@pytest.fixture(scope="module")
def server():
    srv = HostileServer()
    yield srv
    srv.close()


def send(url: str, path: str = "/v1/chat/completions", body: bytes = BODY, fmt=None,
         conn: Connection | None = None, timeouts: Timeouts = TIMEOUTS) -> tuple[Record, float]:
    """(record, seconds it took) of one streamed request."""
    own = conn is None
    conn = conn or Connection(Target.parse(url), timeouts.connect_s)
    t0 = time.monotonic()
    try:
        record = stream_request(conn, path, body, HEADERS, fmt or OpenAIChat(), timeouts, Record())
    finally:
        if own:
            conn.close()
    return record, time.monotonic() - t0


@pytest.mark.parametrize("case", list(CASES))
def test_each_misbehaviour_is_one_failed_record_of_its_class(server, case):
    _, expected, word = CASES[case]
    record, took = send(server.url, f"/case/{case}/v1/chat/completions")
    assert (record.status, record.error_type) == ("error", expected), record.error
    assert word.lower() in record.error.lower(), record.error
    assert took < TIMEOUTS.total_s, "the failure must not wait for a timeout"


def test_a_413_sent_while_the_body_is_still_uploading_is_the_servers_answer(server):
    record, _ = send(server.url, "/early413/v1/chat/completions", body=b'{"x": "' + b"a" * (8 << 20) + b'"}')
    assert (record.error_type, record.http_status) == ("http_status", 413), record.error
    assert "too large" in record.error


def test_usage_that_is_not_a_count_is_ignored(server):
    server.play(valid_stream(["one", " two"], usage={"prompt_tokens": "5", "completion_tokens": True}))
    record, _ = send(server.url)
    assert record.ok, record.error
    assert record.output_tokens_usage is None and record.input_tokens is None
    assert (record.output_tokens_source, record.output_tokens) == ("tokenizer", 2)


def test_a_kept_alive_connection_dropped_after_the_send_fails_the_request_and_is_not_replayed(server):
    def answer_and_keep(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(b"".join(valid_stream(["a"])))
        return True  # read the next request on this connection ...

    def drop(conn: socket.socket, head: bytes) -> bool:
        return False  # ... and hang up without an answer

    server.play(answer_and_keep)
    server.play(drop)
    conn = Connection(Target.parse(server.url), 2)
    before = server.requests
    try:
        first, _ = send(server.url, conn=conn)
        second, _ = send(server.url, conn=conn)
    finally:
        conn.close()
    assert first.ok, first.error
    assert (second.error_type, second.status) == ("truncated", "error")
    assert "not sent again" in second.error
    assert server.requests - before == 2  # the second request reached the server once


def test_a_kept_alive_connection_the_server_closed_while_idle_is_replaced_before_sending(server):
    closed = threading.Event()

    def answer_then_close(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(b"".join(valid_stream(["a"])))
        conn.shutdown(socket.SHUT_RDWR)
        closed.set()
        return False

    server.play(answer_then_close)
    server.play(valid_stream(["b"]))
    conn = Connection(Target.parse(server.url), 2)
    try:
        first, _ = send(server.url, conn=conn)
        assert closed.wait(5)
        time.sleep(0.05)  # the FIN crosses loopback
        second, _ = send(server.url, conn=conn)
    finally:
        conn.close()
    assert first.ok and second.ok, (first.error, second.error)
    assert first.connect_ms is not None and second.connect_ms is not None  # a new connection, not a replay


def test_https_aimed_at_a_plain_http_port_fails_within_the_connect_timeout(server):
    started = time.monotonic()
    record, _ = send(server.url.replace("http://", "https://"), timeouts=Timeouts(connect_s=1, first_token_s=30))
    assert record.error_type == "connect" and "TLS handshake" in record.error, record.error
    assert time.monotonic() - started < 5


class BlocksTheLoopOnce(OpenAIChat):
    """Blocks the whole event loop 1.5 s on the first event, as a stuck greenlet would."""

    def __init__(self) -> None:
        self.blocked = False

    def handle(self, event, data, t, account) -> None:
        if not self.blocked:
            self.blocked = True
            time.sleep(1.5)
        super().handle(event, data, t, account)


def test_a_read_late_by_more_than_a_second_keeps_the_kernel_arrival_time(server):
    sent_at: list[float] = []

    def paced(conn: socket.socket, head: bytes) -> bool:
        t0 = time.monotonic()
        conn.sendall(CHUNK_HEAD + chunk(sse({**delta(), "choices": [{"index": 0, "delta": {"role": "assistant"}}]})))
        time.sleep(0.1)
        sent_at.append(time.monotonic() - t0)
        conn.sendall(chunk(sse(delta("first"))))
        for word in ("second", "third"):
            time.sleep(0.05)
            conn.sendall(chunk(sse(delta(" " + word))))
        conn.sendall(chunk(sse(delta(finish="stop"))) + chunk(sse(b"[DONE]")) + b"0\r\n\r\n")
        return False

    server.play(paced)
    record, took = send(server.url, fmt=BlocksTheLoopOnce())
    assert record.ok, record.error
    assert took > 1.5
    # the first token reached the machine ~100 ms after the headers; the loop read it 1.4 s later
    assert record.ttft_ms < record.ttfb_ms + sent_at[0] * 1000 + 300, (record.ttft_ms, record.ttfb_ms)


def test_a_locust_run_against_every_misbehaviour_writes_one_record_per_request(server, tmp_path):
    per_case = 2
    total = per_case * len(ROTATION)
    before = server.requests
    result = run_locust(f"{server.url}/rotate", "-u", "3", "-r", "3", "--total-requests", str(total),
                        "--model", "m", "--results-dir", str(tmp_path), "--first-token-timeout", "3",
                        "--stall-timeout", "3", "-t", "90s", timeout=150)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    with open(next(tmp_path.rglob("requests-local.csv")), newline="") as f:
        rows = list(csv.DictReader(f))
    seen = collections.Counter((r["error_type"], r["error"][:70]) for r in rows)
    assert len(rows) == total == server.requests - before, seen  # each request reached the server once
    assert all(row["status"] == "error" for row in rows)
    expected = collections.Counter(CASES[name][1] for name in ROTATION for _ in range(per_case))
    assert collections.Counter(row["error_type"] for row in rows) == expected


# -- properties: random splits and corruptions of a valid stream ------------------------------
WORDS = ["Hello", ",", " world", " é", "\u4e16\u754c", " \U0001f600", " end"]
VALID = b"".join(valid_stream(WORDS))
HEAD_END = VALID.index(b"\r\n\r\n") + 4
# a byte that is never part of chunked framing: not a hex digit, CR, LF, ';', space or tab
NOT_FRAMING = st.sampled_from(b"!#$%&*+<>?@^_`|~gxyzGXYZ")


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, *(c % (len(data) + 1) for c in cuts), len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(VALID)), max_size=12))
def test_any_split_of_a_valid_stream_is_read_exactly(server, cuts):
    server.play(split_at(VALID, cuts))
    record, _ = send(server.url)
    assert record.ok, record.error
    assert record.chunks == len(WORDS) and record.finish_reason == "stop"


@PROPERTY
@given(end=st.integers(min_value=0, max_value=len(VALID) - 1), cuts=st.lists(st.integers(0, len(VALID)), max_size=6))
def test_a_stream_cut_anywhere_is_never_ok(server, end, cuts):
    server.play(split_at(VALID[:end], cuts))
    record, took = send(server.url)
    assert record.status == "error" and record.error_type in ("truncated", "protocol"), record.error
    assert took < TIMEOUTS.total_s


@PROPERTY
@given(position=st.integers(min_value=HEAD_END, max_value=len(VALID) - 1), byte=NOT_FRAMING,
       delete=st.booleans(), cuts=st.lists(st.integers(0, len(VALID)), max_size=6))
def test_a_stream_with_a_byte_added_or_lost_is_never_ok(server, position, byte, delete, cuts):
    corrupted = VALID[:position] + (b"" if delete else bytes([byte])) + VALID[position + delete:]
    server.play(split_at(corrupted, cuts))
    record, took = send(server.url)
    assert record.status == "error", f"a corrupted stream was recorded ok: {corrupted[position - 20:position + 20]!r}"
    assert took < TIMEOUTS.total_s


@PROPERTY
@given(garbage=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=6))
def test_random_bytes_after_valid_headers_end_in_one_failed_record(server, garbage, cuts):
    server.play(split_at(CHUNK_HEAD + garbage, cuts))
    record, took = send(server.url)
    assert record.status == "error" and record.error_type, record.error
    assert took < TIMEOUTS.total_s
