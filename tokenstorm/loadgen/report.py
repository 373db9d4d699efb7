"""The end-of-run report: exact numbers from the records, plus the one-file JSON export."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPORT_TIMEOUT_S = 300


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def final_report(folder: Path, slos: dict[str, float], config: dict, clients: dict[str, dict],
                 distributed: dict | None = None) -> None:
    """Print the exact report of the records in `folder` and write results.json.

    `config` is the run's public settings, `clients` each process's self-check and `distributed`
    the master's metadata (workers seen, lost workers), None in a standalone run."""
    from analysis.stats import RecordsError, format_report, load_records, summarize

    try:
        records = load_records(folder)
    except RecordsError as exc:
        print(f"tokenstorm: no report: {exc}", flush=True)
        return
    summary = summarize(records, slos)
    groups = {}
    for column in ("upstream", "scenario"):
        if records[column].nunique() > 1:
            groups[column] = {str(name): summarize(part, slos)
                              for name, part in records.groupby(column, observed=True)}
    if distributed is not None:  # every worker's self-check, and the lost ones
        clients = {w: facts.get("client") or {} for w, facts in distributed["workers"].items()}
        summary["workers"] = {w: {"records": facts["records"], "lost": facts["lost"]}
                              for w, facts in distributed["workers"].items()}
        summary["lost_workers"] = distributed["lost"]
    summary["client"] = clients
    print("\n" + format_report(summary, f"tokenstorm report: {folder}"), flush=True)
    for column, parts in groups.items():
        print(f"by {column}:", flush=True)
        for name, part in parts.items():
            ttft = part["metrics"]["ttft_ms"]
            print(f"  {name}: {part['requests']} requests, {part['failed']} failed, "
                  f"{part['throughput_output_tok_s']:,.1f} output tokens/s, TTFT p50 {ttft.get('p50', 0):.1f} ms "
                  f"p99 {ttft.get('p99', 0):.1f} ms", flush=True)
    if summary.get("workers"):
        print("workers: " + ", ".join(f"{w} {f['records']} records" + (" (LOST)" if f["lost"] else "")
                                      for w, f in summary["workers"].items()), flush=True)
    for worker, facts in (summary.get("lost_workers") or {}).items():
        print(f"WARNING: worker {worker} was lost during the run after {facts['requests_finished']} finished "
              "requests; its in-flight requests were not recorded", flush=True)
    for worker, client in clients.items():
        for warning in client.get("warnings", []):
            print(f"WARNING: {worker}: {warning}", flush=True)
    print(f"records: {folder}/requests-*.csv   one-file export: {folder}/results.json", flush=True)
    export = {"config": config, "summary": summary,
              "requests": [{k: _clean(v) for k, v in row.items()} for row in records.to_dict("records")]}
    (folder / "results.json").write_text(json.dumps(export, indent=1, default=str))


def build_report_elsewhere(results_dir: Path) -> str:
    """Write report.html for `results_dir` in another process; '' when done, else why not.

    pandas and matplotlib take seconds: on this process's event loop they would stall every
    stream in flight, and those streams' ITL would show the gap. Locust has gevent patch the
    subprocess module, so waiting for the child lets the loop run."""
    try:
        done = subprocess.run([sys.executable, "-m", "analysis", "report", str(results_dir)], capture_output=True,
                              text=True, timeout=REPORT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"the report took longer than {REPORT_TIMEOUT_S} s"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return lines[-1].removeprefix("analysis: ") if lines else f"the report exited {done.returncode}"
    return ""
