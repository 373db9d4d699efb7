"""Real Locust runs of locustfiles/chat_stream.py against the real mock."""

from __future__ import annotations

import json
import re
import resource
import signal
import statistics
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from locust_procs import clean_env, locust_cmd, run_locust
from mock_metrics import chat_requests_seen, first_tokens_sent, mock_lag_bound_ms, mock_lag_buckets

from analysis.stats import load_records
from tokenstorm.mockproc import ROOT


def records(folder: Path) -> pd.DataFrame:
    assert [p.name for p in folder.glob("requests-*.csv")] == ["requests-local.csv"]
    return load_records(folder)


@pytest.mark.parametrize(("users", "total"), [(1, 20), (50, 300)])
def test_accuracy_against_the_exact_mock(start_mock, tmp_path, users, total):
    mock = start_mock("--ttft-ms", "100", "--itl-ms", "10", "--jitter", "0")
    before = mock_lag_buckets(mock, first_tokens=True)
    result = run_locust(mock.url, "-u", str(users), "-r", str(users), "--total-requests", str(total),
                        "--max-tokens", "40", "--ignore-eos", "--results-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    df = records(tmp_path)
    assert len(df) == total and (df["status"] == "ok").all()
    # late by what the mock measured of itself on a busy machine: its first chunks' lag, and reading
    # the request (at most the time to the response headers)
    late = (mock_lag_bound_ms(before, mock_lag_buckets(mock, first_tokens=True), share=0.5)
            + statistics.median(df["ttfb_ms"]))
    assert -0.5 < statistics.median(df["ttft_ms"]) - 100 < 2 + late
    assert abs(statistics.median(df["tpot_ms"]) - 10) < 0.5
    assert (df["output_tokens"] == 40).all() and (df["output_tokens_usage"] == 40).all()
    assert (df["output_tokens_tokenizer"] == 40).all() and (df["output_tokens_source"] == "usage").all()
    assert df["user_id"].nunique() == users
    assert "=== tokenstorm report" in result.stdout and f"requests {total}   ok {total}" in result.stdout
    meta = json.loads((tmp_path / "run-local.json").read_text())
    assert meta["records"] == total and meta["settings"]["model"] == "mock-llm"
    export = json.loads((tmp_path / "results.json").read_text())
    assert len(export["requests"]) == total and export["summary"]["ok"] == total
    assert chat_requests_seen(mock) == total  # exactly N sent, not one more


def test_the_api_key_appears_in_no_output(start_mock, tmp_path):
    secret = "sk-test-" + "Zq7" * 12
    mock = start_mock("--api-key", secret, "--ttft-ms", "5", "--itl-ms", "1")
    result = run_locust(mock.url, "-u", "3", "-r", "3", "--total-requests", "15", "--results-dir", str(tmp_path),
                        "--csv", str(tmp_path / "locust"), "--html", str(tmp_path / "report.html"), key=secret)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(records(tmp_path)) == 15
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 6
    for path in files:
        assert secret not in path.read_text(errors="replace"), path
    assert secret not in result.stdout and secret not in result.stderr


def test_failures_are_classified_and_counted_once(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "5", "--itl-ms", "1", "--config", "tests/data/mock-fast-stall.yaml")
    result = run_locust(mock.url, "-u", "2", "-r", "2", "--total-requests", "10", "--results-dir", str(tmp_path),
                        "--header", "X-Mock-Fault: truncate")
    df = records(tmp_path)
    assert len(df) == 10 and (df["error_type"] == "truncated").all()
    assert (df["chunks"] == 3).all() and df["ttft_ms"].notna().all()
    assert "failed 10 (100.00% of requests)" in result.stdout and "truncated 10" in result.stdout
    assert result.returncode == 1  # Locust's exit code on failures


@pytest.mark.parametrize(("args", "key", "needle"), [
    (["--total-requests", "-5"], "mock-key", "argument --total-requests: must be 0 or more, got -5"),
    (["--temperature", "7"], "mock-key", "argument --temperature: must be between 0 and 2, got 7"),
    (["--results-dir", "/proc/no-such/dir"], "mock-key", "--results-dir /proc/no-such/dir: cannot write there"),
    ([], None, "OPENAI_API_KEY is not set and http://127.0.0.1:"),
    (["--prompt-file", "/nonexistent.txt"], "mock-key", "--prompt-file /nonexistent.txt: cannot read it"),
    (["--header", "NoColonHere"], "mock-key", "argument --header: 'NoColonHere' is not 'Name: value'"),
    (["-u", "-1"], "mock-key", "-u/--users: must be 0 or more, got -1"),
])
def test_bad_options_fail_in_one_line_before_any_request(shared_mock, tmp_path, args, key, needle):
    before = chat_requests_seen(shared_mock)
    extra = [] if "--results-dir" in args else ["--results-dir", str(tmp_path)]
    result = run_locust(shared_mock.url, "-u", "1", "--total-requests", "3", *extra, *args, key=key, timeout=60)
    assert result.returncode == 2, result.stdout[-500:] + result.stderr[-1500:]
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert chat_requests_seen(shared_mock) == before


@pytest.mark.parametrize(("host", "needle"), [
    ("ftp://127.0.0.1:1", "--host: URL 'ftp://127.0.0.1:1' must start with http:// or https://"),
    ("http://", "--host: URL 'http://' has no host"),
    ("http://127.0.0.1:1", "cannot reach --host http://127.0.0.1:1: connect to 127.0.0.1:1 failed"),
])
def test_bad_host(tmp_path, host, needle):
    result = run_locust(host, "-u", "1", "--total-requests", "1", "--results-dir", str(tmp_path), timeout=60)
    assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr


def test_sigterm_flushes_records_and_keeps_cut_streams(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "20", "--itl-ms", "20")
    env = clean_env()
    proc = subprocess.Popen(locust_cmd(mock.url, "-u", "4", "-r", "4", "--max-tokens", "40", "--results-dir",
                                       str(tmp_path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    deadline = time.monotonic() + 60
    path = tmp_path / "requests-local.csv"

    def finished() -> int:
        return path.read_text().count("\n") - 1 if path.exists() else 0

    # SIGTERM once 5 requests ended and all 4 in flight have had their first token (the users run in
    # step: right after a record, the next requests may not have one yet), read in the order that errs late
    while time.monotonic() < deadline and not (finished() >= 5 and first_tokens_sent(mock) - finished() >= 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    df = records(tmp_path)
    assert (df["status"] == "ok").sum() >= 5
    cut = df[df["error_type"] == "cancelled"]
    assert 1 <= len(cut) <= 4 and cut["ttft_ms"].notna().any()
    assert (tmp_path / "run-local.json").exists() and "=== tokenstorm report" in out
    assert f"cancelled {len(cut)}" in out


def test_model_is_discovered_and_output_matches_the_tokenizer(shared_mock, tmp_path):
    result = run_locust(shared_mock.url + "/v1", "-u", "2", "-r", "2", "--total-requests", "6", "--results-dir",
                        str(tmp_path), "--no-include-usage", "--max-tokens", "500",
                        "--max-tokens-field", "max_completion_tokens")
    assert result.returncode == 0, result.stderr[-1500:]
    df = records(tmp_path)
    assert (df["model"] == "mock-llm").all() and (df["output_tokens_source"] == "tokenizer").all()
    assert (df["output_tokens"] == 24).all() and df["output_tokens_usage"].isna().all()


def test_conf_file_and_environment_variables(shared_mock, tmp_path):
    """Options work from a .conf file, LOCUST_* variables and the command line (which wins)."""
    result = run_locust(shared_mock.url, "--config", str(ROOT / "configs" / "locust" / "mock-quick.conf"),
                        "--results-dir", str(tmp_path), "-u", "2", env={"LOCUST_TOTAL_REQUESTS": "7"})
    assert result.returncode == 0, result.stderr[-1500:]
    df = records(tmp_path)
    assert len(df) == 7 and df["user_id"].nunique() == 2
    meta = json.loads((tmp_path / "run-local.json").read_text())
    assert meta["settings"]["max_tokens"] == 128 and meta["settings"]["slos"] == {"ttft_ms": 500, "tpot_ms": 50}


def test_a_full_disk_stops_the_run_and_keeps_every_record_whole(start_mock, tmp_path):
    """Files may grow to 40 kB (RLIMIT_FSIZE: writes past it fail as on a full disk): the run stops
    at the first failed write, with one line and exit 2, and the records file holds whole rows."""
    mock = start_mock("--ttft-ms", "20", "--itl-ms", "2", "--output-tokens", "10")

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    result = subprocess.run(locust_cmd(mock.url, "-u", "4", "-r", "4", "--total-requests", "3000", "--results-dir",
                                       str(tmp_path)), capture_output=True, text=True, timeout=120, env=clean_env(),
                            cwd=ROOT, preexec_fn=limit_file_size)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    failure = re.search(r"tokenstorm: cannot write records to \S+requests-local.csv \(File too large\): (\d+) kept "
                        r"whole there, (\d+) not written; stopping the run", result.stderr)
    assert failure, result.stderr[-2000:]
    text = (tmp_path / "requests-local.csv").read_text()
    assert text.endswith("\n") and len(text.encode()) <= 40_000
    assert len(records(tmp_path)) == int(failure.group(1))  # every row on disk is whole and counted
    assert chat_requests_seen(mock) < 1500  # it stopped, rather than sending all 3,000 into the void
