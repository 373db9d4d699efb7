"""--server-metrics: the target's own /metrics scraped during real runs against the real mock,
and the report's reconciliation of the server's latency histograms with the client's records."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
from locust_procs import clean_env, free_port, locust_cmd, run_locust, start_master, start_worker, stop_all, wait_until
from mock_metrics import chat_requests_seen

from analysis import server_metrics as analysis_metrics
from analysis.stats import load_records
from tokenstorm.loadgen.server_metrics import parse_samples
from tokenstorm.mockproc import ROOT

MOCK = ("--ttft-ms", "40", "--itl-ms", "2", "--output-tokens", "30", "--jitter", "0")


def report(folder) -> dict:
    done = subprocess.run([sys.executable, "-m", "analysis", "report", str(folder)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((folder / "summary.json").read_text())["summary"]


def tokenstorm_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tokenstorm:")]


def test_a_run_scrapes_the_mock_and_the_report_reconciles_ttft(start_mock, tmp_path):
    mock = start_mock(*MOCK)
    total = 160  # 4 streams of ~100 ms: about 4 s, so several 2 s scrapes
    result = run_locust(mock.url, "-u", "4", "-r", "4", "--total-requests", str(total), "--results-dir",
                        str(tmp_path), "--server-metrics", mock.url + "/metrics")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "server metrics" not in result.stderr  # no scrape failed
    samples = pd.read_csv(tmp_path / "server-metrics.csv", keep_default_na=False)
    assert list(samples.columns) == ["t", "metric", "labels", "value"]
    times = sorted(samples["t"].unique())
    records = load_records(tmp_path)
    assert len(records) == total and (records["status"] == "ok").all()
    run_s = float(records["t_start"].max() - records["t_start"].min())
    assert len(times) >= 1 + run_s // 2  # one before the load, one every 2 s, one at the end
    assert times[0] <= records["t_start"].min() and times[-1] >= (records["t_start"] + records["e2e_ms"] / 1000).max()
    last = samples[samples["t"] == times[-1]].set_index("metric")["value"]
    assert last["mock_time_to_first_token_seconds_count"] == total
    assert last["mock_output_tokens_total"] == records["output_tokens"].sum()
    running = samples[samples["metric"] == "mock_running_streams"]["value"]
    assert running.iloc[0] == 0 and running.max() >= 1  # before the load, then streams seen running
    assert json.loads((tmp_path / "run-local.json").read_text())["settings"]["server_metrics"] == mock.url + "/metrics"

    summary = report(tmp_path)
    facts = summary["server_metrics"]
    assert facts["scrapes"] == len(times)
    assert facts["sources"]["running"] == "mock_running_streams" and facts["sources"]["queue"] == "mock_queued_requests"
    (ttft,) = [r for r in facts["reconciliation"] if r["metric"] == "ttft_ms"]
    assert ttft["server_metric"] == "mock_time_to_first_token_seconds"
    assert ttft["client_requests"] == ttft["server_observations"] == total
    assert abs(ttft["client_mean_ms"] - records["ttft_ms"].mean()) < 1e-6
    assert ttft["server_mean_ms"] >= 40  # the mock's prefill, as the server counts it
    # The server's clock starts when the request reached it and stops as its first chunk leaves:
    # the client's TTFT holds that plus two trips over loopback, about what a TTFB costs here.
    ttfb = records["ttfb_ms"]
    assert -0.1 * ttfb.median() <= ttft["overhead_ms"] <= ttfb.quantile(0.99), (ttft, ttfb.describe())
    md = (tmp_path / "report.md").read_text()
    assert "## Server metrics" in md and "Client-side overhead (ms)" in md
    assert "| TTFT | mock_time_to_first_token_seconds |" in md
    assert (tmp_path / "plots" / "server_metrics.png").stat().st_size > 10_000
    assert "plots/server_metrics.png" in md and "Server metrics over time" in (tmp_path / "report.html").read_text()

    # --warmup: the window starts at the first scrape after it; at most the 4 streams then in
    # flight are counted on one side only
    done = subprocess.run([sys.executable, "-m", "analysis", "report", str(tmp_path), "--warmup", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    facts = json.loads((tmp_path / "summary.json").read_text())["summary"]["server_metrics"]
    (warm,) = [r for r in facts["reconciliation"] if r["metric"] == "ttft_ms"]
    assert warm["window_start"] >= records["t_start"].min() + 1 and warm["window_start"] in times
    assert 0 < warm["server_observations"] < total and abs(warm["client_requests"] - warm["server_observations"]) <= 4
    assert -0.1 * ttfb.median() <= warm["overhead_ms"] <= ttfb.quantile(0.99), warm


def test_a_url_that_gives_no_metrics_is_one_line_and_exit_2_before_any_load(shared_mock, tmp_path):
    for url in (f"http://127.0.0.1:{free_port()}/metrics", shared_mock.url + "/no-metrics-here",
                "ftp://127.0.0.1/metrics", "http://user:hunter2@127.0.0.1/metrics"):
        folder = tmp_path / str(abs(hash(url)))
        result = run_locust(shared_mock.url, "-u", "1", "--total-requests", "3", "--results-dir", str(folder),
                            "--server-metrics", url, timeout=60)
        assert result.returncode == 2, (url, result.stderr[-2000:])
        lines = tokenstorm_lines(result.stderr)
        assert len(lines) == 1 and lines[0].startswith("tokenstorm: --server-metrics: "), (url, result.stderr)
        assert "Traceback" not in result.stderr and "hunter2" not in result.stderr + result.stdout
        assert not list(folder.glob("requests-*.csv"))
    assert chat_requests_seen(shared_mock) == 0


def test_scrapes_that_fail_mid_run_are_one_warning_and_the_run_goes_on(start_mock, tmp_path):
    target = start_mock(*MOCK)
    metrics_server = start_mock()  # a second mock, only for its /metrics: it goes away mid-run
    total = 200
    cmd = locust_cmd(target.url, "-u", "4", "-r", "4", "--total-requests", str(total), "--results-dir",
                     str(tmp_path), "--server-metrics", metrics_server.url + "/metrics")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(), cwd=ROOT)
    try:
        csv_path = tmp_path / "server-metrics.csv"
        wait_until(lambda: csv_path.exists() and csv_path.stat().st_size > 0, "the first scrape", timeout=60)
        metrics_server.stop()
        started = time.monotonic()
        out, err = proc.communicate(timeout=120)
    finally:
        stop_all(proc)
    assert proc.returncode == 0, err[-2000:]
    assert time.monotonic() - started > 2.5, "the run ended before a scrape could fail"
    warnings = [line for line in tokenstorm_lines(err) if "server metrics" in line]
    assert len(warnings) == 1 and "the run goes on" in warnings[0], err[-2000:]
    assert len(load_records(tmp_path)) == total and "=== tokenstorm report" in out
    assert report(tmp_path)["server_metrics"]["scrapes"] >= 1


VLLM_PAGE = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="m"}} {running}
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="m"}} {waiting}
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="m"}} {kv}
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{{engine="0",model_name="m"}} {queries}
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{{engine="0",model_name="m"}} {hits}
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{{engine="0",model_name="m"}} {generated}
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf",model_name="m"}} {count}
vllm:time_to_first_token_seconds_count{{engine="0",model_name="m"}} {count}
vllm:time_to_first_token_seconds_sum{{engine="0",model_name="m"}} {ttft_sum}
"""


