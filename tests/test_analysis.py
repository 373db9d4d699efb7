"""Analysis on results of real short runs against the mock: exact numbers, files, plots, compare, sweep."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from locust_procs import concurrent_runs

from analysis.compare import compare, proportion_change_interval
from analysis.curve import knee, verdict
from analysis.metrics import PERCENTILES, counted, percentile_key
from analysis.stats import load_records
from tokenstorm.loadgen.options import DEFAULT_PROMPT
from tokenstorm.mockproc import ROOT


def analysis(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analysis", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three runs at the same time against one shared mock (TTFT 93.4 ms + 0.2 ms per prompt token,
    jitter 0.15, some HTTP 500s). base and rerun: the same configuration (the mock draws jitter and
    faults per request, so the rerun's noise is its own, not the base's replayed); slower: a prompt
    100 tokens longer, +20 ms of prefill on ~100 ms, TTFT 20% higher. One mock and one time, so all
    three share whatever else the machine is doing: what differs is run-to-run noise and the planted
    change, not a busier minute or a mock process the OS ran worse (seen with a mock each: ITL max
    +60% for the rerun, the planted +20% measured +12%)."""
    root = tmp_path_factory.mktemp("runs")
    config = root / "mock.yaml"
    config.write_text("faults:\n  probabilities:\n    http_500: 0.04\n")
    mock = ["--config", str(config), "--ttft-ms", "93.4", "--per-input-token-ms", "0.2", "--itl-ms", "4",
            "--jitter", "0.15", "--output-tokens", "40"]  # the default prompt is 33 tokens: 100 ms
    longer = DEFAULT_PROMPT + " load" * 100  # 133 tokens: 120 ms
    plans = {name: (mock, ["-u", "8", "-r", "8", "--total-requests", "400", "--csv", str(root / name / "locust"),
                           "--csv-full-history", "--slo-ttft-ms", "120", "--exit-code-on-error", "0", *extra])
             for name, extra in (("base", []), ("rerun", []), ("slower", ["--prompt", longer]))}
    return concurrent_runs(root, plans)


def test_report_files_and_exact_percentiles(runs):
    folder = runs["base"]
    result = analysis("report", str(folder))
    assert result.returncode == 0, result.stderr
    summary = json.loads((folder / "summary.json").read_text())
    records = load_records(folder)
    ok = records[records["status"] == "ok"]
    for metric in ("ttft_ms", "tpot_ms", "e2e_ms", "tokens_per_s", "ttfb_ms", "itl_max_ms", "output_tokens"):
        stats = summary["summary"]["metrics"][metric]
        values = ok[metric].dropna().to_numpy()
        assert stats["count"] == len(values)
        for p in PERCENTILES:
            assert stats[percentile_key(p)] == pytest.approx(np.percentile(values, p), rel=1e-12), (metric, p)
        assert stats["p99_9"] is not None and "p99_9" in stats["few_samples"]  # ~380 samples < 1,000
    counts = summary["counts"]
    assert counts["total"] == 400 and counts["failed"] == (records["status"] != "ok").sum() > 0
    assert summary["summary"]["failures_by_class"] == {"http_status": counts["failed"]}
    assert summary["summary"]["failures_by_status"] == {"500": counts["failed"]}
    assert "goodput_req_s" in summary["summary"] and summary["config"]["slos"] == {"ttft_ms": 120}
    assert "api_key" not in json.dumps(summary["config"]).replace("api_key_env", "").replace("api_key_set", "")
    md = (folder / "report.md").read_text()
    assert "| TTFT (ms) |" in md and "## Errors" in md and "| http_status |" in md and "| P99.9 |" in md
    html = (folder / "report.html").read_text()
    assert html.count("<table>") >= 2 and html.count("data:image/png;base64,") >= 4
    for name in ("ttft", "tpot", "over_time", "errors"):
        image = matplotlib.image.imread(folder / "plots" / f"{name}.png")
        assert image.shape[0] > 200 and image.std() > 0.05, name  # a real picture, not a blank canvas


def test_per_request_export_in_the_simple_shape(runs):
    assert analysis("report", str(runs["rerun"]), "--per-request", "--warmup", "0.5").returncode == 0
    export = json.loads((runs["rerun"] / "summary.json").read_text())
    assert set(export) >= {"config", "summary", "counts", "requests"}
    assert 0 < len(export["requests"]) < 400 and export["summary"]["warmup_s"] == 0.5


def test_compare_flags_the_planted_regression_and_not_the_rerun(runs, tmp_path):
    regressed = analysis("compare", str(runs["base"]), str(runs["slower"]), "--json", str(tmp_path / "c.json"))
    assert regressed.returncode == 1, regressed.stdout
    result = json.loads((tmp_path / "c.json").read_text())
    ttft = {r["stat"]: r for r in result["rows"] if r["metric"] == "ttft_ms"}
    assert ttft["p50"]["regression"] and 15 < ttft["p50"]["change_pct"] < 25
    assert ttft["p50"]["ci_low_pct"] > 10
    assert "ttft_ms p50" in result["regressions"]
    same = analysis("compare", str(runs["base"]), str(runs["rerun"]))
    assert same.returncode == 0, same.stdout
    assert "regressions: none" in same.stdout


