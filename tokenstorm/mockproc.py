"""Start the bundled mock as a child process (for the demo, tests and benchmarks)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_READY = re.compile(r"listening on (http://\S+?:(\d+))")


class MockProcess:
    """`python -m mock_server ARGS` on a free port; `url` is its base URL (no /v1)."""

    def __init__(self, args: Sequence[str] = (), port: int = 0, env: dict[str, str] | None = None,
                 startup_timeout: float = 30.0):
        cmd = [sys.executable, "-m", "mock_server", "--port", str(port), *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.stderr_lines: list[str] = []
        self.url = ""
        self.port = 0
        deadline = time.monotonic() + startup_timeout
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            match = _READY.search(line)
            if match:
                self.url, self.port = match.group(1), int(match.group(2))
                break
            if not line and self.proc.poll() is not None:
                break
        if not self.url:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"mock server did not start: {(line + err).strip()}")
        # Drain the pipes so a chatty server never blocks on a full pipe.
        threading.Thread(target=self._drain, args=(self.proc.stdout, None), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.proc.stderr, self.stderr_lines), daemon=True).start()

    @staticmethod
    def _drain(pipe, sink: list[str] | None) -> None:
        for line in pipe:
            if sink is not None:
                sink.append(line)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> MockProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
