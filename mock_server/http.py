"""A small HTTP/1.1 server on gevent's StreamServer, built for an exact streaming target.

Why not gevent.pywsgi: measured on this machine, pywsgi spends ~250 us of CPU per request
(email-module header parsing, WSGI environ), so a burst of 100 simultaneous requests started
the last one ~25 ms late and the median TTFT seen by clients was ~10 ms over the configured
value. Here a request costs a fraction of that, and, more importantly, each request carries
the kernel's receive timestamp (SO_TIMESTAMPNS): deadlines count from when the request
reached the machine, not from when a busy event loop got round to parsing it, so a burst
does not skew TTFT. It also gives the mock direct control of the wire: headers flushed
before the first token, one send per chunk, a clean chunked terminator or a TCP reset.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from gevent.server import StreamServer

from tokenstorm.core.clock import realtime_to_monotonic

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_CMSG_SPACE = socket.CMSG_SPACE(16)
MAX_HEAD = 64 * 1024
READ_SIZE = 65536
REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 413: "Payload Too Large",
           431: "Request Header Fields Too Large", 429: "Too Many Requests", 500: "Internal Server Error",
           501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported"}


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    arrival: float  # time.monotonic() of when the request reached this machine
    sock: socket.socket | None = None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    # Sent with chunked encoding, each item flushed at once; the first item (b"" for none) goes
    # with the headers and must be produced without waiting.
    stream: Iterator[bytes] | None = None
    declared_length: int | None = None  # announce this Content-Length, send `body`, then cut (a fault)


class AbortConnection(Exception):
    """Raised by a stream to end the connection without a terminator; reset=True sends a TCP RST."""

    def __init__(self, reset: bool = False):
        super().__init__("connection aborted by the application")
        self.reset = reset


class _BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


Handler = Callable[[Request], Response]
ErrorBody = Callable[[int, str], Response]


class _Connection:
    """Reads requests off one socket, with the receive timestamp of their bytes."""

    def __init__(self, sock: socket.socket, max_body: int):
        self.sock = sock
        self.max_body = max_body
        self.buf = b""
        self.arrival = 0.0

    def _recv(self) -> bytes:
        data, ancdata, _flags, _addr = self.sock.recvmsg(READ_SIZE, _CMSG_SPACE)
        now = time.monotonic()
        arrival = now
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
                sec, nsec = struct.unpack("qq", payload[:16])
                # Realtime -> monotonic; clamp against clock steps.
                stamped = realtime_to_monotonic(sec + nsec * 1e-9, now)
                arrival = min(now, max(stamped, now - 1.0))
        if not self.buf:
            self.arrival = arrival
        return data

    def read_request(self) -> tuple[Request, bool] | None:
        """The next request and whether to keep the connection open; None at a clean EOF."""
        if self.buf:  # pipelined: it arrived while the previous answer was being written
            self.arrival = time.monotonic()
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise _BadRequest(431, f"request head is larger than {MAX_HEAD} bytes")
            data = self._recv()
            if not data:
                if self.buf.strip():
                    raise _BadRequest(400, "connection closed in the middle of the request head")
                return None
            self.buf += data
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        arrival = self.arrival
        lines = head.decode("latin-1").split("\r\n")
        while lines and not lines[0]:  # tolerate blank lines between requests (RFC 9112 2.2)
            lines.pop(0)
        parts = lines[0].split(" ") if lines else []
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            if len(parts) == 3 and parts[2].startswith("HTTP/"):
                raise _BadRequest(505, f"HTTP version {parts[2]} is not supported; use HTTP/1.1")
            raise _BadRequest(400, "malformed request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(400, f"malformed header line {line[:60]!r}")
            key = name.lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        path, _, query = target.partition("?")
        keep_alive = (headers.get("connection", "").lower() != "close") if version == "HTTP/1.1" \
            else headers.get("connection", "").lower() == "keep-alive"
        body = self._read_body(headers)
        return Request(method, path, query, headers, body, arrival, self.sock), keep_alive

    def _read_body(self, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._continue(headers)
            return self._read_chunked()
        raw_length = headers.get("content-length")
        if raw_length is None:
            return b""
        if not raw_length.isdigit():
            raise _BadRequest(400, f"Content-Length {raw_length!r} is not a number")
        length = int(raw_length)
        if length > self.max_body:
            raise _BadRequest(413, f"request body of {length} bytes is over the limit of {self.max_body} bytes")
        if len(self.buf) < length:
            self._continue(headers)
        while len(self.buf) < length:
            data = self._recv()
            if not data:
                raise _BadRequest(400, "connection closed before the whole body arrived")
            self.buf += data
        body, self.buf = self.buf[:length], self.buf[length:]
        return body

    def _continue(self, headers: dict[str, str]) -> None:
        if headers.get("expect", "").lower() == "100-continue":
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self.buf:
                self._more()
            size_line, self.buf = self.buf.split(b"\r\n", 1)
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise _BadRequest(400, "malformed chunk size in the request body") from None
            if size == 0:
                while b"\r\n" not in self.buf:  # skip trailers up to the final empty line
                    self._more()
                while not self.buf.startswith(b"\r\n"):
                    _, self.buf = self.buf.split(b"\r\n", 1)
                    while b"\r\n" not in self.buf:
                        self._more()
                self.buf = self.buf[2:]
                return body
            if len(body) + size > self.max_body:
                raise _BadRequest(413, f"request body is over the limit of {self.max_body} bytes")
            while len(self.buf) < size + 2:
                self._more()
            body += self.buf[:size]
            self.buf = self.buf[size + 2:]

    def _more(self) -> None:
        data = self._recv()
        if not data:
            raise _BadRequest(400, "connection closed inside a chunked request body")
        self.buf += data


def _head(status: int, headers: list[tuple[str, str]], extra: str) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode("latin-1")


def _send_all(sock: socket.socket, data: bytes) -> None:
    """sendall without gevent's per-call getsockopt(SO_SNDBUF) syscall (a third of the mock's CPU
    when streaming): one direct send, and gevent's cooperative sendall only for what is left."""
    raw = getattr(sock, "_sock", None)
    if raw is None:
        sock.sendall(data)
        return
    try:
        sent = raw.send(data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def _close(sock: socket.socket, reset: bool) -> None:
    if reset:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class HTTPServer(StreamServer):
    """Serves `handler` on a listening socket; `error` builds the body of protocol errors."""

    def __init__(self, listener: socket.socket, handler: Handler, error: ErrorBody, max_body: int):
        super().__init__(listener, self._serve_connection)
        self.app_handler = handler
        self.error = error
        self.max_body = max_body

    def _serve_connection(self, sock: socket.socket, _address) -> None:
        with contextlib.suppress(OSError):
            # One small write per token: without NODELAY, Nagle + delayed ACK hold chunks ~40 ms.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        conn = _Connection(sock, self.max_body)
        reset = False
        try:
            while True:
                try:
                    parsed = conn.read_request()
                except _BadRequest as exc:
                    response = self.error(exc.status, str(exc))
                    sock.sendall(_head(exc.status, response.headers,
                                       f"Content-Length: {len(response.body)}\r\nConnection: close\r\n")
                                 + response.body)
                    return
                if parsed is None:
                    return
                request, keep_alive = parsed
                try:
                    response = self.app_handler(request)
                except (AbortConnection, OSError):
                    raise
                except Exception:  # a bug of ours: say so loudly, answer 500, keep serving others
                    traceback.print_exc()
                    response = self.error(500, "the mock failed while handling this request")
                    keep_alive = False
                if not self._send(sock, response, keep_alive):
                    return
        except AbortConnection as exc:
            reset = exc.reset
        except OSError:
            pass  # the client went away; nothing to answer
        except Exception:  # a bug in a stream after its headers went out: log it, cut the connection
            traceback.print_exc()
        finally:
            _close(sock, reset)

    @staticmethod
    def _send(sock: socket.socket, response: Response, keep_alive: bool) -> bool:
        connection = "" if keep_alive else "Connection: close\r\n"
        if response.stream is None:
            length = len(response.body) if response.declared_length is None else response.declared_length
            _send_all(sock, _head(response.status, response.headers,
                                  f"Content-Length: {length}\r\n{connection}") + response.body)
            if length != len(response.body):
                raise AbortConnection()
            return keep_alive
        stream = response.stream
        try:
            # The first item goes out with the headers at once; producing it must not wait. Pulling it
            # before any socket write also starts the generator, so its cleanup always runs.
            first = next(stream, b"")
            head = _head(response.status, response.headers, f"Transfer-Encoding: chunked\r\n{connection}")
            _send_all(sock, head + (b"%x\r\n%b\r\n" % (len(first), first) if first else b""))
            for piece in stream:
                if piece:
                    _send_all(sock, b"%x\r\n%b\r\n" % (len(piece), piece))
            _send_all(sock, b"0\r\n\r\n")
        finally:
            stream.close()  # runs the stream's cleanup (slot release) even when the client left
        return keep_alive
