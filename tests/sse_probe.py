"""A minimal raw-socket HTTP/1.1 + SSE reader that timestamps every event as it arrives.

Independent of tokenstorm's own client on purpose: the mock's pacing is checked with a reader
that shares no code with what the mock is later used to measure. gevent sockets, no monkey
patching, so many streams can be timed at once from the test process. Arrivals are the kernel's
receive timestamps (SO_TIMESTAMPNS), so a test process too busy to read at once still dates each
event when it reached the machine, not when the test got round to it.
"""

from __future__ import annotations

import itertools
import json
import struct
import time
from dataclasses import dataclass, field

from gevent import socket

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")


def _recv(sock) -> tuple[bytes, float]:
    """(data, arrival on the monotonic clock): the kernel's stamp when it gave one, else now."""
    data, ancdata, _flags, _addr = sock.recvmsg(65536, socket.CMSG_SPACE(_TIMESPEC.size))
    now = time.monotonic()
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(value)
            stamped = now - (time.time() - (sec + nsec * 1e-9))  # realtime stamp -> monotonic
            return data, min(stamped, now)
    return data, now


@dataclass
class Probe:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    t_sent: float = 0.0
    t_headers: float = 0.0
    events: list[tuple[float, bytes]] = field(default_factory=list)  # (arrival, data field)
    body: bytes = b""
    complete: bool = False  # saw the chunked terminator
    error: str = ""

    def json_events(self) -> list[dict]:
        return [json.loads(d) for _, d in self.events if d != b"[DONE]"]

    def content_times(self) -> list[float]:
        """Arrival times of events carrying generated output (content, reasoning, tool calls)."""
        out = []
        for t, data in self.events:
            if data == b"[DONE]":
                continue
            try:
                chunk = json.loads(data)
            except ValueError:
                continue
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls") \
                        or choice.get("text"):
                    out.append(t)
                    break
        return out

    @property
    def ttft(self) -> float:
        return self.content_times()[0] - self.t_sent

    def itls(self) -> list[float]:
        times = self.content_times()
        return [b - a for a, b in itertools.pairwise(times)]


def request(port: int, body: dict | bytes | None, path: str = "/v1/chat/completions", method: str = "POST",
            headers: dict[str, str] | None = None, key: str | None = "mock-key", timeout: float = 30.0,
            close_after_events: int | None = None) -> Probe:
    payload = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: text/event-stream",
             f"Content-Length: {len(payload)}", "Content-Type: application/json", "Connection: close"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
    probe = Probe()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    try:
        probe.t_sent = time.monotonic()
        sock.sendall(raw)
        _read(sock, probe, close_after_events)
    except OSError as exc:
        probe.error = f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()
    return probe


def _read(sock, probe: Probe, close_after_events: int | None) -> None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data, probe.t_headers = _recv(sock)
        if not data:
            probe.error = "closed before headers"
            return
        buf += data
    head, buf = buf.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    probe.status = int(status_line.split()[1])
    probe.headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    chunked = probe.headers.get("transfer-encoding", "").lower() == "chunked"
    length = int(probe.headers.get("content-length", "-1"))
    body = b""
    sse = b""
    now = probe.t_headers
    while True:
        if chunked:
            while True:  # de-chunk whatever is complete in buf
                if b"\r\n" not in buf:
                    break
                size_line, rest = buf.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                if len(rest) < size + 2:
                    break
                if size == 0:
                    probe.complete = True
                    probe.body = body
                    return
                chunk, buf = rest[:size], rest[size + 2:]
                body += chunk
                sse += chunk
                while b"\n\n" in sse:
                    event, sse = sse.split(b"\n\n", 1)
                    for line in event.split(b"\n"):
                        if line.startswith(b"data: "):
                            probe.events.append((now, line[6:]))
                    if close_after_events is not None and len(probe.events) >= close_after_events:
                        probe.body = body
                        return
        else:
            body += buf
            buf = b""
            if 0 <= length <= len(body):
                probe.complete = True
                probe.body = body[:length]
                return
        data, now = _recv(sock)
        if not data:
            probe.body = body
            if not chunked and length < 0:
                probe.complete = True
            return
        buf += data
