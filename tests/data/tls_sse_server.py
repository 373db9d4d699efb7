"""A tiny HTTPS server for the TLS test: answers every POST with a short OpenAI SSE stream.

python tests/data/tls_sse_server.py CERT KEY  -> prints "port N", serves until killed.
"""

import json
import sys

from gevent import ssl
from gevent.server import StreamServer


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def event(delta: dict, finish=None) -> bytes:
    body = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def handle(sock, _address):
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                return
            buf += data
        head, buf = buf.split(b"\r\n\r\n", 1)
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(buf) < length:
            buf += sock.recv(65536)
        buf = buf[length:]
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (event({"role": "assistant", "content": ""}), event({"content": "Hello"}),
                      event({"content": " over TLS"}), event({}, "stop"), b"data: [DONE]\n\n"):
            sock.sendall(chunk(piece))
        sock.sendall(b"0\r\n\r\n")


context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server = StreamServer(("127.0.0.1", 0), handle, ssl_context=context)
server.start()
print(f"port {server.server_port}", flush=True)
server.serve_forever()
