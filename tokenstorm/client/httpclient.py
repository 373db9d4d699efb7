"""A keep-alive HTTP/1.1 client for streamed responses that timestamps every read.

Why not Locust's FastHttp/requests clients (docs/FIELD_NOTES.md s1): their stream readers either
buffer (iter_content waits for 1024 bytes: TTFT +700 ms) or cost several microseconds per
line, and none can say when bytes reached the machine. This client hands every read to the
caller with its arrival time: the kernel's receive timestamp (SO_TIMESTAMPNS) on plain TCP,
so a client that is busy for a moment still dates each chunk by when it arrived, not by when
Python got round to it; time.monotonic() at the read where the kernel gives none (TLS).
The framing itself (status line, headers, Content-Length, chunked) is llhttp's, fed those reads.

All instants are time.monotonic() seconds.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from gevent import getcurrent
from gevent import socket as gsocket
from gevent import ssl as gssl
from gevent.hub import get_hub
from geventhttpclient._parser import HTTPParseError, HTTPResponseParser

from ..core.clock import realtime_to_monotonic

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_CMSG_SPACE = socket.CMSG_SPACE(16)
READ_SIZE = 65536
MAX_HEAD = 64 * 1024


class HTTPError(Exception):
    """A transport failure; `kind` is connect, timeout or protocol."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class ConnectionLost(Exception):
    """The connection ended before the response did."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    base_path: str  # without a trailing slash

    @classmethod
    def parse(cls, url: str) -> Target:
        """A base URL such as http://127.0.0.1:8082 or https://api.example.com/v1."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"URL {url!r} must start with http:// or https://")
        if not parts.hostname:
            raise ValueError(f"URL {url!r} has no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ValueError(f"URL {url!r} has an invalid port") from None
        if parts.query or parts.fragment:
            raise ValueError(f"URL {url!r} must not have a query or fragment")
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def origin(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + ("" if self.port == default else f":{self.port}")


def _describe_parse_error(exc: HTTPParseError, head: bytes) -> str:
    """What the server did, in words, from llhttp's reason and the first bytes it sent."""
    reason = exc.args[0] if exc.args else str(exc)
    if head[:1] in (b"\x15", b"\x16") and head[1:2] == b"\x03":
        return "the server answered with TLS, not plain HTTP (use an https:// --host)"
    if len(head) >= 9 and head[3] in (0x04, 0x07) and head[:2] == b"\x00\x00":
        return "the server answered with HTTP/2 frames (h2c); tokenstorm speaks HTTP/1.1"
    if reason.startswith("Expected HTTP/"):
        return f"the server's answer is not HTTP/1.x: {head[:40]!r}"
    if reason == "Invalid HTTP version":
        status_line = head.split(b"\r\n", 1)[0][:40]
        return f"unsupported HTTP version in the status line {status_line!r}"
    return f"malformed HTTP response: {reason}"


class _Parser(HTTPResponseParser):
    """llhttp (geventhttpclient's binding, which Locust ships) fed from our timestamped reads.

    It does the framing (status line, headers, Content-Length, chunked, trailers) strictly and
    keeps no buffer of its own: body bytes come out of each feed() in `body`."""

    def __init__(self, head_only: bool):
        super().__init__()
        self.head_only = head_only
        self.reason = ""
        self.fields: list[list[str]] = []
        self.head_size = 0  # characters of status text, header names and values
        self._in_value = False
        self.headers_done = False
        self.complete = False
        self.trailing = False  # bytes came after the end of the response (or it ended by a close)
        self.body: list[bytes] = []

    def _on_message_begin(self) -> None:  # again after an interim 1xx response
        self.reason, self.fields, self._in_value = "", [], False

    def _on_status(self, text: str) -> None:
        self.reason += text
        self.head_size += len(text)

    def _on_header_field(self, text: str) -> None:
        self.head_size += len(text) + 4
        if self._in_value or not self.fields:
            self.fields.append([text, ""])
        else:  # llhttp splits a name that spans two reads
            self.fields[-1][0] += text
        self._in_value = False

    def _on_header_value(self, text: str) -> None:
        self.head_size += len(text)
        self.fields[-1][1] += text
        self._in_value = True

    def _on_headers_complete(self) -> bool:
        if 100 <= self.get_code() < 200:  # interim: the real response follows
            return False
        self.headers_done = True
        return self.head_only  # True: no body follows (HEAD)

    def _on_body(self, buf) -> None:
        self.body.append(bytes(buf))

    def _on_message_complete(self) -> None:
        if self.headers_done:
            self.complete = True

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in self.fields:
            key, value = name.lower(), value.strip()
            out[key] = f"{out[key]}, {value}" if key in out else value
        return out


class Response:
    """Status and headers of a response whose body is read incrementally with read_body()."""

    def __init__(self, conn: Connection, parser: _Parser, t_headers: float):
        self.conn = conn
        self._parser = parser
        self.status = parser.get_code()
        self.reason = parser.reason
        self.headers = parser.headers()
        self.t_headers = t_headers
        self.complete = parser.complete  # the body ended as its framing said (terminator, length)

    def read_body(self) -> Iterator[tuple[bytes, float]]:
        """(body bytes, arrival time) as they arrive; ConnectionLost if the peer cuts the body."""
        parser, conn = self._parser, self.conn
        if parser.body:
            data, parser.body = b"".join(parser.body), []
            yield data, self.t_headers
        while not parser.complete:
            data, t = conn.recv()
            if not data:
                with contextlib.suppress(HTTPParseError):
                    parser.feed(b"")  # end of input: completes a body delimited by the close
                if not parser.complete:
                    conn.close()
                    missing = parser.get_remaining_content_length() if "content-length" in self.headers else 0
                    raise ConnectionLost(f"connection closed with {missing} bytes of the body missing" if missing
                                         else "connection closed before the end of the body")
                parser.trailing = True
                break
            conn.feed(parser, data)
            if parser.body:
                data, parser.body = b"".join(parser.body), []
                yield data, t
        self.complete = True
        if parser.should_keep_alive() and not parser.trailing:
            conn.reusable = True  # read to its end, nothing after it: the next request may use it
        else:
            conn.close()

    def read_all(self, limit: int = 1 << 20) -> bytes:
        """The whole body (error bodies are small; bigger ones are cut at `limit`)."""
        parts, size = [], 0
        with contextlib.suppress(ConnectionLost, HTTPError):
            for data, _ in self.read_body():
                parts.append(data)
                size += len(data)
                if size >= limit:
                    self.conn.close()
                    break
        return b"".join(parts)[:limit]


class Connection:
    """One keep-alive connection to a target; reconnects when it has been closed.

    A request is sent once: a kept-alive connection the server closed while idle is noticed
    before sending (and replaced); one that fails after the send fails the request, it is never
    silently sent again."""

    def __init__(self, target: Target, connect_timeout: float, ssl_context: ssl.SSLContext | None = None):
        self.target = target
        self.connect_timeout = connect_timeout
        self.sock: socket.socket | None = None
        self.reusable = False  # the last response was read to its end and the server keeps the connection
        self._ssl_context = ssl_context
        self._stamped = False
        self.not_before = 0.0  # a kernel receive stamp before this instant (the send) is not believed
        self.deadline = float("inf")  # reads fail with HTTPError(timeout_kind) after this instant
        self.timeout_kind = "timeout"
        self._timer = None
        self._armed_for = float("inf")
        self._reader = None  # the greenlet blocked on the socket, interrupted when the deadline passes
        self.connect_s: float | None = None  # time the last connect took (None: reused)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock = None
        self.reusable = False

    def _connect(self) -> None:
        t0 = time.monotonic()
        where = f"{self.target.host}:{self.target.port}"
        try:
            sock = gsocket.create_connection((self.target.host, self.target.port), timeout=self.connect_timeout)
        except TimeoutError:
            raise HTTPError("connect", f"connect to {where} timed out after {self.connect_timeout:g} s") from None
        except OSError as exc:
            raise HTTPError("connect", f"connect to {where} failed: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.target.scheme == "https":
            context = self._ssl_context or gssl.create_default_context()
            # the handshake runs under what is left of the connect timeout
            sock.settimeout(max(0.001, self.connect_timeout - (time.monotonic() - t0)))
            try:
                sock = context.wrap_socket(sock, server_hostname=self.target.host)
            except TimeoutError:
                sock.close()
                raise HTTPError("connect", f"TLS handshake with {where} timed out after {self.connect_timeout:g} s "
                                "(a plain HTTP port? try http://)") from None
            except ssl.SSLError as exc:
                sock.close()
                hint = (": the server did not answer with TLS (a plain HTTP port? try http://)"
                        if "WRONG_VERSION_NUMBER" in str(exc) or "record layer failure" in str(exc) else f": {exc}")
                raise HTTPError("connect", f"TLS handshake with {where} failed{hint}") from None
            except OSError as exc:
                sock.close()
                raise HTTPError("connect", f"TLS handshake with {where} failed: {exc.strerror or exc} "
                                "(a plain HTTP port? try http://)") from None
            self._stamped = False
        else:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                self._stamped = True
            except OSError:
                self._stamped = False
        sock.settimeout(None)  # reads are bounded by the connection's deadline timer instead
        self.sock = sock
        self.connect_s = time.monotonic() - t0

    def _peer_closed(self) -> bool:
        """Whether the idle kept-alive socket has anything to read: the server's close (or bytes it
        should not have sent). Either way the connection is not used for another request."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    # Timeouts: one lazily re-armed timer per connection instead of a socket timeout, which in
    # gevent costs a Timeout object and a timer per blocking read (per chunk, on paced streams).
    # Moving `deadline` later is a plain assignment; the timer, when it fires, re-arms itself
    # for the new deadline or interrupts the read it was guarding.
    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = get_hub().loop.timer(max(0.0, self.deadline - time.monotonic()))
        self._armed_for = self.deadline
        self._timer.start(self._on_timer)

    def _on_timer(self) -> None:
        self._armed_for = float("inf")
        if self.deadline == float("inf"):
            return
        if time.monotonic() < self.deadline:
            self._arm()
        elif self._reader is not None:
            self._reader.throw(HTTPError(self.timeout_kind, "deadline passed"))

    def _guard(self) -> None:
        """Before blocking on the socket: fail now if the deadline passed, else have the timer watch."""
        if self.deadline != float("inf"):
            if time.monotonic() >= self.deadline:
                raise HTTPError(self.timeout_kind, "deadline passed")
            if self.deadline < self._armed_for or self._armed_for == float("inf"):
                self._arm()
        self._reader = getcurrent()

    def disarm(self) -> None:
        self.deadline = float("inf")
        if self._timer is not None:
            self._timer.stop()
            self._armed_for = float("inf")

    def recv(self) -> tuple[bytes, float]:
        """(bytes, arrival time); b'' when the peer closed. Raises HTTPError on timeout.

        The arrival time is the kernel's receive stamp when it is plausible (not before the
        request was sent, not in the future), so a read the event loop got to late is still
        dated when its bytes arrived, however late."""
        sock = self.sock
        if sock is None:
            return b"", time.monotonic()
        self._guard()
        try:
            if self._stamped:
                data, ancdata, _flags, _addr = sock.recvmsg(READ_SIZE, _CMSG_SPACE)
                now = time.monotonic()
                for level, kind, payload in ancdata:
                    if kind == SO_TIMESTAMPNS and level == socket.SOL_SOCKET:
                        sec, nsec = struct.unpack("qq", payload[:16])
                        stamped = realtime_to_monotonic(sec + nsec * 1e-9, now)
                        if self.not_before <= stamped <= now:
                            return data, stamped
                return data, now
            data = sock.recv(READ_SIZE)
            return data, time.monotonic()
        except OSError as exc:
            if isinstance(exc, ConnectionResetError):
                raise ConnectionLost("connection reset by peer") from None
            raise ConnectionLost(f"connection failed: {exc.strerror or exc}") from None
        finally:
            self._reader = None

    def feed(self, parser: _Parser, data: bytes) -> None:
        """Hand received bytes to the parser; a framing error is HTTPError('protocol')."""
        try:
            parser.feed(data)
        except HTTPParseError as exc:
            if parser.complete:  # bytes after the end of the response: the connection is not reused
                parser.trailing = True
                return
            self.close()
            raise HTTPError("protocol", _describe_parse_error(exc, data)) from None

    def request(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"",
                timeout_kind: str = "timeout") -> tuple[Response, float]:
        """Send a request; return its response (headers read) and the instant it was sent."""
        self.timeout_kind = timeout_kind
        if self.sock is not None and (not self.reusable or self._peer_closed()):
            self.close()
        reused = self.sock is not None
        if reused:
            self.connect_s = None
        else:
            self._connect()
        self.reusable = False
        host = self.target.host if ":" not in self.target.host else f"[{self.target.host}]"
        head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{self.target.port}",
                f"Content-Length: {len(body)}", "Connection: keep-alive", "Accept-Encoding: identity"]
        head += [f"{k}: {v}" for k, v in headers]
        payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        t_sent = time.monotonic()
        self.not_before = t_sent
        self._guard()
        try:
            self.sock.sendall(payload)
        except OSError as exc:
            # The server may have answered and closed before reading it all (a 413): read that.
            self._reader = None
            try:
                return self._read_head(method == "HEAD"), t_sent
            except (ConnectionLost, HTTPError):
                self.close()
                again = " (a kept-alive connection; the request is not sent again)" if reused else ""
                raise ConnectionLost(f"connection failed while sending the request: {exc.strerror or exc}"
                                     f"{again}") from None
        finally:
            self._reader = None
        try:
            return self._read_head(method == "HEAD"), t_sent
        except ConnectionLost as exc:
            if reused:
                raise ConnectionLost(f"{exc} on a kept-alive connection (the request is not sent again)") from None
            raise

    def _read_head(self, head_only: bool) -> Response:
        parser, seen, first = _Parser(head_only), 0, b""
        while not parser.headers_done:
            data, t = self.recv()
            if not data:
                self.close()
                raise ConnectionLost("connection closed before the response headers")
            if len(first) < 64:
                first += data[:64]
            seen += len(data)
            try:
                parser.feed(data)
            except HTTPParseError as exc:
                if not parser.complete:
                    self.close()
                    raise HTTPError("protocol", _describe_parse_error(exc, first)) from None
                parser.trailing = True  # a whole response, then bytes that belong to none
            if parser.head_size > MAX_HEAD or (not parser.headers_done and seen > MAX_HEAD):
                self.close()
                raise HTTPError("protocol", f"response head larger than {MAX_HEAD // 1024} KiB")
        return Response(self, parser, t)
