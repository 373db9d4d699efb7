"""One definition of each metric everywhere, one record schema, and a report you can send.

Real timed runs against the mock: each ends with streams still running, recorded as cancelled
(cut off by the run, not failures). The report, compare and the web UI's live figures must
agree on what counts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from locust_procs import LOCUST, LOCUSTFILE, clean_env, concurrent_runs, free_port, stop_all, wait_until

from analysis import metrics
from analysis.stats import NUMERIC, TEXT, load_records, summarize
from tokenstorm.client.writer import RecordWriter
from tokenstorm.core.records import CANCELLED, NUMERIC_FIELDS, RECORD_FIELDS, TEXT_FIELDS, Record
from tokenstorm.loadgen.live import WINDOW_S, LiveStats
from tokenstorm.mockproc import ROOT


def analysis(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analysis", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """faults: a mix of injected failure classes (two HTTP statuses among them); long and short:
    no faults, the same mock, 4 users for 8 s vs 2 users for 2 s. All end on a timer with streams
    in flight (--stop-timeout 0), so each has cancelled records (about one per user); the short run
    has about twice as many of them per request (~20% vs ~7%: a margin that a busy machine's
    uneven stream counts cannot close). The three run at the same time."""
    root = tmp_path_factory.mktemp("consistency")
    # Stream lengths spread (lognormal, cv 0.6, ~0.6 s on average): users started together and
    # given equal streams stay in lockstep, and a stop that comes ~0.1 s late on a busy machine
    # then finds them all just finished (no stream left to cut).
    output = "output:\n  mean_tokens: 60\n  cv: 0.6\n"
    plain, faults = root / "plain.yaml", root / "faults.yaml"
    plain.write_text(output)
    faults.write_text(output + "faults:\n  probabilities:\n    http_500: 0.06\n    http_429: 0.06\n"
                      "    truncate: 0.06\n")
    plans = {"faults": (["--config", str(faults)], ["-u", "4", "-r", "4", "-t", "3s"]),
             "long": (["--config", str(plain)], ["-u", "4", "-r", "4", "-t", "8s"]),
             "short": (["--config", str(plain)], ["-u", "2", "-r", "2", "-t", "2s"])}
    mock = ["--ttft-ms", "30", "--itl-ms", "10", "--jitter", "0.3", "--seed", "7"]
    end = ["--stop-timeout", "0", "--slo-ttft-ms", "1000", "--exit-code-on-error", "0"]
    folders = concurrent_runs(root, {name: ([*mock_args, *mock], [*load, *end])
                                     for name, (mock_args, load) in plans.items()}, timeout=120)
    for name, folder in folders.items():
        records = load_records(folder)
        assert (records["error_type"] == CANCELLED).any(), (name, records[["status", "error_type"]].value_counts())
    return folders


def _table(md: str, section: str) -> list[list[str]]:
    """The rows of the first table under `## section` of a Markdown report (header left out)."""
    part = md.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in part.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_report_opens_with_the_run_context(runs):
    folder = runs["long"]
    result = analysis("report", str(folder))
    assert result.returncode == 0, result.stderr
    md = (folder / "report.md").read_text()
    sections = re.findall(r"^## (.+)$", md, flags=re.M)
    assert sections[:2] == ["Run", "Summary"], sections
    context = dict(row for row in _table(md, "Run"))
    meta = json.loads((folder / "run-local.json").read_text())
    assert context["Target"].startswith(meta["settings"]["host"]) and context["Target"].startswith("http://127.0.0.1:")
    assert context["Model"] == "mock-llm"
    assert context["Load"].startswith("4 users (closed loop)")
    assert "max_tokens 256" in context["Request"] and "prompt" in context["Request"]
    assert context["SLOs"] == "TTFT <= 1000 ms"
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, ran \d", context["Started"])
    cancelled = int((load_records(folder)["error_type"] == CANCELLED).sum())
    assert f"{cancelled:,} of them cancelled" in context["Records"]
    assert f"tokenstorm {meta['versions']['tokenstorm']}" in context["Versions"]
    assert f"locust {meta['versions']['locust']}" in context["Versions"]
    assert context["Processes"] == "one standalone process"
    assert context["Client self-check"].startswith(("passed", "WARNING"))
    header = md.split("\n## Summary\n", 1)[1].split("\n|---", 1)[0].splitlines()[-1]
    assert "| P99.9 |" in header and "| Std dev |" in header and "p99_9" not in md and "ttft_ms" not in md
    html = (folder / "report.html").read_text()
    assert html.index("<h2>Run</h2>") < html.index("<h2>Summary</h2>") and "<td>Client self-check</td>" in html


def test_errors_table_rows_add_up_to_the_failures(runs):
    folder = runs["faults"]
    assert analysis("report", str(folder)).returncode == 0
    records = load_records(folder)
    failed = records[(records["status"] != "ok") & (records["error_type"] != CANCELLED)]
    summary = json.loads((folder / "summary.json").read_text())["summary"]
    assert summary["failed"] == len(failed) and failed["error_type"].nunique() >= 2
    rows = _table((folder / "report.md").read_text(), "Errors")
    assert [r[0] for r in rows if r[0] == CANCELLED] == []  # the run's end is not a failure
    assert sum(int(r[1].replace(",", "")) for r in rows) == len(failed)
    assert {r[0]: int(r[1]) for r in rows} == failed["error_type"].astype(str).value_counts().to_dict()
    statuses = next(r[3] for r in rows if r[0] == "http_status")
    counts = dict(re.findall(r"(\d{3}) x(\d+)", statuses))
    assert set(counts) == {"429", "500"}
    assert sum(map(int, counts.values())) == int((failed["error_type"] == "http_status").sum())


def test_compare_with_cancelled_streams_flags_no_failure_regression(runs, tmp_path):
    base, new = load_records(runs["long"]), load_records(runs["short"])
    cut = {name: float((df["error_type"] == CANCELLED).mean()) for name, df in (("base", base), ("new", new))}
    assert cut["new"] - cut["base"] >= 0.01  # counted as failures, these would be a failure regression
    out = tmp_path / "compare.json"
    result = analysis("compare", str(runs["long"]), str(runs["short"]), "--json", str(out))
    comparison = json.loads(out.read_text())
    rows = {(r["metric"], r["stat"]): r for r in comparison["rows"]}
    ratio = rows[("failure_ratio", "ratio")]
    assert ratio["base"] == ratio["new"] == 0 and not ratio["regression"]
    assert not any(r.startswith("failure_ratio") for r in comparison["regressions"])
    # half the users on a mock whose latency does not depend on load: half the throughput, same latency
    throughput = rows[("throughput_req_s", "run")]
    assert throughput["base"] == pytest.approx(summarize(base)["throughput_req_s"])
    assert -80 < throughput["change_pct"] < -20 and throughput["regression"]  # ~-50%, lengths spread
    assert rows[("output_tok_s", "run")]["regression"] and ("goodput_req_s", "run") in rows
    assert result.returncode == 1 and "throughput_req_s run" in comparison["regressions"]
    assert {"setting": "users", "base": 4, "new": 2} in comparison["config_differences"]
    stdout = result.stdout
    assert stdout.index("config differences (base -> new):") < stdout.index("users: 4 -> 2") < stdout.index("metric")
    assert "throughput (req/s)" in stdout and "goodput (req/s)" in stdout


def test_live_tab_figures_after_the_run_are_the_reports(runs):
    """The LLM tab's table, fed the run's records, shows the whole run's figures (they do not
    empty out after the run) and the same ones the report computes."""
    records = load_records(runs["faults"])
    live = LiveStats({"ttft_ms": 1000})
    for row in records.sort_values("t_start").to_dict("records"):
        clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
        live.add(clean["upstream"], clean["scenario"], clean["status"], clean["error_type"], clean["ttft_ms"],
                 clean["tpot_ms"], clean["e2e_ms"], clean["output_tokens"],
                 clean["t_start"] + (clean["total_ms"] or clean["e2e_ms"] or 0) / 1000)
    (row,) = live.rows()
    summary = summarize(records, {"ttft_ms": 1000})
    assert row["requests"] == summary["requests"] and row["failures"] == summary["failed"]
    assert row["tokps"] > 0
    assert row["tokps"] == pytest.approx(summary["throughput_output_tok_s"], rel=0.05)
    assert row["goodput"] == pytest.approx(summary["goodput_req_s"], rel=0.05)
    ok = metrics.succeeded(metrics.counted(records))
    assert row["ttftp99"] == pytest.approx(metrics.percentiles(ok["ttft_ms"].to_numpy(), [99])[0], abs=0.01)


def _get_json(port: int, path: str) -> dict:
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).read())


def test_web_ui_llm_tab_keeps_the_whole_runs_tokens_per_s_after_the_run(start_mock, tmp_path):
    """A run started from the web UI; once it has stopped and its last record is older than the
    charts' window, the LLM tab still shows the run's output tokens/s: the report's number."""
    mock = start_mock("--ttft-ms", "30", "--itl-ms", "10", "--output-tokens", "20", "--jitter", "0")
    port, results = free_port(), tmp_path / "results"
    web = subprocess.Popen([LOCUST, "-f", LOCUSTFILE, "--host", mock.url, "--web-host", "127.0.0.1", "--web-port",
                            str(port), "--results-dir", str(results)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=clean_env(), cwd=ROOT)
    try:
        def up() -> bool:
            try:
                return bool(_get_json(port, "/stats/requests"))
            except OSError:
                return False

        wait_until(up, "the Locust web UI to answer", 30)
        form = urllib.parse.urlencode({"user_count": 4, "spawn_rate": 4, "host": mock.url,
                                       "total_requests": 40}).encode()
        urllib.request.urlopen(f"http://127.0.0.1:{port}/swarm", data=form, timeout=10)
        wait_until(lambda: _get_json(port, "/stats/requests")["state"] == "stopped", "the run to stop", 60)
        records = load_records(results)
        last_end = float(metrics.end_times(records).max())
        wait_until(lambda: time.time() > last_end + WINDOW_S + 1.5, "the charts' window to pass the run", 30)
        (row,) = _get_json(port, "/stats/requests")["extended_stats"][0]["data"]
        history = _get_json(port, "/llm/data")["history"]
    finally:
        stop_all(web)
    summary = summarize(records)
    assert row["requests"] == 40 == summary["requests"]
    assert row["tokps"] == pytest.approx(summary["throughput_output_tok_s"], rel=0.05) and row["tokps"] > 0
    assert history and history[-1]["tok_s"] == 0  # the chart is the last 10 s; the table is the run


def test_the_writer_and_the_analysis_share_one_record_schema(tmp_path):
    """Records written by the real writer read back with the schema's columns, types and values."""
    assert tuple(NUMERIC_FIELDS) == NUMERIC and tuple(TEXT_FIELDS) == TEXT
    assert sorted(NUMERIC_FIELDS + TEXT_FIELDS) == sorted(RECORD_FIELDS)
    full = Record(**{name: (f"v-{name}" if name in TEXT_FIELDS else i + 0.5) for i, name in enumerate(RECORD_FIELDS)
                     if name not in ("status", "error_type")}, status="error", error_type="truncated")
    cut = Record(request_id="r2", worker_id="local", t_start=1.0, status="error", error_type=CANCELLED)
    writer = RecordWriter(tmp_path / "requests-local.csv")
    writer.write(full)
    writer.write(cut)
    writer.close()
    frame = load_records(tmp_path)
    assert list(frame.columns) == RECORD_FIELDS
    for name in RECORD_FIELDS:
        assert frame[name][0] == getattr(full, name) or str(frame[name][0]) == str(getattr(full, name)), name
    for name in NUMERIC_FIELDS:
        assert frame[name].dtype.kind in "fi", name
    assert metrics.failure_ratio(frame) == 1.0 and len(metrics.counted(frame)) == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["overview", "compare", "sweep"])
