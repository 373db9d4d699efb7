"""The end-of-run report: exact numbers from the records, plus the one-file JSON export."""

from __future__ import annotations

import json
import math

from analysis.stats import RecordsError, format_report, load_records, summarize


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def final_report(run) -> None:
    folder = run.settings.results_dir
    try:
        records = load_records(folder)
    except RecordsError as exc:
        print(f"tokenstorm: no report: {exc}", flush=True)
        return
    summary = summarize(records, run.settings.slos)
    client = run.monitor.summary()
    summary["client"] = client
    print("\n" + format_report(summary, f"tokenstorm report: {folder}"), flush=True)
    for warning in client.get("warnings", []):
        print(f"WARNING: {warning}", flush=True)
    print(f"records: {folder}/requests-*.csv   one-file export: {folder}/results.json", flush=True)
    export = {"config": run.settings.public(), "summary": summary,
              "requests": [{k: _clean(v) for k, v in row.items()} for row in records.to_dict("records")]}
    (folder / "results.json").write_text(json.dumps(export, indent=1, default=str))