def test_vllm_names_map_to_the_quantities_the_report_plots():
    """A vLLM page as the scraper parses it: gauges as they are, counters as rates, histograms as means."""
    scrapes = [(100.0, dict(running=0, waiting=0, kv=0.0, queries=0, hits=0, generated=0, count=0, ttft_sum=0)),
               (102.0, dict(running=8, waiting=3, kv=0.5, queries=1000, hits=250, generated=400, count=10,
                            ttft_sum=2.0)),
               (104.0, dict(running=8, waiting=5, kv=0.75, queries=2000, hits=1250, generated=1200, count=30,
                            ttft_sum=8.0))]
    rows = [(t, name, labels, value) for t, values in scrapes
            for name, labels, value in parse_samples(VLLM_PAGE.format(**values))]
    samples = pd.DataFrame(rows, columns=["t", "metric", "labels", "value"])
    frame, sources = analysis_metrics.series(samples, t0=100.0)
    assert sources["running"] == "vllm:num_requests_running" and sources["kv_cache"] == "vllm:kv_cache_usage_perc"
    assert list(frame["t_s"]) == [0.0, 2.0, 4.0]
    assert list(frame["running"]) == [0, 8, 8] and list(frame["queue"]) == [0, 3, 5]
    assert list(frame["kv_cache"]) == [0.0, 0.5, 0.75]
    assert list(frame["prefix_hit"].iloc[:2]) == [0.25, 1.0]  # hits/queries of each interval
    assert list(frame["generation_tokens_s"].iloc[:2]) == [200.0, 400.0]
    assert list(frame["server_ttft_ms"].iloc[:2]) == [200.0, 300.0]
    records = pd.DataFrame({"t_start": [100.5 + i * 0.1 for i in range(30)], "ttft_ms": [280.0] * 30,
                            "e2e_ms": [1000.0] * 30, "total_ms": [1000.0] * 30})
    (ttft,) = analysis_metrics.reconcile(samples, records)
    assert ttft["server_mean_ms"] == 8.0 / 30 * 1000 and ttft["client_requests"] == 30
    assert abs(ttft["overhead_ms"] - (280.0 - 8.0 / 30 * 1000)) < 1e-9


