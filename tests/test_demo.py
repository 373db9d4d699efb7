"""`make demo`'s program runs end to end: mock, Locust run, report, everything stopped, exit 0."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tokenstorm.mockproc import ROOT


@pytest.mark.slow
def test_demo_runs_and_writes_a_report():
    before = set((ROOT / "results").glob("demo-*")) if (ROOT / "results").exists() else set()
    result = subprocess.run([sys.executable, "-m", "tokenstorm.demo"], capture_output=True, text=True, timeout=180,
                            cwd=ROOT)
    created = sorted(set((ROOT / "results").glob("demo-*")) - before)
    try:
        assert result.returncode == 0, result.stderr[-2000:]
        assert "=== tokenstorm report" in result.stdout and "requests 60   ok 60" in result.stdout
        assert len(created) == 1
        for name in ("requests-local.csv", "run-local.json", "report.md", "report.html", "summary.json"):
            assert (created[0] / name).exists(), name
    finally:
        for folder in created:
            shutil.rmtree(folder, ignore_errors=True)
