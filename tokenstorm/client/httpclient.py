"""A keep-alive HTTP/1.1 client for streamed responses that timestamps every read.

Why not Locust's FastHttp/requests clients (docs/FIELD_NOTES.md s1): their stream readers either
buffer (iter_content waits for 1024 bytes: TTFT +700 ms) or cost several microseconds per
line, and none can say when bytes reached the machine. This client hands every read to the
caller with its arrival time: the kernel's receive timestamp (SO_TIMESTAMPNS) on plain TCP,
so a client that is busy for a moment still dates each chunk by when it arrived, not by when
Python got round to it; time.monotonic() at the read where the kernel gives none (TLS).

All instants are time.monotonic() seconds.
"""

from __future__ import annotations

import contextlib
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


class Response:
    """Status and headers of a response whose body is read incrementally with read_body()."""

    def __init__(self, conn: Connection, status: int, reason: str, headers: dict[str, str], t_headers: float,
                 leftover: bytes, keep_alive: bool, head_only: bool):
        self.conn = conn
        self.status = status
        self.reason = reason
        self.headers = headers
        self.t_headers = t_headers
        self._leftover = leftover
        self._keep_alive = keep_alive
        self.complete = False  # the body ended as its framing said (terminator, length)
        te = headers.get("transfer-encoding", "").lower()
        self._chunked = "chunked" in te
        length = headers.get("content-length")
        self._remaining = int(length) if (length and length.isdigit() and not self._chunked) else None
        if head_only or status in (204, 304) or 100 <= status < 200:
            self._remaining = 0

    def read_body(self) -> Iterator[tuple[bytes, float]]:
        """(body bytes, arrival time) as they arrive; ConnectionLost if the peer cuts the body."""
        if self._chunked:
            yield from self._read_chunked()
        elif self._remaining is not None:
            data, t = self._leftover, self.t_headers
            self._leftover = b""
            while True:
                if data:
                    part = data[: self._remaining]
                    self._remaining -= len(part)
                    yield part, t
                if self._remaining <= 0:
                    self.complete = True
                    break
                data, t = self.conn.recv()
                if not data:
                    raise ConnectionLost(f"connection closed with {self._remaining} bytes of the body missing")
        else:  # delimited by close
            if self._leftover:
                yield self._leftover, self.t_headers
            while True:
                data, t = self.conn.recv()
                if not data:
                    self.complete = True
                    self._keep_alive = False
                    break
                yield data, t
        if not self._keep_alive:
            self.conn.close()

    def _read_chunked(self) -> Iterator[tuple[bytes, float]]:
        buf, t = self._leftover, self.t_headers
        self._leftover = b""
        state, need = "size", 0  # size line, chunk data (need bytes), CRLF after the data
        while True:
            out, pos, n = [], 0, len(buf)
            while pos < n:
                if state == "size":
                    end = buf.find(b"\r\n", pos)
                    if end < 0:
                        break
                    try:
                        size = int(buf[pos:end].split(b";", 1)[0], 16)
                    except ValueError:
                        self.conn.close()
                        raise HTTPError("protocol", f"malformed chunk size {buf[pos:end][:20]!r}") from None
                    pos = end + 2
                    if size == 0:
                        if out:
                            yield b"".join(out), t
                        self._finish_trailers(buf[pos:])
                        return
                    state, need = "data", size
                elif state == "data":
                    part = buf[pos:pos + need]
                    out.append(part)
                    pos += len(part)
                    need -= len(part)
                    if not need:
                        state = "crlf"
                elif n - pos >= 2:
                    pos += 2
                    state = "size"
                else:
                    break
            if out:
                yield b"".join(out), t
            buf = buf[pos:]
            data, t = self.conn.recv()
            if not data:
                raise ConnectionLost("connection closed before the end of the chunked body")
            buf += data

    def _finish_trailers(self, rest: bytes) -> None:
        while b"\r\n" not in rest:
            more, _ = self.conn.recv()
            if not more:
                raise ConnectionLost("connection closed inside the chunked trailer")
            rest += more
        while not rest.startswith(b"\r\n"):
            rest = rest.split(b"\r\n", 1)[1]
            while b"\r\n" not in rest:
                more, _ = self.conn.recv()
                if not more:
                    raise ConnectionLost("connection closed inside the chunked trailer")
                rest += more
        self.complete = True
        self.conn.pending = rest[2:]

    def read_all(self, limit: int = 1 << 20) -> bytes:
        """The whole body (error bodies are small; bigger ones are cut at `limit`)."""
        parts, size = [], 0
        with contextlib.suppress(ConnectionLost):
            for data, _ in self.read_body():
                parts.append(data)
                size += len(data)
                if size >= limit:
                    self.conn.close()
                    break
        return b"".join(parts)[:limit]


