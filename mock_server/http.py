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
import errno
import math
import re
import resource
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import gevent
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


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII digits only: int() and str.isdigit() take "²" too
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
MAX_LINE = 8192  # the request line, a header line, a chunk-size line, a trailer line
YIELD_EVERY_CHUNKS = 1024  # a body of many tiny chunks gives the other greenlets a turn this often


@dataclass
class Timeouts:
    """Seconds a connection may take: idle between requests, to send a request head, to send its body,
    and to take a write of the answer (a client that stops reading: the connection is closed and the
    slot freed)."""

    idle_s: float = 60.0
    header_s: float = 10.0
    body_s: float = 60.0
    write_s: float = 60.0


class _Timeout(Exception):
    def __init__(self, phase: str):
        super().__init__(phase)
        self.phase = phase


class _Connection:
    """Reads requests off one socket, with the receive timestamp of their bytes.

    The buffer is a bytearray read from a moving offset, so parsing is linear in the bytes
    received however they are split (a body of 1-byte chunks included); every line is bounded."""

    def __init__(self, sock: socket.socket, max_body: int, timeouts: Timeouts | None = None):
        self.sock = sock
        self.max_body = max_body
        self.timeouts = timeouts or Timeouts()
        self.buf = bytearray()
        self.pos = 0
        self.arrival = 0.0
        self.deadline = 0.0
        self.phase = "idle"
        self.on_phase: Callable[[_Connection, str], None] | None = None  # the server's registry
        self.shed = False

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        if self.on_phase is not None:
            self.on_phase(self, phase)

    def _recv(self) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _Timeout(self.phase)
        self.sock.settimeout(remaining)
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(READ_SIZE, _CMSG_SPACE)
        except TimeoutError:
            raise _Timeout(self.phase) from None
        now = time.monotonic()
        arrival = now
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
                sec, nsec = struct.unpack("qq", payload[:16])
                # Realtime -> monotonic; clamp against clock steps.
                stamped = realtime_to_monotonic(sec + nsec * 1e-9, now)
                arrival = min(now, max(stamped, now - 1.0))
        if self.pos >= len(self.buf):
            self.arrival = arrival
        return data

    def _fill(self, eof_message: str) -> None:
        data = self._recv()
        if not data:
            raise _BadRequest(400, eof_message)
        if self.pos > READ_SIZE and self.pos * 2 > len(self.buf):  # drop what was parsed (amortized linear)
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += data

    def _line(self, what: str, eof_message: str) -> bytes:
        """The next CRLF-terminated line (without the CRLF), at most MAX_LINE bytes."""
        scanned = 0  # bytes after self.pos already searched (the buffer may be compacted by _fill)
        while True:
            end = self.buf.find(b"\r\n", self.pos + scanned)
            if end >= 0:
                if end - self.pos > MAX_LINE:
                    break
                line = bytes(self.buf[self.pos:end])
                self.pos = end + 2
                return line
            if len(self.buf) - self.pos > MAX_LINE:
                break
            scanned = max(0, len(self.buf) - self.pos - 1)
            self._fill(eof_message)
        raise _BadRequest(400 if what != "header line" else 431, f"{what} longer than {MAX_LINE} bytes")

    def read_request(self) -> tuple[Request, bool] | None:
        """The next request and whether to keep the connection open; None at a clean EOF."""
        if self.pos < len(self.buf):  # pipelined: it arrived while the previous answer was being written
            self.arrival = time.monotonic()
        else:
            del self.buf[:]
            self.pos = 0
            self._set_phase("idle")
            self.deadline = time.monotonic() + self.timeouts.idle_s
            data = self._recv()
            if not data:
                return None
            self.buf += data
        self._set_phase("header")
        self.deadline = self.arrival + self.timeouts.header_s
        eof = "connection closed in the middle of the request head"
        line = self._line("request line", eof)
        while not line:  # tolerate blank lines between requests (RFC 9112 2.2)
            line = self._line("request line", eof)
        head_bytes = len(line)
        request_line = line.decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
            raise _BadRequest(400, "malformed request line")
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            if re.fullmatch(r"HTTP/[0-9]\.[0-9]", version) and not version.startswith("HTTP/1."):
                raise _BadRequest(505, f"HTTP version {version} is not supported; use HTTP/1.1")
            raise _BadRequest(400, f"HTTP version {version[:20]!r} is not supported; use HTTP/1.1")
        headers: dict[str, str] = {}
        while True:
            raw = self._line("header line", eof)
            if not raw:
                break
            head_bytes += len(raw) + 2
            if head_bytes > MAX_HEAD:
                raise _BadRequest(431, f"request head is larger than {MAX_HEAD} bytes")
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep or not _TOKEN.fullmatch(name):
                raise _BadRequest(400, f"malformed header line {raw[:60].decode('latin-1')!r}")
            key = name.lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        arrival = self.arrival
        path, _, query = target.partition("?")
        keep_alive = (headers.get("connection", "").lower() != "close") if version == "HTTP/1.1" \
            else headers.get("connection", "").lower() == "keep-alive"
        self.phase = "body"  # still a request being read, for the registry
        self.deadline = time.monotonic() + self.timeouts.body_s
        body = self._read_body(headers, version)
        self.sock.settimeout(self.timeouts.write_s)  # a write the client does not take within this fails
        self._set_phase("busy")
        return Request(method, path, query, headers, body, arrival, self.sock), keep_alive

    def _read_body(self, headers: dict[str, str], version: str) -> bytes:
        te = headers.get("transfer-encoding")
        raw_length = headers.get("content-length")
        if te is not None:
            if raw_length is not None:
                raise _BadRequest(400, "a request must not have both Content-Length and Transfer-Encoding")
            if te.strip().lower() != "chunked" or version != "HTTP/1.1":
                raise _BadRequest(400, f"Transfer-Encoding {te[:40]!r} is not supported; only chunked (HTTP/1.1)")
            self._continue(headers)
            return self._read_chunked()
        if raw_length is None:
            return b""
        values = {v.strip() for v in raw_length.split(",")}
        if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
            raise _BadRequest(400, f"Content-Length {raw_length[:40]!r} is not a number")
        length = int(next(iter(values)))
        if length > self.max_body:
            raise _BadRequest(413, f"request body of {length} bytes is over the limit of {self.max_body} bytes")
        if len(self.buf) - self.pos < length:
            self._continue(headers)
        while len(self.buf) - self.pos < length:
            self._fill("connection closed before the whole body arrived")
        body = bytes(self.buf[self.pos:self.pos + length])
        self.pos += length
        return body

    def _continue(self, headers: dict[str, str]) -> None:
        if headers.get("expect", "").lower() == "100-continue":
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _read_chunked(self) -> bytes:
        eof = "connection closed inside a chunked request body"
        body = bytearray()
        chunks = 0
        while True:
            size_line = self._line("chunk-size line", eof)
            digits = size_line.split(b";", 1)[0].strip(b" \t")
            if not _HEX.fullmatch(digits):
                raise _BadRequest(400, "malformed chunk size in the request body")
            size = int(digits, 16)
            if size == 0:
                break
            if len(body) + size > self.max_body:
                raise _BadRequest(413, f"request body is over the limit of {self.max_body} bytes")
            while len(self.buf) - self.pos < size + 2:
                self._fill(eof)
            end = self.pos + size
            if self.buf[end:end + 2] != b"\r\n":
                raise _BadRequest(400, "chunk data is not followed by CRLF in the request body")
            body += memoryview(self.buf)[self.pos:end]
            self.pos = end + 2
            chunks += 1
            if chunks % YIELD_EVERY_CHUNKS == 0:
                gevent.sleep(0)
        trailers = 0
        while self._line("trailer line", eof):  # skip trailers up to the final empty line
            trailers += 1
            if trailers > 100:
                raise _BadRequest(431, "more than 100 trailer lines in the request body")
        return bytes(body)


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


