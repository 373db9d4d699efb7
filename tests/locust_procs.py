"""Real Locust processes for the tests: a clean environment, headless runs, master and workers.

One place for what every end-to-end test needs, so that no test module imports another.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tokenstorm.mockproc import ROOT, MockProcess

LOCUST = str(Path(sys.executable).parent / "locust")
LOCUSTFILES = ROOT / "locustfiles"
LOCUSTFILE = str(LOCUSTFILES / "chat_stream.py")
KEYS = {"OPENAI_API_KEY": "mock-key", "ANTHROPIC_API_KEY": "mock-key"}


def clean_env(keys: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """This process's environment without the caller's LOCUST_* options and API keys (a developer's
    shell must not change what a test runs), plus `keys` (default: the mock's keys) and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_") and k not in KEYS}
    return env | (KEYS if keys is None else keys) | extra


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def locust_cmd(host: str | None, *args: str, locustfile: str = LOCUSTFILE) -> list[str]:
    cmd = [LOCUST, "-f", locustfile, "--headless", "--only-summary", *args]
    return cmd + ["--host", host] if host else cmd


def run(locustfile: str, host: str | None, *args: str, key: str | None = "mock-key",
        env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """One headless run of locustfiles/`locustfile` to its end; `key` is OPENAI_API_KEY (None: unset)."""
    keys = {"ANTHROPIC_API_KEY": "mock-key"} | ({"OPENAI_API_KEY": key} if key is not None else {})
    return subprocess.run(locust_cmd(host, *args, locustfile=str(LOCUSTFILES / locustfile)), capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=clean_env(keys) | (env or {}))


def run_locust(host: str | None, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """One headless run of locustfiles/chat_stream.py."""
    return run("chat_stream.py", host, *args, **kwargs)


def start_master(host: str, port: int, workers: int, *args: str) -> subprocess.Popen:
    cmd = [LOCUST, "-f", LOCUSTFILE, "--master", "--headless", "--only-summary", "--host", host,
           "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port), "--expect-workers", str(workers),
           *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(), cwd=ROOT)


def start_worker(port: int, *args: str) -> subprocess.Popen:
    cmd = [LOCUST, "-f", LOCUSTFILE, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port), *args]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env(), cwd=ROOT)


def stop_all(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_until(condition, what: str, timeout: float = 60) -> None:
    """Poll `condition()` until true: tests synchronise on what happened, never on a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def concurrent_runs(root: Path, plans: dict[str, tuple[list[str], list[str]]], timeout: float = 180) -> dict[str, Path]:
    """For each plan (name -> (mock args, Locust args)), one headless run into root/name, all at
    the same time, so they share whatever else the machine is doing. Plans with the same mock args
    share one mock: the same target at the same time, so what differs between their runs is
    run-to-run noise, not one mock process scheduled worse than another on a busy machine.
    Each run must exit 0; returns the results folders by name."""
    mocks: dict[tuple[str, ...], MockProcess] = {}
    procs, folders = {}, {}
    try:
        for name, (mock_args, locust_args) in plans.items():
            mock = mocks.get(tuple(mock_args)) or mocks.setdefault(tuple(mock_args), MockProcess(mock_args))
            folders[name] = root / name
            procs[name] = subprocess.Popen(locust_cmd(mock.url, *locust_args, "--results-dir", str(folders[name])),
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                           env=clean_env(), cwd=ROOT)
        for name, proc in procs.items():
            _out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, (name, err[-2000:])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        for mock in mocks.values():
            mock.stop()
    return folders