class Connection:
    """One keep-alive connection to a target; reconnects when it has been closed."""

    def __init__(self, target: Target, connect_timeout: float, ssl_context: ssl.SSLContext | None = None):
        self.target = target
        self.connect_timeout = connect_timeout
        self.sock: socket.socket | None = None
        self.pending = b""  # bytes read past the end of the previous response
        self._ssl_context = ssl_context
        self._stamped = False
        self.deadline = float("inf")  # reads fail with HTTPError(timeout_kind) after this instant
        self.timeout_kind = "timeout"
        self._timer = None
        self._armed_for = float("inf")
        self._reader = None  # the greenlet blocked in recv(), interrupted when the deadline passes
        self.connect_s: float | None = None  # time the last connect took (None: reused)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock = None
        self.pending = b""

    def _connect(self) -> None:
        t0 = time.monotonic()
        try:
            sock = gsocket.create_connection((self.target.host, self.target.port), timeout=self.connect_timeout)
        except TimeoutError:
            raise HTTPError("connect", f"connect to {self.target.host}:{self.target.port} timed out after "
                            f"{self.connect_timeout:g} s") from None
        except OSError as exc:
            raise HTTPError("connect", f"connect to {self.target.host}:{self.target.port} failed: "
                            f"{exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)  # reads are bounded by the connection's deadline timer instead
        if self.target.scheme == "https":
            context = self._ssl_context or gssl.create_default_context()
            try:
                sock = context.wrap_socket(sock, server_hostname=self.target.host)
            except (OSError, ssl.SSLError) as exc:
                sock.close()
                raise HTTPError("connect", f"TLS handshake with {self.target.host} failed: {exc}") from None
            self._stamped = False
        else:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                self._stamped = True
            except OSError:
                self._stamped = False
        self.sock = sock
        self.connect_s = time.monotonic() - t0

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

    def disarm(self) -> None:
        self.deadline = float("inf")
        if self._timer is not None:
            self._timer.stop()
            self._armed_for = float("inf")

    def recv(self) -> tuple[bytes, float]:
        """(bytes, arrival time); b'' when the peer closed. Raises HTTPError on timeout."""
        if self.pending:
            data, self.pending = self.pending, b""
            return data, time.monotonic()
        sock = self.sock
        if sock is None:
            return b"", time.monotonic()
        if self.deadline != float("inf"):
            if time.monotonic() >= self.deadline:
                raise HTTPError(self.timeout_kind, "deadline passed")
            if self.deadline < self._armed_for or self._armed_for == float("inf"):
                self._arm()
        self._reader = getcurrent()
        try:
            if self._stamped:
                data, ancdata, _flags, _addr = sock.recvmsg(READ_SIZE, _CMSG_SPACE)
                now = time.monotonic()
                for level, kind, payload in ancdata:
                    if kind == SO_TIMESTAMPNS and level == socket.SOL_SOCKET:
                        sec, nsec = struct.unpack("qq", payload[:16])
                        stamped = realtime_to_monotonic(sec + nsec * 1e-9, now)
                        if now - 1.0 < stamped <= now:
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

    def request(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"",
                timeout_kind: str = "timeout") -> tuple[Response, float]:
        """Send a request; return its response (headers read) and the instant it was sent."""
        self.timeout_kind = timeout_kind
        reused = self.sock is not None
        if not reused:
            self._connect()
        else:
            self.connect_s = None
        host = self.target.host if ":" not in self.target.host else f"[{self.target.host}]"
        head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{self.target.port}",
                f"Content-Length: {len(body)}", "Connection: keep-alive"]
        head += [f"{k}: {v}" for k, v in headers]
        payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        t_sent = time.monotonic()
        try:
            self.sock.sendall(payload)
            return self._read_head(method == "HEAD"), t_sent
        except ConnectionLost:
            if not reused:
                raise
        except OSError:
            if not reused:
                self.close()
                raise ConnectionLost("connection failed while sending the request") from None
        # A kept-alive connection the server had closed meanwhile: retry once on a new one.
        self.close()
        self._connect()
        t_sent = time.monotonic()
        try:
            self.sock.sendall(payload)
        except OSError as exc:
            self.close()
            raise ConnectionLost(f"connection failed while sending the request: {exc}") from None
        return self._read_head(method == "HEAD"), t_sent

    def _read_head(self, head_only: bool) -> Response:
        buf, t = b"", 0.0
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                head, rest = buf[:end], buf[end + 4:]
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ", 2)
                if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                    self.close()
                    raise HTTPError("protocol", f"malformed status line {lines[0][:60]!r}")
                status = int(parts[1])
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    key = name.strip().lower()
                    headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
                if status == 100:  # 100 Continue: the real response follows
                    buf = rest
                    continue
                keep = headers.get("connection", "").lower() != "close" and parts[0] == "HTTP/1.1"
                return Response(self, status, parts[2] if len(parts) > 2 else "", headers, t, rest, keep,
                                head_only)
            if len(buf) > MAX_HEAD:
                self.close()
                raise HTTPError("protocol", "response head larger than 64 KiB")
            data, t = self.recv()
            if not data:
                self.close()
                raise ConnectionLost("connection closed before the response headers")
            buf += data
