"""Open-loop arrivals, stages, sweeps and calibration, with real Locust runs against the mock."""

from __future__ import annotations

import json
import math

import numpy as np
from locust_procs import free_port, run, start_master, start_worker, stop_all

from analysis.stats import load_records
from tokenstorm.client.arrivals import schedule, share
from tokenstorm.mockproc import ROOT


def ks_exponential(gaps: np.ndarray, rate: float) -> float:
    """Kolmogorov-Smirnov statistic of `gaps` against the exponential distribution of `rate`."""
    x = np.sort(gaps)
    n = len(x)
    cdf = 1 - np.exp(-rate * x)
    return float(max((np.arange(1, n + 1) / n - cdf).max(), (cdf - np.arange(n) / n).max()))


def test_constant_rate_gives_the_exact_schedule(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "20", "--itl-ms", "1", "--output-tokens", "10")
    result = run("chat_stream.py", mock.url, "-u", "10", "-r", "10", "--arrival-rate", "20", "--arrival", "constant",
                 "--arrival-duration", "10", "--results-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    records = load_records(tmp_path).sort_values("t_intended")
    assert abs(len(records) - 200) <= 2 and (records["status"] == "ok").all()
    gaps = np.diff(records["t_intended"].to_numpy())
    assert np.allclose(gaps, 0.05, atol=1e-6)  # unix seconds in the CSV carry ~0.2 us of float rounding
    # sent on time: late only by what the client's own event loop was measured to lag (a busy machine)
    loop_lag = json.loads((tmp_path / "run-local.json").read_text())["client"]["loop_lag_ms_max"]
    lag = records["schedule_lag_ms"]
    assert lag.quantile(0.99) < 5 + loop_lag and lag.max() < 50 + loop_lag
    assert "open loop: 200 arrivals at 20.00 req/s intended" in result.stdout


def test_the_readme_open_loop_example_without_r_keeps_its_schedule(start_mock, tmp_path):
    """The README's example gives no -r: at Locust's default 1 user/s the first seconds had too few
    users and the schedule fell behind. The in-flight cap is spawned at once instead."""
    mock = start_mock("--ttft-ms", "20", "--itl-ms", "5", "--output-tokens", "40")
    result = run("chat_stream.py", mock.url, "-u", "40", "--arrival-rate", "20", "--arrival", "poisson",
                 "--arrival-duration", "4", "--results-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "spawning all 40 users (the cap on streams in flight) at once" in result.stderr
    records = load_records(tmp_path)
    loop_lag = json.loads((tmp_path / "run-local.json").read_text())["client"]["loop_lag_ms_max"]
    # ~4 streams of ~0.22 s in flight at 20 req/s; with 1 user/s the first seconds were ~0.5 s late
    assert records["schedule_lag_ms"].max() < 50 + loop_lag


def test_poisson_gaps_are_exponential(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "5", "--itl-ms", "0", "--output-tokens", "5")
    result = run("chat_stream.py", mock.url, "-u", "20", "-r", "20", "--arrival-rate", "80", "--arrival", "poisson",
                 "--arrival-duration", "8", "--arrival-seed", "3", "--results-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    records = load_records(tmp_path).sort_values("t_intended")
    gaps = np.diff(records["t_intended"].to_numpy())
    n = len(gaps)
    assert 500 < n < 780
    assert ks_exponential(gaps, 80) < 1.63 / math.sqrt(n)  # KS at the 1% level
    # and the same schedule, regenerated, is the one the run followed
    offsets = np.array(list(schedule("poisson", [(8.0, 80.0)], seed=3)))
    assert np.allclose(np.diff(offsets), gaps, atol=1e-5)


def test_gamma_burstiness_widens_the_gaps():
    rng_gaps = np.diff(np.array(list(schedule("gamma", [(200.0, 50.0)], burstiness=3.0, seed=1))))
    assert abs(rng_gaps.mean() - 0.02) < 0.002 and abs(rng_gaps.std() / rng_gaps.mean() - 3.0) < 0.3


def test_workers_share_one_schedule(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "5", "--itl-ms", "0", "--output-tokens", "5")
    port = free_port()
    master = start_master(mock.url, port, 2, "-u", "20", "-r", "20", "--arrival-rate", "25", "--arrival",
                          "constant", "--arrival-duration", "6", "--results-dir", str(tmp_path))
    workers = [start_worker(port) for _ in range(2)]
    try:
        _out, err = master.communicate(timeout=120)
    finally:
        stop_all(master, *workers)
    assert master.returncode == 0, err[-2000:]
    records = load_records(tmp_path).sort_values("t_intended")
    assert len(records) == 150 and records["worker_id"].nunique() == 2  # 25/s for 6 s in total, not 2 x 25
    assert np.allclose(np.diff(records["t_intended"].to_numpy()), 0.04, atol=1e-6)
    per_worker = records["worker_id"].value_counts().to_list()
    assert per_worker == [75, 75]


def test_share_splits_without_overlap():
    offsets = list(schedule("constant", [(10.0, 10.0)]))
    parts = [list(share(iter(offsets), i, 3)) for i in range(3)]
    assert sorted(k for part in parts for k, _ in part) == list(range(100))


def test_saturated_server_shows_queueing_from_the_intended_time(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "50", "--itl-ms", "10", "--output-tokens", "20", "--max-num-seqs", "2")
    # capacity: 2 slots / ~0.24 s per request ~ 8 req/s; the arrivals come at 16 req/s
    result = run("chat_stream.py", mock.url, "-u", "200", "-r", "200", "--arrival-rate", "16", "--arrival",
                 "constant", "--arrival-duration", "5", "--max-tokens", "20", "--results-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    records = load_records(tmp_path).sort_values("t_intended")
    loop_lag = json.loads((tmp_path / "run-local.json").read_text())["client"]["loop_lag_ms_max"]
    # the client kept its schedule (late only by what its own event loop was measured to lag)
    assert len(records) == 80 and records["schedule_lag_ms"].quantile(0.95) < 10 + loop_lag
    ttft = records["ttft_ms"].to_numpy()
    # the queue grew with every arrival (the median: one early request a starved mock sent late is no queue)
    assert ttft[-10:].mean() > 3000 and np.median(ttft[:5]) < ttft[-10:].mean() / 5
    assert np.corrcoef(np.arange(len(ttft)), ttft)[0, 1] > 0.95


def test_a_client_that_falls_behind_says_so(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "50", "--itl-ms", "10", "--output-tokens", "20")
    # 2 users each take ~0.24 s per request: ~8 req/s at most, while the arrivals come at 20 req/s
    result = run("chat_stream.py", mock.url, "-u", "2", "-r", "2", "--arrival-rate", "20", "--arrival",
                 "constant", "--arrival-duration", "3", "--max-tokens", "20", "--results-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    records = load_records(tmp_path).sort_values("t_intended")
    lag = records["schedule_lag_ms"].to_numpy()
    assert lag[:2].max() < 50 and lag[-5:].min() > 1000  # sends slip further behind with every arrival
    assert "WARNING: the client fell behind its schedule" in result.stdout and "raise -u" in result.stdout


def test_stages_follow_the_scenario(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "5", "--itl-ms", "0", "--output-tokens", "5")
    scenario = tmp_path / "stages.yaml"
    scenario.write_text((ROOT / "configs" / "scenarios" / "ramp.yaml").read_text()
                        .replace("duration_s: 10", "duration_s: 3"))
    result = run("staged.py", mock.url, "--scenario", str(scenario), "--arrival", "constant",
                 "--results-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-2000:]
    records = load_records(tmp_path / "run")
    t0 = records["t_intended"].min()
    stage = np.floor((records["t_intended"] - t0 + 1e-6) / 3).astype(int)
    assert stage.value_counts().sort_index().to_list() == [12, 36, 72]  # 4, 12, 24 req/s for 3 s each
