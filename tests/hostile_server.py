"""A server that misbehaves on purpose, for the client's hardening tests.

Each connection reads one request (head and Content-Length body), then plays a case: a list of
byte strings sent one after another (with a short pause between, so they reach the client as
separate reads), then closes, or a callable for cases that need more than bytes. The case is
chosen by the request path (`/case/<name>/...`, so `--host http://H:P/case/<name>` aims a whole
run at one case), or taken from a queue the test fills (`play(...)`), or cycled (`/rotate/...`).

Threads, not gevent: the client under test may block its own event loop, the server must not
be blocked with it.
"""

from __future__ import annotations

import gzip
import json
import queue
import socket
import threading
import time
from collections.abc import Callable

CHUNK_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse(obj: object) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"


def delta(content: object = None, finish: str | None = None, **extra) -> dict:
    """One chat.completion.chunk; `content` may be anything, to break the shape on purpose."""
    d = {} if content is None else {"content": content}
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": d, "finish_reason": finish}], **extra}


def valid_stream(words: list[str], usage: dict | None = None) -> list[bytes]:
    """A well-formed chunked SSE chat stream: role chunk, one chunk per word, finish, usage, [DONE]."""
    parts = [CHUNK_HEAD, chunk(sse({**delta(), "choices": [{"index": 0, "delta": {"role": "assistant"},
                                                             "finish_reason": None}]}))]
    parts += [chunk(sse(delta(w))) for w in words]
    parts.append(chunk(sse(delta(finish="stop"))))
    if usage is not None:
        parts.append(chunk(sse({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": usage})))
    parts += [chunk(sse(b"[DONE]")), b"0\r\n\r\n"]
    return parts


def _stream(*events: bytes) -> list[bytes]:
    return [CHUNK_HEAD, *(chunk(e) for e in events), b"0\r\n\r\n"]


def _gzip_body() -> list[bytes]:
    body = gzip.compress(b"".join(sse(delta(w)) for w in ("a", "b")) + sse(b"[DONE]"))
    return [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body), body]


def _json(status: str, obj: dict, extra: bytes = b"") -> list[bytes]:
    body = json.dumps(obj).encode()
    return [f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n".encode() + extra
            + b"Content-Length: %d\r\n\r\n" % len(body), body]


# name -> (what the server sends, the error class the record must have, a word its message must hold)
CASES: dict[str, tuple[list[bytes], str, str]] = {
    "negative_chunk_size": ([CHUNK_HEAD, b"-5\r\nhello\r\n"], "protocol", "chunk size"),
    "chunk_size_overflow": ([CHUNK_HEAD, b"f" * 40 + b"\r\n"], "protocol", "chunk size"),
    "content_is_a_number": (_stream(sse(delta(5))), "malformed", "shape"),
    "choices_are_strings": (_stream(sse({"id": "c1", "choices": ["x"]})), "malformed", "shape"),
    "delta_is_a_string": (_stream(sse({"id": "c1", "choices": [{"index": 0, "delta": "str"}]})), "malformed",
                          "shape"),
    "content_length_superscript": ([b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                    + "Content-Length: \u00b2\r\n\r\n".encode(), b"data: x\n\n"], "protocol",
                                   "Content-Length"),
    "gzip_encoded_stream": (_gzip_body(), "protocol", "gzip"),
    "redirect_301": ([b"HTTP/1.1 301 Moved Permanently\r\nLocation: https://example.invalid/v1\r\n"
                      b"Connection: close\r\nContent-Length: 0\r\n\r\n"], "http_status", "redirect"),
    "redirect_307": ([b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere\r\nConnection: close\r\n"
                      b"Content-Length: 0\r\n\r\n"], "http_status", "redirect"),
    "json_instead_of_stream": (_json("200 OK", {"id": "c1", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}),
        "protocol", "stream: true"),
    "http2_preface": ([b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64\x00\x04\x00\x01\x00\x00"],
                      "protocol", "HTTP/2"),
    "tls_alert": ([b"\x15\x03\x01\x00\x02\x02\x46"], "protocol", "TLS"),
    "http_1_7": ([b"HTTP/1.7 200 OK\r\nContent-Length: 0\r\n\r\n"], "protocol", "version"),
    "error_event_plain_text": (_stream(b"event: error\ndata: upstream overloaded, retry later\n\n"), "sse_error",
                               "upstream overloaded"),
    "head_too_large": ([b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n\r\n"], "protocol", "KiB"),
    "sse_line_too_large": ([CHUNK_HEAD] + [chunk(b"data: " + b"x" * (1 << 20))] * 17, "protocol", "MiB"),
    "closed_before_headers": ([], "truncated", "before the response headers"),
    "cut_mid_stream": (valid_stream(["a", "b", "c"])[:4], "truncated", "end of the body"),
}


class HostileServer:
    """Serve cases on 127.0.0.1 from a thread; `requests` counts the requests it read."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        self.bodies: list[bytes] = []
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def play(self, script: list[bytes] | Callable[[socket.socket, bytes], None]) -> None:
        """The answer to the next request that names no case."""
        self._queue.put(script)

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket, buf: bytes) -> tuple[bytes, bytes, bytes] | None:
        """(head, body, rest) of the next request, or None when the client closed. A request to
        /early413/... is answered 413 as soon as its head is in, its body left unread (a proxy
        refusing a large upload), and the connection closed."""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return None
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        if head.split(b" ", 2)[1].startswith(b"/early413"):
            body = b'{"error": {"message": "request body too large"}}'
            conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
                         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return head, rest[:length], rest[length:]

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        with conn:
            while True:
                try:
                    request = self._read_request(conn, buf)
                except OSError:
                    return
                if request is None:
                    return
                head, body, buf = request
                with self._lock:
                    self.requests += 1
                    index = self.requests
                    self.bodies.append(body)
                path = head.split(b" ", 2)[1].decode()
                if path.startswith("/case/"):
                    script = CASES[path.split("/")[2]][0]
                elif path.startswith("/rotate/"):
                    names = list(ROTATION)
                    script = CASES[names[(index - 1) % len(names)]][0]
                else:
                    script = self._queue.get(timeout=10)
                try:
                    if callable(script):
                        keep = script(conn, head)
                    else:
                        for i, part in enumerate(script):
                            if i:
                                time.sleep(0.002)
                            conn.sendall(part)
                        keep = False
                except OSError:
                    return
                if not keep:
                    return


# The cases a whole Locust run cycles through (all but the 17 MiB one, to keep the run short).
ROTATION = [name for name in CASES if name != "sse_line_too_large"]
