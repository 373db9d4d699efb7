"""The layers import one way: import-linter's contracts in pyproject.toml hold, and break on a new cycle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"


def lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)})


def test_the_layers_import_one_way():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def copy_of_the_house(tmp_path: Path) -> Path:
    for name in ("tokenstorm", "mock_server", "analysis"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_an_upward_import_breaks_the_layers(tmp_path):
    house = copy_of_the_house(tmp_path)
    with open(house / "tokenstorm" / "core" / "sse.py", "a") as f:
        f.write("\nfrom analysis import stats  # noqa\n")  # the bottom layer reaching up
    result = lint(house)
    assert result.returncode != 0
    assert "tokenstorm layers BROKEN" in result.stdout and "tokenstorm.core.sse -> analysis.stats" in result.stdout


def test_a_cycle_inside_a_package_is_refused(tmp_path):
    house = copy_of_the_house(tmp_path)
    with open(house / "tokenstorm" / "client" / "arrivals.py", "a") as f:
        f.write("\nfrom . import scenario  # noqa\n")  # scenario -> ... -> arrivals -> scenario
    with open(house / "tokenstorm" / "client" / "scenario.py", "a") as f:
        f.write("\nfrom . import arrivals  # noqa\n")
    result = lint(house)
    assert result.returncode != 0
    assert "No cycles are allowed in tokenstorm.client" in result.stdout
