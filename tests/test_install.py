"""`pip install tokenstorm` (a real wheel, not the checkout) gives a working `tokenstorm`: its
locustfiles, mock profiles, datasets, notebooks and the offline tokenizer file come with it.

The wheel is built offline from a copy of the working tree and installed without its
dependencies into a fresh venv; the dev venv's site-packages reach it by a .pth file (no
internet here), never the checkout itself, which the test proves before it runs anything.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import urllib.request
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from locust_procs import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".git", ".venv", "results", "build", "dist", "*.egg-info", "__pycache__",
                              ".pytest_cache", ".ruff_cache", "tests", "bench")

pytestmark = pytest.mark.slow


def _venv_env(venv: Path, tmp: Path) -> dict[str, str]:
    """A clean environment: no LOCUST_* options, no PYTHONPATH, no tiktoken cache to fall back on."""
    cache = tmp / "empty-tiktoken-cache"
    cache.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LOCUST_", "PYTHON", "VIRTUAL_ENV", "TOKENSTORM_", "TIKTOKEN_", "DATA_GYM_"))}
    return env | {"PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "VIRTUAL_ENV": str(venv),
                  "TIKTOKEN_CACHE_DIR": str(cache), "OPENAI_API_KEY": "mock-key"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("install")
    source, wheels, venv = tmp / "src", tmp / "wheels", tmp / "venv"
    shutil.copytree(ROOT, source, symlinks=True, ignore=SKIP)  # the working tree, not a stale build/
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(wheels), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("tokenstorm-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                            "['purelib'])"], text=True).strip())
    # the dependencies, offline: the dev venv's site-packages, after the new venv's own
    (purelib / "dev-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                          "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-3000:]
    work = tmp / "work"  # an unrelated folder: nothing found relative to the checkout
    work.mkdir()
    return {"venv": venv, "python": python, "purelib": purelib, "wheel": wheel, "work": work,
            "env": _venv_env(venv, tmp), "cache": tmp / "empty-tiktoken-cache"}


def _run(installed: dict, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(installed["venv"] / "bin" / cmd[0]), *cmd[1:]], capture_output=True, text=True,
                          timeout=timeout, cwd=installed["work"], env=installed["env"])


def test_the_wheel_holds_every_module_and_shipped_file(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    expected = {str(p.relative_to(ROOT)) for package in ("tokenstorm", "mock_server", "analysis")
                for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts and "_assets" not in p.parts}
    expected |= {str(p.relative_to(ROOT)) for p in (ROOT / "analysis" / "notebooks").glob("*.ipynb")}
    for folder in ("locustfiles", "configs", "data"):
        expected |= {"tokenstorm/_assets/" + str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts}
    assert expected - names == set()


def test_the_installed_package_is_imported_not_the_checkout(installed):
    probe = _run(installed, "python", "-c", "import json, tokenstorm, mock_server.config as m; "
                 "from tokenstorm.core import assets, tokenizer; "
                 "print(json.dumps([tokenstorm.__file__, str(assets.locustfile()), str(m.PROFILE_DIR), "
                 "str(tokenizer.DATA_DIR), tokenizer.count_tokens('hello world')]))")
    assert probe.returncode == 0, probe.stderr[-2000:]
    *paths, tokens = json.loads(probe.stdout)
    for path in paths:
        assert Path(path).resolve().is_relative_to(installed["purelib"].resolve()), path
        assert not Path(path).resolve().is_relative_to(ROOT), path
    assert Path(paths[1]).is_file() and tokens == 2
    assert list(installed["cache"].iterdir()) == []  # the tokenizer came from the wheel, not a download


def test_version_names_tokenstorm_and_locust(installed):
    result = _run(installed, "tokenstorm", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"tokenstorm 0.1.0 (locust {version('locust')}"), result.stdout


def test_mock_profile_and_a_short_run_from_the_installed_command(installed):
    port = free_port()
    mock = subprocess.Popen([str(installed["venv"] / "bin" / "tokenstorm"), "mock", "--config", "realistic-8b",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=installed["work"], env=installed["env"])
    url = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            assert mock.poll() is None, mock.stderr.read()
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    return json.load(response)["status"] == "ok"
            except OSError:
                return False

        wait_until(healthy, "the installed mock's /health", timeout=60)
        request = urllib.request.Request(url + "/v1/models", headers={"Authorization": "Bearer mock-key"})
        with urllib.request.urlopen(request, timeout=5) as response:
            models = [m["id"] for m in json.load(response)["data"]]
        assert "llama-3.1-8b-instruct" in models  # only the realistic-8b profile serves it

        results = installed["work"] / "run"
        run = _run(installed, "tokenstorm", "run", "--headless", "--only-summary", "--host", url, "-u", "2",
                   "-r", "2", "--total-requests", "10", "--max-tokens", "16", "--results-dir", str(results),
                   timeout=180)
        assert run.returncode == 0, run.stderr[-3000:]
        with (results / "requests-local.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 10 and all(row["status"] == "ok" for row in rows), rows[:2]
        assert all(int(row["output_tokens"]) > 0 for row in rows)
        assert "tokenstorm report" in run.stdout and (results / "results.json").exists()
        meta = json.loads((results / "run-local.json").read_text())
        assert meta["settings"]["total_requests"] == 10
        assert list(installed["cache"].iterdir()) == []  # client and mock tokenized offline, from the wheel

        # the README's relative scenario path, from an unrelated folder: the shipped scenario and its csv data
        scenario_results = installed["work"] / "scenario-run"
        run = _run(installed, "tokenstorm", "run", "--headless", "--only-summary", "--host", url, "-u", "2",
                   "-r", "2", "--total-requests", "4", "--scenario", "configs/scenarios/csv-driven.yaml",
                   "--results-dir", str(scenario_results), timeout=180)
        assert run.returncode == 0, run.stderr[-3000:]
        meta = json.loads((scenario_results / "run-local.json").read_text())
        assert Path(meta["settings"]["scenario"]["file"]).resolve().is_relative_to(installed["purelib"].resolve())
        with (scenario_results / "requests-local.csv").open() as f:
            assert [row["status"] for row in csv.DictReader(f)] == ["ok"] * 4
    finally:
        mock.send_signal(signal.SIGTERM)
        try:
            assert mock.wait(timeout=20) == 0
        finally:
            if mock.poll() is None:
                mock.kill()
                mock.wait()