def test_sweep_curve_and_knee(runs, tmp_path):
    result = analysis("sweep", str(runs["base"]), str(runs["slower"]), str(runs["rerun"]), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    points = pd.read_csv(tmp_path / "sweep.csv")
    assert len(points) == 3 and (points["concurrency"] == 8).all()
    assert matplotlib.image.imread(tmp_path / "sweep.png").std() > 0.05


def test_bad_input_is_one_line_naming_the_file(runs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = analysis("report", str(empty))
    assert result.returncode == 2 and result.stderr.strip() == f"analysis: {empty}: no requests-*.csv files"
    other = tmp_path / "other-tool"
    other.mkdir()
    (other / "requests-x.csv").write_text("timestamp,latency\n1,2\n")
    result = analysis("report", str(other))
    assert result.returncode == 2 and "requests-x.csv: missing columns request_id" in result.stderr
    cut = tmp_path / "cut"
    shutil.copytree(runs["base"], cut)
    path = cut / "requests-local.csv"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    result = analysis("report", str(cut))
    assert result.returncode == 2 and "requests-local.csv line 401: the last record is cut short" in result.stderr
    missing = tmp_path / "missing"
    missing.mkdir()
    frame = pd.read_csv(runs["base"] / "requests-local.csv").drop(columns=["ttft_ms"])
    frame.to_csv(missing / "requests-local.csv", index=False)
    result = analysis("report", str(missing))
    assert result.returncode == 2 and "missing columns ttft_ms" in result.stderr
    bad = tmp_path / "bad-number"
    bad.mkdir()
    frame = pd.read_csv(runs["base"] / "requests-local.csv", keep_default_na=False)
    frame.loc[5, "e2e_ms"] = "fast"
    frame.to_csv(bad / "requests-local.csv", index=False)
    result = analysis("report", str(bad))
    assert result.returncode == 2 and "requests-local.csv line 7: e2e_ms 'fast' is not a number" in result.stderr
    for result in (analysis("compare", str(empty), str(runs["base"])), analysis("sweep", str(empty))):
        assert result.returncode == 2 and "Traceback" not in result.stderr


def test_a_plain_locust_folder_reports_from_its_csvs(runs, tmp_path):
    """Without per-request records, the report still reads Locust's stats and history CSVs."""
    folder = tmp_path / "locust-only"
    folder.mkdir()
    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv"):
        shutil.copy(runs["base"] / name, folder / name)
    result = analysis("report", str(folder))
    assert result.returncode == 0, result.stderr
    md = (folder / "report.md").read_text()
    assert "## Locust's own statistics" in md and "| TTFT | /v1/chat/completions |" in md
    assert "## Locust's failures" in md and "HTTP 500" in md  # the base run had injected 500s
    assert matplotlib.image.imread(folder / "plots" / "over_time.png").std() > 0.05


def test_a_worker_copy_of_written_records_counts_once(runs, tmp_path):
    """A worker whose master died keeps what the master never confirmed; some of it may be on the
    master's disk already. Each record counts once; the kept ones the master never wrote count too."""
    base = pd.read_csv(runs["base"] / "requests-local.csv", keep_default_na=False)
    base[:300].to_csv(tmp_path / "requests-local.csv", index=False)  # what the master wrote
    base[280:].to_csv(tmp_path / "requests-local-unsent.csv", index=False)  # the worker's copy: 20 overlap
    df = load_records(tmp_path)
    assert len(df) == 400 and df["request_id"].is_unique
    assert sorted(df["request_id"]) == sorted(load_records(runs["base"])["request_id"])


def test_knee_is_the_point_before_the_first_small_gain_and_none_while_rising():
    rising = pd.DataFrame({"concurrency": [1, 2, 4, 8], "output_tok_s": [100, 190, 350, 600]})
    assert knee(rising) is None and verdict(rising, None).startswith("not saturated")
    flat = pd.DataFrame({"concurrency": [1, 2, 4, 8], "output_tok_s": [100, 190, 200, 205]})
    assert knee(flat) == 1 and verdict(flat, 1) == "knee: 2 streams"
    assert knee(flat, min_gain=0.03) == 2


def test_failure_ratio_change_is_judged_by_its_interval(runs):
    # Newcombe (1998), method 10, his worked example: 56/70 - 48/80 = 0.2000, 95% interval 0.0524 to 0.3339
    low, high = proportion_change_interval(48, 80, 56, 70, 0.95)
    assert round(low, 4) == 0.0524 and round(high, 4) == 0.3339
    base = load_records(runs["base"])
    noisy, planted = base.copy(), base.copy()
    ok = base.index[base["status"] == "ok"]
    noisy.loc[ok[:4], ["status", "error_type"]] = ["error", "http_status"]  # +1 point: within the noise
    planted.loc[ok[:60], ["status", "error_type"]] = ["error", "http_status"]  # +15 points
    rows = {name: next(r for r in compare(base, frame, resamples=200)["rows"] if r["metric"] == "failure_ratio")
            for name, frame in (("noisy", noisy), ("planted", planted))}
    assert rows["noisy"]["change_pct"] == pytest.approx(400 / len(counted(base))) and not rows["noisy"]["regression"]
    assert rows["noisy"]["ci_low_pct"] < 0 < rows["noisy"]["ci_high_pct"]
    assert rows["planted"]["regression"] and rows["planted"]["ci_low_pct"] > 5
