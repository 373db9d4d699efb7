"""Incremental Server-Sent Events decoder, fed byte chunks as they arrive.

Implements the WHATWG event-stream parsing rules: lines end in CRLF, LF or CR (a CR at the
end of one chunk and an LF at the start of the next are one line end); `field:value` with
one optional space after the colon; a line without a colon is a field with an empty value;
lines starting with ':' are comments; `data` lines of one event are joined with LF; a blank
line dispatches the event; a UTF-8 BOM at the very start is skipped. Events are returned as
(event type, data bytes) with the data left undecoded (JSON parsing is the format's job).

Why not sseclient-py in the hot path: bench/sse_decoders.py measures both on the same bytes;
this decoder splits each read once instead of running a regex and building an Event object
per event, and it reports which read completed each event, which is what the timing needs.
sseclient-py remains the reference the tests compare this decoder against.
"""

from __future__ import annotations

Event = tuple[str, bytes]

MAX_EVENT_BYTES = 16 << 20  # a line or an event beyond this is an error, not a growing buffer
MAX_EVENT_LINES = 65536


class SSEError(ValueError):
    """The stream broke a bound of the decoder (a line or an event too large)."""


class SSEDecoder:
    __slots__ = ("_buf", "_data", "_event", "_pending_cr", "_started", "_tail", "_tail_size", "last_event_id",
                 "retry_ms")

    def __init__(self) -> None:
        self._buf = b""
        self._tail: list[bytes] = []  # reads without a line end, joined once the line ends (linear)
        self._tail_size = 0
        self._data: list[bytes] = []
        self._event = ""
        self._pending_cr = False
        self._started = False
        self.last_event_id = ""
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        """The events completed by `chunk` (possibly none)."""
        if not self._started:  # a UTF-8 BOM may open the stream, possibly split across reads
            chunk = self._buf + chunk
            self._buf = b""
            if len(chunk) < 3 and b"\xef\xbb\xbf".startswith(chunk):
                self._buf = chunk
                return []
            self._started = True
            if chunk.startswith(b"\xef\xbb\xbf"):
                chunk = chunk[3:]
        if self._pending_cr:  # CRLF split over two reads
            self._pending_cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if self._buf and b"\n" not in chunk and b"\r" not in chunk:  # a long line goes on
            self._tail.append(chunk)
            self._tail_size += len(chunk)
            if len(self._buf) + self._tail_size > MAX_EVENT_BYTES:
                raise SSEError(f"an SSE line larger than {MAX_EVENT_BYTES >> 20} MiB")
            return []
        if self._tail:
            buf = b"".join([self._buf, *self._tail, chunk])
            self._tail, self._tail_size = [], 0
        else:
            buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            if buf.endswith(b"\r"):
                self._pending_cr = True
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        self._buf = lines.pop()  # an incomplete last line waits for the next read
        events: list[Event] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append((self._event or "message", b"\n".join(self._data)))
                self._data = []
                self._event = ""
                continue
            if line[0] == 58:  # b":" comment
                continue
            # fast path: the overwhelmingly common `data: ...` line
            if line.startswith(b"data: "):
                self._data.append(line[6:])
                continue
            name, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
            elif name == b"id":
                if b"\x00" not in value:
                    self.last_event_id = value.decode("utf-8", "replace")
            elif name == b"retry" and value.isdigit():
                self.retry_ms = int(value)
        if len(self._buf) > MAX_EVENT_BYTES or (self._data and (len(self._data) > MAX_EVENT_LINES or sum(
                map(len, self._data)) > MAX_EVENT_BYTES)):
            raise SSEError(f"an SSE line or event larger than {MAX_EVENT_BYTES >> 20} MiB")
        return events

    def close(self) -> list[Event]:
        """At the end of the stream: an event without its final blank line is discarded (spec)."""
        self._buf = b""
        self._tail, self._tail_size = [], 0
        self._data = []
        return []
