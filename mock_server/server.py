"""Running the app: one process, or N processes on one port (SO_REUSEPORT)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys

from .app import MockApp
from .config import MockConfig
from .http import SO_TIMESTAMPNS, HTTPServer, Timeouts


def listen_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Receive timestamps (see http.py). Setting it here, before any request, also switches on the
    # kernel's timestamping early: the first packets after it is first enabled go unstamped.
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def share_of(total: int, workers: int, index: int) -> int:
    """Worker `index`'s part of max_num_seqs: an even split, the remainder to the first workers."""
    if not total:
        return 0
    return total // workers + (1 if index < total % workers else 0)


def serve(config: MockConfig, sock: socket.socket, worker_index: int = 0, max_num_seqs: int | None = None,
          ready_message: str | None = None) -> None:
    """Serve on `sock` until SIGTERM/SIGINT; in-flight streams get 5 s to finish."""
    import gevent

    app = MockApp(config, worker_index, max_num_seqs)
    limits = config.limits
    server = HTTPServer(sock, app, app.protocol_error, limits.max_body_bytes,
                        Timeouts(limits.idle_timeout_s, limits.header_timeout_s, limits.body_timeout_s,
                                 limits.write_timeout_s),
                        limits.max_connections)
    gevent.signal_handler(signal.SIGTERM, server.stop, 5)
    gevent.signal_handler(signal.SIGINT, server.stop, 5)
    server.start()
    if ready_message:
        print(ready_message, flush=True)
    server.serve_forever()


def serve_workers(config: MockConfig, ready_message: str) -> int:
    """Fork N workers, each with its own SO_REUSEPORT socket on the same port; exit with them."""
    workers = config.server.workers
    # Bind once in the parent to fail early (port in use) and to learn the port when it is 0.
    first = listen_socket(config.server.host, config.server.port, reuse_port=True)
    port = first.getsockname()[1]
    children: dict[int, int] = {}
    for index in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            sock = first if index == 0 else listen_socket(config.server.host, port, reuse_port=True)
            if index != 0:
                first.close()
            serve(config, sock, index, share_of(config.capacity.max_num_seqs, workers, index))
            os._exit(0)
        children[pid] = index
    first.close()
    print(ready_message.replace(f":{config.server.port} ", f":{port} "), flush=True)

    def forward(signum, _frame):
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    while children:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, None)
        if code != 0 and status == 0:
            status = 1
            print(f"mock_server: worker {index} exited with status {code}; stopping the others", file=sys.stderr)
            forward(signal.SIGTERM, None)
    return status