def test_parsing_a_large_page_gives_the_event_loop_turns():
    """A page the size of vLLM's is parsed a family at a time, with the loop's turn in between."""
    page = "".join(f"# TYPE vllm:h{h}_seconds histogram\n"
                   + "".join(f'vllm:h{h}_seconds_bucket{{le="{b}",model_name="m"}} {b}\n' for b in range(30))
                   + f'vllm:h{h}_seconds_count{{model_name="m"}} 29\nvllm:h{h}_seconds_sum{{model_name="m"}} 1.5\n'
                   for h in range(40))
    pauses = []
    samples = parse_samples(page, pause=lambda: pauses.append(time.perf_counter()))
    assert len(samples) == 40 * 32 and ("vllm:h3_seconds_sum", 'model_name="m"', 1.5) in samples
    assert len(pauses) >= 2  # ~10-20 ms of parsing, a turn every ms


def test_in_a_distributed_run_the_master_scrapes_and_workers_do_not(start_mock, tmp_path):
    mock = start_mock(*MOCK)
    port, total = free_port(), 120
    master = start_master(mock.url, port, 2, "-u", "4", "-r", "4", "--total-requests", str(total),
                          "--results-dir", str(tmp_path), "--server-metrics", mock.url + "/metrics")
    workers = [start_worker(port) for _ in range(2)]
    try:
        out, err = master.communicate(timeout=120)
    finally:
        stop_all(master, *workers)
    assert master.returncode == 0, err[-3000:]
    assert "server metrics" not in err and f"requests {total}   ok {total}" in out
    assert [p.name for p in tmp_path.glob("server-metrics*")] == ["server-metrics.csv"]
    records = load_records(tmp_path)
    assert len(records) == total and sorted(records["worker_id"].unique()) == ["w0", "w1"]
    (ttft,) = [r for r in report(tmp_path)["server_metrics"]["reconciliation"] if r["metric"] == "ttft_ms"]
    assert ttft["client_requests"] == ttft["server_observations"] == total
    ttfb = records["ttfb_ms"]
    assert -0.1 * ttfb.median() <= ttft["overhead_ms"] <= ttfb.quantile(0.99), (ttft, ttfb.describe())
