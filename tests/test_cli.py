"""The `tokenstorm` command: --version, every option listed with its help and default, messages."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from locust_procs import clean_env

from tokenstorm.loadgen.options import RunOptions, flag

TOKENSTORM = str(Path(sys.executable).parent / "tokenstorm")


def tokenstorm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([TOKENSTORM, *args], capture_output=True, text=True, timeout=timeout, env=clean_env())


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_version_names_tokenstorm_and_locust():
    result = tokenstorm("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"tokenstorm {version('tokenstorm')} (locust {version('locust')}")


@pytest.mark.parametrize("command", [["run", "--help"], ["options"]])
def test_every_option_is_listed_with_its_help_and_default(command):
    result = tokenstorm(*command)
    assert result.returncode == 0, result.stderr
    listed = _flat(result.stdout)
    for name, field in RunOptions.model_fields.items():
        if field.json_schema_extra.get("hidden"):  # set by the master for its workers, not by users
            assert flag(name) + " " not in listed, name
            continue
        assert flag(name) in listed, name
        assert _flat(field.description) in listed, name
        default = field.default
        if default not in (None, "", False) and "default" not in field.description.lower():
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            assert f"{_flat(field.description)} (default: {shown})" in listed, name
    if command[0] == "run":  # Locust's own options are there too
        assert "--users" in listed and "--headless" in listed and "Usage: tokenstorm run" in result.stdout


def test_options_module_lists_them_for_locust_f_users():
    result = subprocess.run([sys.executable, "-m", "tokenstorm.loadgen.options"], capture_output=True, text=True,
                            timeout=60, env=clean_env())
    assert result.returncode == 0, result.stderr
    assert "--total-requests N" in result.stdout and "LOCUST_<NAME>" in _flat(result.stdout)