def _answer_and_close(sock: socket.socket, data: bytes) -> None:
    """Send an error answer, then read and drop what the client is still sending (up to 1 s, 4 MB)
    before closing: closing with unread input sends a reset that can destroy the answer in flight."""
    sock.settimeout(1.0)
    sock.sendall(data)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        deadline, dropped = time.monotonic() + 1.0, 0
        while dropped < 4 * 1024 * 1024 and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            data = sock.recv(READ_SIZE)
            if not data:
                break
            dropped += len(data)


def _close(sock: socket.socket, reset: bool) -> None:
    if reset:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def default_max_connections() -> int:
    """Connections to keep open: the process's file descriptor limit less a reserve for everything else."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 65536
    return max(16, soft - max(32, soft // 8))


_OUT_OF_FDS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class HTTPServer(StreamServer):
    """Serves `handler` on a listening socket; `error` builds the body of protocol errors.

    At most `max_connections` are kept open: past it (or when accept() runs out of file
    descriptors) the connections that have been idle longest are closed first, then those
    still sending a request head; a connection with a request in progress is never shed."""

    def __init__(self, listener: socket.socket, handler: Handler, error: ErrorBody, max_body: int,
                 timeouts: Timeouts | None = None, max_connections: int | None = None):
        super().__init__(listener, self._serve_connection)
        self.app_handler = handler
        self.error = error
        self.max_body = max_body
        self.timeouts = timeouts or Timeouts()
        self.max_connections = max_connections or default_max_connections()
        self.open_connections = 0
        self._idle: dict[_Connection, None] = {}  # oldest first
        self._reading: dict[_Connection, None] = {}
        self._warned_at = -math.inf

    def _phase(self, conn: _Connection, phase: str) -> None:
        self._idle.pop(conn, None)
        self._reading.pop(conn, None)
        if phase == "idle":
            self._idle[conn] = None
        elif phase in ("header", "body"):
            self._reading[conn] = None

    def _shed(self, count: int) -> int:
        """Close up to `count` connections, the longest idle first; how many were closed."""
        shed = 0
        for pool in (self._idle, self._reading):
            while pool and shed < count:
                conn = next(iter(pool))
                del pool[conn]
                conn.shed = True
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)  # its greenlet sees EOF and ends
                shed += 1
        return shed

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 10:
            self._warned_at = now
            print(f"mock_server: {message}", file=sys.stderr, flush=True)

    def do_read(self):
        try:
            accepted = super().do_read()
        except OSError as exc:
            if exc.errno not in _OUT_OF_FDS:
                raise
            shed = self._shed(max(1, (len(self._idle) + len(self._reading)) // 4))
            self._warn(f"out of file descriptors with {self.open_connections} connections open; closed {shed} "
                       "idle ones (raise ulimit -n or lower --max-connections)")
            self.stop_accepting()  # retry shortly, once the shed connections have closed
            self._timer = self.loop.timer(0.05)
            self._timer.start(self._start_accepting_if_started)
            return None
        if accepted is None:
            return None
        self.open_connections += 1
        if self.open_connections > self.max_connections and not self._shed(1):
            self.open_connections -= 1
            self._warn(f"{self.max_connections} connections busy (--max-connections); refusing new ones with 503")
            sock = accepted[0]
            response = self.error(503, f"the mock already has {self.max_connections} connections open")
            with contextlib.suppress(OSError):
                sock._sock.send(_head(503, response.headers, f"Content-Length: {len(response.body)}\r\n"
                                                             "Connection: close\r\n") + response.body)
            _close(sock, False)
            return None
        return accepted

    def _serve_connection(self, sock: socket.socket, _address) -> None:
        with contextlib.suppress(OSError):
            # One small write per token: without NODELAY, Nagle + delayed ACK hold chunks ~40 ms.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        conn = _Connection(sock, self.max_body, self.timeouts)
        conn.on_phase = self._phase
        reset = False
        try:
            while True:
                try:
                    parsed = conn.read_request()
                except _Timeout as exc:
                    if exc.phase == "idle":  # a keep-alive connection left unused: close it quietly
                        return
                    limit = self.timeouts.header_s if exc.phase == "header" else self.timeouts.body_s
                    response = self.error(408, f"the request {'head' if exc.phase == 'header' else 'body'} "
                                               f"did not arrive within {limit:g} s")
                    _answer_and_close(sock, _head(408, response.headers, f"Content-Length: {len(response.body)}"
                                                  "\r\nConnection: close\r\n") + response.body)
                    return
                except _BadRequest as exc:
                    if conn.shed:
                        return
                    response = self.error(exc.status, str(exc))
                    _answer_and_close(sock, _head(exc.status, response.headers, f"Content-Length: "
                                                  f"{len(response.body)}\r\nConnection: close\r\n") + response.body)
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
            self._phase(conn, "closed")
            self.open_connections -= 1
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
