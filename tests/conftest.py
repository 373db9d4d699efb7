from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tokenstorm.mockproc import MockProcess  # noqa: E402


@pytest.fixture
def start_mock():
    """Factory: start_mock('--ttft-ms', '50', ...) -> MockProcess; all are stopped at teardown."""
    started: list[MockProcess] = []

    def start(*args: str, **kwargs) -> MockProcess:
        proc = MockProcess(args, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module")
def shared_mock():
    """One default mock (ttft 20 ms, itl 1 ms, jitter 0) for tests that only read answers."""
    proc = MockProcess(["--ttft-ms", "20", "--itl-ms", "1", "--output-tokens", "24"])
    yield proc
    proc.stop()