def test_notebooks_run_with_nbconvert_and_show_their_plots(runs, tmp_path, name):
    """`python -m nbconvert --execute` (the dev extra) runs each notebook top to bottom against
    small runs; every notebook shows at least one plot inline, not a file path."""
    import nbformat

    path = ROOT / "analysis" / "notebooks" / f"{name}.ipynb"
    committed = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in committed.cells if cell.cell_type == "code"), "committed w/ outputs"
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    env = clean_env(RESULTS_DIR=str(runs["long"]), BASE_DIR=str(runs["short"]), PYTHONPATH=str(ROOT),
                    SWEEP_DIRS=",".join(str(runs[k]) for k in ("short", "long", "faults")))
    result = subprocess.run([sys.executable, "-m", "nbconvert", "--to", "notebook", "--execute",
                             "--ExecutePreprocessor.timeout=240", "--output-dir", str(tmp_path), str(path)],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    executed = nbformat.read(tmp_path / f"{name}.ipynb", as_version=4)
    outputs = [o for cell in executed.cells for o in cell.get("outputs", [])]
    assert outputs and not any(o.get("output_type") == "error" for o in outputs)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{name}: no inline plot"
    assert not any("PosixPath(" in str(o.get("data", {}).get("text/plain", "")) for o in outputs)
