"""The `tokenstorm` command: --version, every option listed with its help and default, messages."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
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


def _run(host: str, *args: str, key: str | None = "mock-key", tmp: Path, headless: bool = True,
         ) -> subprocess.CompletedProcess:
    """`tokenstorm run` to its end (-u 1 --total-requests 1 unless `args` say otherwise)."""
    env = clean_env({} if key is None else {"OPENAI_API_KEY": key})
    mode = ["--headless"] if headless else ["--web"]
    return subprocess.run([TOKENSTORM, "run", *mode, "--only-summary", "--host", host, "-u", "1",
                           "--total-requests", "1", "--results-dir", str(tmp / "run"), *args],
                          capture_output=True, text=True, timeout=120, env=env)


def _one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return result.stderr


def test_a_rejected_key_without_model_says_the_key_was_rejected(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "5", "--itl-ms", "1")
    stderr = _one_line(_run(mock.url, key="wrong-key", tmp=tmp_path))
    assert f"the key in OPENAI_API_KEY was rejected: GET {mock.url}/v1/models answered 401; check the key" in stderr
    assert "wrong-key" not in stderr and "pass --model" not in stderr


def test_errors_about_a_host_with_a_path_name_the_whole_url(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "5", "--itl-ms", "1")
    stderr = _one_line(_run(mock.url + "/gateway/v1", tmp=tmp_path))
    assert f"no --model given and GET {mock.url}/gateway/v1/models gave HTTP 404: pass --model NAME" in stderr
    from locust_procs import free_port

    closed = f"http://127.0.0.1:{free_port()}/some/path"
    assert f"cannot reach --host {closed}:" in _one_line(_run(closed, tmp=tmp_path))


def test_calibration_verdict_never_says_none_streams():
    from tokenstorm.sweep import calibration_verdict

    rows = [{"streams": 10}, {"streams": 100}]
    assert calibration_verdict(rows, 100).startswith("calibrate: up to 100 streams per worker process keep TTFT")
    none = calibration_verdict(rows, None)
    assert "None" not in none and "no level tried (streams: 10, 100) kept TTFT error p99" in none


def test_autostart_autoquit_ends_a_total_requests_run_with_the_web_ui(start_mock, tmp_path):
    from locust_procs import free_port

    mock = start_mock("--ttft-ms", "5", "--itl-ms", "1")
    started = time.monotonic()
    result = _run(mock.url, "--autostart", "--autoquit", "1", "--web-host", "127.0.0.1", "--web-port",
                  str(free_port()), "-u", "2", "-r", "2", "--total-requests", "6", tmp=tmp_path, headless=False)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    with (tmp_path / "run" / "requests-local.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 6
    assert elapsed >= 1  # it waited --autoquit after the run, then quit on its own (the web UI too)


def test_run_takes_a_shipped_locustfile_by_name_and_shipped_paths_from_any_folder(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "5", "--itl-ms", "1")
    env = clean_env()
    result = subprocess.run([TOKENSTORM, "run", "-f", "tool_agent", "--headless", "--only-summary", "--host",
                             mock.url, "--scenario", "configs/scenarios/tool-agent.yaml", "-u", "1",
                             "--total-requests", "2", "--results-dir", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((tmp_path / "run" / "run-local.json").read_text())
    assert meta["settings"]["scenario"]["name"] and Path(meta["settings"]["scenario"]["file"]).is_file()


def test_run_is_headless_with_one_live_line_and_ends_with_the_report_files(start_mock, tmp_path):
    """`tokenstorm run --host URL ...`: no Locust tables (their Aggregated row adds the TTFT/TPOT
    rows to the requests), a progress line with the run's own figures, then report.html/md."""
    mock = start_mock("--ttft-ms", "20", "--itl-ms", "2", "--output-tokens", "20", "--jitter", "0")
    result = subprocess.run([TOKENSTORM, "run", "--host", mock.url, "-u", "3", "--total-requests", "30",
                             "--results-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=120,
                            env=clean_env())
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Aggregated" not in output and "Response time percentiles" not in output
    last = [line for line in result.stderr.splitlines() if line.startswith("tokenstorm: 30/30 requests (100%)")]
    assert last, result.stderr[-3000:]
    line = last[-1]
    assert "errors 0" in line and "TTFT P50" in line and "output tok/s" in line
    ttft_p50 = float(re.search(r"TTFT P50 ([\d.,]+)", line).group(1).replace(",", ""))
    assert 20 <= ttft_p50 < 200
    folder = tmp_path / "run"
    assert f"report: {folder}/report.html" in result.stdout
    html = (folder / "report.html").read_text()
    assert (folder / "report.md").is_file() and "TTFT" in html


def test_run_with_locust_stats_keeps_locusts_tables(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "5", "--itl-ms", "1", "--output-tokens", "5")
    result = subprocess.run([TOKENSTORM, "run", "--locust-stats", "--host", mock.url, "-u", "1", "--total-requests",
                             "3", "--results-dir", str(tmp_path / "run")], capture_output=True, text=True,
                            timeout=120, env=clean_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Aggregated" in result.stdout + result.stderr
    assert "requests (100%)" not in result.stderr
