"""Real Locust master + workers on 127.0.0.1: exact global quota, merged records, worker loss."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from locust_procs import LOCUST, LOCUSTFILE, clean_env, free_port, start_master, start_worker, stop_all, wait_until
from mock_metrics import chat_requests_seen, running_streams

from analysis.stats import load_records
from tokenstorm.mockproc import ROOT


def assert_every_request_is_a_record(df: pd.DataFrame, mock) -> None:
    """Each request the mock answered has a record; a record beyond those can only be a stream cut
    before its response began (the server may not have read it yet)."""
    seen = chat_requests_seen(mock)
    cut_early = (df["ttfb_ms"].isna() & (df["error_type"] == "cancelled")).sum()
    assert seen <= len(df) <= seen + cut_early, (seen, len(df), cut_early)


def test_master_and_two_workers_make_exactly_the_total(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "20", "--itl-ms", "2", "--output-tokens", "30")
    port = free_port()
    master = start_master(mock.url, port, 2, "-u", "30", "-r", "30", "--total-requests", "300",
                          "--results-dir", str(tmp_path), "--csv", str(tmp_path / "locust"), "--max-tokens", "50")
    workers = [start_worker(port) for _ in range(2)]
    try:
        out, err = master.communicate(timeout=120)
    finally:
        stop_all(master, *workers)
    assert master.returncode == 0, err[-3000:]
    df = load_records(tmp_path)
    assert len(df) == 300 and df["request_id"].is_unique and (df["status"] == "ok").all()
    assert sorted(df["worker_id"].unique()) == ["w0", "w1"]
    assert sorted(p.name for p in tmp_path.glob("requests-*.csv")) == ["requests-w0.csv", "requests-w1.csv"]
    stats = pd.read_csv(tmp_path / "locust_stats.csv")
    rows = {(t, n): c for t, n, c in zip(stats["Type"], stats["Name"], stats["Request Count"], strict=True)}
    assert rows[("POST", "/v1/chat/completions")] == 300
    assert rows[("TTFT", "/v1/chat/completions")] == 300 and rows[("TPOT", "/v1/chat/completions")] == 300
    meta = json.loads((tmp_path / "run-master.json").read_text())
    per_worker = {w: facts["records"] for w, facts in meta["workers"].items()}
    assert sum(per_worker.values()) == 300 and all(n > 0 for n in per_worker.values())
    assert per_worker == df["worker_id"].value_counts().to_dict()
    assert meta["tickets"] == {"total": 300, "issued": 300, "used": 300} and meta["lost"] == {}
    assert all(facts["client"]["samples"] > 0 for facts in meta["workers"].values())
    assert "requests 300   ok 300" in out and "workers: w0" in out
    # options given to the master reached the workers
    assert (df["model"] == "mock-llm").all() and (df["output_tokens"] == 30).all()


def test_a_killed_worker_does_not_stop_the_run(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "20", "--itl-ms", "20", "--output-tokens", "20")  # ~0.4 s per request
    port = free_port()
    master = start_master(mock.url, port, 3, "-u", "30", "-r", "30", "--total-requests", "450",
                          "--results-dir", str(tmp_path))
    workers = [start_worker(port) for _ in range(3)]
    try:
        wait_until(lambda: chat_requests_seen(mock) >= 90, "three rounds of the 30 streams")
        workers[1].send_signal(signal.SIGKILL)
        out, err = master.communicate(timeout=120)
    finally:
        stop_all(master, *workers)
    assert master.returncode in (0, 1), err[-3000:]
    df = load_records(tmp_path)
    assert df["request_id"].is_unique
    assert len(df) == 450  # the lost worker's unused tickets were done by the others
    meta = json.loads((tmp_path / "run-master.json").read_text())
    assert len(meta["lost"]) == 1
    (lost,) = meta["lost"]
    finished = meta["lost"][lost]["requests_finished"]
    assert finished == (df["worker_id"] == lost).sum() > 0
    assert f"worker {lost} was lost during the run after {finished} finished requests" in out


def test_processes_flag_forks_workers(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "5", "--itl-ms", "1", "--output-tokens", "10")
    port = str(free_port())
    result = subprocess.run([LOCUST, "-f", LOCUSTFILE, "--headless", "--only-summary", "--host", mock.url,
                             "--processes", "2", "-u", "10", "-r", "10", "--total-requests", "100",
                             "--results-dir", str(tmp_path), "--master-bind-port", port, "--master-port", port],
                            capture_output=True, text=True, env=clean_env(), cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    df = load_records(tmp_path)
    assert len(df) == 100 and df["worker_id"].nunique() == 2
    assert Path(tmp_path / "run-master.json").exists()


def test_a_worker_sent_sigterm_flushes_its_records_first(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "50", "--itl-ms", "50", "--output-tokens", "40")  # ~2 s per request
    port = free_port()
    master = start_master(mock.url, port, 2, "-u", "8", "-r", "8", "-t", "12s", "--stop-timeout", "0",
                          "--results-dir", str(tmp_path))
    workers = [start_worker(port) for _ in range(2)]
    try:
        wait_until(lambda: running_streams(mock) == 8, "every stream of both workers started")
        time.sleep(0.5)  # past their first token (50 ms), far from their end (2 s)
        workers[0].send_signal(signal.SIGTERM)
        assert workers[0].wait(timeout=30) == 0
        master.communicate(timeout=120)
    finally:
        stop_all(master, *workers)
    df = load_records(tmp_path)
    meta = json.loads((tmp_path / "run-master.json").read_text())
    stopped = df.groupby("worker_id", observed=True)["t_start"].max().idxmin()  # the one that left early
    cut = df[(df["worker_id"] == stopped) & (df["error_type"] == "cancelled")]
    assert len(cut) >= 1 and cut["ttft_ms"].notna().any()  # its in-flight streams, with their partial timings
    assert meta["lost"] == {}  # it left in good order, it was not lost


def test_workers_of_a_dead_master_stop_their_load_and_exit(start_mock, tmp_path):
    # ~8 s streams, longer than the workers may take to give up on their master (asserted < 10 s):
    # the first round is surely mid-flight then (2-s ones all finished before a busy machine's late stop)
    mock = start_mock("--ttft-ms", "20", "--itl-ms", "20", "--output-tokens", "400")
    port = free_port()
    master = start_master(mock.url, port, 2, "-u", "6", "-r", "6", "-t", "60s", "--max-tokens", "400",
                          "--results-dir", str(tmp_path))
    workers = [start_worker(port, "--master-lost-after", "3") for _ in range(2)]
    try:
        wait_until(lambda: running_streams(mock) == 6, "every stream of both workers mid-flight")
        master.send_signal(signal.SIGKILL)  # no quit message reaches the workers
        killed = time.monotonic()
        master.wait()
        for worker in workers:
            worker.wait(timeout=30)
        gone_after = time.monotonic() - killed
    finally:
        stop_all(master, *workers)
    assert gone_after < 10  # after --master-lost-after 3, not Locust's 60 s: their users stopped with them
    # what the master wrote before it died, plus what each worker kept because the master never confirmed it
    unsent = sorted(p.name for p in tmp_path.glob("requests-*-unsent.csv"))
    assert unsent == ["requests-w0-unsent.csv", "requests-w1-unsent.csv"]
    df = load_records(tmp_path)
    assert df["request_id"].is_unique and (df["error_type"] == "cancelled").sum() >= 1
    assert_every_request_is_a_record(df, mock)
    report = subprocess.run([sys.executable, "-m", "analysis", "report", str(tmp_path)], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "WARNING: the master died during the run; records its workers kept: requests-w0-unsent.csv" in report.stdout
    assert "## Master lost" in (tmp_path / "report.md").read_text()


def test_a_master_stopped_with_sigterm_keeps_every_request(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "20", "--itl-ms", "20", "--output-tokens", "40")  # ~0.8 s per request
    port = free_port()
    master = start_master(mock.url, port, 2, "-u", "8", "-r", "8", "-t", "60s", "--results-dir", str(tmp_path))
    workers = [start_worker(port) for _ in range(2)]
    try:
        # a first round of 8 done, and the second round of streams of both workers mid-flight
        wait_until(lambda: chat_requests_seen(mock) >= 16, "a second round of 8 streams")
        master.send_signal(signal.SIGTERM)
        out, err = master.communicate(timeout=60)
        for worker in workers:
            assert worker.wait(timeout=30) == 0  # told to quit by the master, not left behind
    finally:
        stop_all(master, *workers)
    df = load_records(tmp_path)
    # every request the server saw is a record: the finished ones and the streams cut by the stop
    assert df["request_id"].is_unique
    assert_every_request_is_a_record(df, mock)
    assert (df["status"] == "ok").sum() >= 8 and (df["error_type"] == "cancelled").sum() >= 1
    meta = json.loads((tmp_path / "run-master.json").read_text())
    assert meta["lost"] == {} and sum(w["records"] for w in meta["workers"].values()) == len(df)
    assert "=== tokenstorm report" in out and "Traceback" not in err, err[-3000:]
