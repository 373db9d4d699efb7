"""The SSE decoder: every valid form of the event stream, split anywhere, agrees with sseclient-py."""

from __future__ import annotations

import random
import time

import pytest
import sseclient

from tokenstorm.core.sse import MAX_EVENT_BYTES, SSEDecoder, SSEError

STREAMS = {
    "openai": b'data: {"a": 1}\n\ndata: {"b": 2}\n\ndata: [DONE]\n\n',
    "no-space": b'data:{"a": 1}\n\ndata:[DONE]\n\n',
    "crlf": b'data: {"a": 1}\r\n\r\ndata: {"b": 2}\r\n\r\n',
    "cr-only": b'data: {"a": 1}\r\rdata: x\r\r',
    "comments": b': keep-alive\n\ndata: {"a": 1}\n: another\n\n:\n\n',
    "fields": b'event: message_start\nid: 7\nretry: 1500\ndata: {"a": 1}\n\nevent: error\ndata: {"e": 1}\n\n',
    "multiline": b"data: line one\ndata: line two\n\ndata:\n\n",
    "bom": b'\xef\xbb\xbfdata: {"a": 1}\n\n',
    "utf8": 'data: {"c": "你好世界 👋"}\n\ndata: {"c": "é"}\n\n'.encode(),
    "field-no-colon": b"data\n\nevent\ndata: x\n\n",
    "unterminated-last": b"data: a\n\ndata: never dispatched",
}


def reference(stream: bytes) -> list[tuple[str, bytes]]:
    client = sseclient.SSEClient(iter([stream]))
    return [(e.event, e.data.encode()) for e in client.events()]


def decode(pieces: list[bytes]) -> list[tuple[str, bytes]]:
    decoder = SSEDecoder()
    out = []
    for piece in pieces:
        out.extend(decoder.feed(piece))
    out.extend(decoder.close())
    return out


# Where sseclient-py departs from the WHATWG rules, the rules win: a leading BOM is skipped,
# and an event cut off by the end of the stream (no blank line) is not dispatched.
SPEC_OVER_SSECLIENT = {"bom": [("message", b'{"a": 1}')], "unterminated-last": [("message", b"a")]}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_whole_stream_matches_sseclient(name):
    stream = STREAMS[name]
    expected = SPEC_OVER_SSECLIENT.get(name) or reference(stream)
    assert decode([stream]) == expected
    if name == "openai":
        assert expected[-1] == ("message", b"[DONE]")


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_any_split_gives_the_same_events(name):
    stream = STREAMS[name]
    expected = decode([stream])
    rng = random.Random(name)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(stream)), k=min(len(stream) - 1, rng.randint(1, 6))))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        assert decode(pieces) == expected, pieces
    # byte by byte, including a CRLF split between two reads and a UTF-8 character split in three
    assert decode([bytes([b]) for b in stream]) == expected


def test_event_type_and_last_id():
    decoder = SSEDecoder()
    events = decoder.feed(STREAMS["fields"])
    assert events == [("message_start", b'{"a": 1}'), ("error", b'{"e": 1}')]
    assert decoder.last_event_id == "7" and decoder.retry_ms == 1500


def test_events_are_reported_by_the_read_that_completes_them():
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a"') == []
    assert decoder.feed(b": 1}\n") == []
    assert decoder.feed(b"\n") == [("message", b'{"a": 1}')]


def test_a_long_line_split_over_many_reads_is_one_event_in_linear_time():
    line = b"data: " + b"x" * (4 << 20) + b"\n\n"
    decoder = SSEDecoder()
    started = time.perf_counter()
    events = [e for i in range(0, len(line), 4096) for e in decoder.feed(line[i:i + 4096])]
    assert events == [("message", b"x" * (4 << 20))]
    assert time.perf_counter() - started < 2  # joining each read onto the buffer was quadratic


def test_a_line_beyond_the_bound_is_an_error_not_a_growing_buffer():
    decoder = SSEDecoder()
    with pytest.raises(SSEError, match="MiB"):
        for _ in range(MAX_EVENT_BYTES // 65536 + 2):
            decoder.feed(b"x" * 65536)
