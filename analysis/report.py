"""`python -m analysis report DIR`: report.md, report.html (self-contained), summary.json, plots/."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import pandas as pd

from . import metrics, plots, server_metrics, timeseries
from .context import run_context, token_count_warning
from .metrics import PERCENTILES, describe, percentile_key, percentile_label
from .results import Results
from .stats import METRICS, UNSENT_SUFFIX, summarize

GROUP_COLUMNS = {"scenario": "Scenario", "upstream": "Upstream", "model": "Model", "worker_id": "Worker"}
STAT_COLUMNS = ("count", "min", "mean", "stddev", *(percentile_key(p) for p in PERCENTILES), "max")
STAT_LABELS = ("Count", "Min", "Mean", "Std dev", *(percentile_label(p) for p in PERCENTILES), "Max")
CROSS_CHECK_LABELS = {
    "usage_vs_tokenizer_mismatch_rate": "usage and tokenizer disagree (share of requests)",
    "usage_vs_tokenizer_mean_abs_diff": "usage vs tokenizer, mean difference (tokens)",
    "usage_vs_chunks_mismatch_rate": "usage and chunk count disagree (share of requests)",
}


def _clean(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def build_summary(results: Results) -> dict:
    records = results.records
    summary = summarize(records, results.slos)
    groups = {}
    for column in GROUP_COLUMNS:
        if column in records.columns and records[column].nunique() > 1:
            groups[column] = {}
            for name, frame in metrics.counted(records).groupby(column, observed=True):
                ok = metrics.succeeded(frame)
                groups[column][str(name)] = {"requests": len(frame), "failed": len(metrics.failed(frame)),
                                             "metrics": {m: describe(ok[m]) for m in METRICS if m in ok.columns}}
    summary["groups"] = groups
    summary["cross_checks"] = cross_checks(records)
    summary["client_vs_timing"] = client_vs_timing(records, results.folder)
    summary["warmup_s"] = results.warmup_s
    cache = metrics.prefix_cache(records)
    if cache is not None:
        summary["prefix_cache"] = cache
    summary["token_count_warning"] = token_count_warning(records)
    samples = server_metrics.load_samples(results.folder)
    if samples is not None and not samples.empty:
        since = float(records["t_start"].min()) if results.warmup_s and len(records) else None
        summary["server_metrics"] = server_metrics.summary(samples, records, since)
    client = results.metadata.get("client")
    if results.metadata.get("workers"):
        client = {w: f.get("client") for w, f in results.metadata["workers"].items()}
        summary["lost_workers"] = results.metadata.get("lost", {})
    summary["client"] = client
    kept = sorted(p.name for p in results.folder.glob(f"requests-*{UNSENT_SUFFIX}"))
    if kept:
        summary["master_died"] = kept
    return summary


def cross_checks(records: pd.DataFrame) -> dict:
    """Output tokens from usage vs tokenizer vs chunks: how often they disagree."""
    ok = records[records["status"] == "ok"]
    out: dict = {}
    both = ok.dropna(subset=["output_tokens_usage", "output_tokens_tokenizer"])
    if len(both):
        diff = both["output_tokens_usage"] != both["output_tokens_tokenizer"]
        out["usage_vs_tokenizer_mismatch_rate"] = float(diff.mean())
        out["usage_vs_tokenizer_mean_abs_diff"] = float(
            (both["output_tokens_usage"] - both["output_tokens_tokenizer"]).abs().mean())
    with_usage = ok.dropna(subset=["output_tokens_usage"])
    if len(with_usage):
        out["usage_vs_chunks_mismatch_rate"] = float((with_usage["output_tokens_usage"] != with_usage["chunks"]).mean())
    return out


LAG_BUCKETS = ((0, 5, "loop lag < 5 ms"), (5, 20, "5-20 ms"), (20, float("inf"), ">= 20 ms"))


def client_vs_timing(records: pd.DataFrame, folder: Path) -> list[dict]:
    """TTFT of the requests whose first token arrived while the client's event loop lagged by
    this much (from the monitor-*.csv self-check): a client too busy to read on time shows up
    as higher TTFT in the laggy seconds."""
    files = sorted(folder.glob("monitor-*.csv"))
    ok = records[(records["status"] == "ok") & records["ttft_ms"].notna()]
    if not files or ok.empty:
        return []
    samples = pd.concat([pd.read_csv(f) for f in files]).sort_values("t")
    first_token = (ok["t_start"] + ok["ttft_ms"] / 1000).sort_values()
    # each sample holds the worst lag of the second before it: take the next sample at or after
    matched = pd.merge_asof(first_token.rename("t").to_frame().assign(ttft_ms=ok["ttft_ms"]), samples,
                            on="t", direction="forward")
    out = []
    for low, high, label in LAG_BUCKETS:
        part = matched[(matched["loop_lag_ms"] >= low) & (matched["loop_lag_ms"] < high)]
        if len(part):
            out.append({"loop_lag": label, "requests": len(part), "cpu_pct_mean": float(part["cpu_pct"].mean()),
                        "ttft_p50": float(part["ttft_ms"].quantile(0.5)),
                        "ttft_p99": float(part["ttft_ms"].quantile(0.99))})
    return out


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"


def _metric_table(metrics: dict) -> list[list[str]]:
    rows = []
    for column, label in METRICS.items():
        stats = metrics.get(column)
        if not stats or not stats.get("count"):
            continue
        thin = set(stats.get("few_samples", []))
        rows.append([label] + [_fmt(stats.get(k)) + ("*" if k in thin else "") for k in STAT_COLUMNS])
    return rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def errors_table(summary: dict) -> list[list[str]]:
    """One row per failure class (they add up to the failed requests); HTTP statuses in a column."""
    failed = summary["failed"]
    statuses = ", ".join(f"{k} x{v}" for k, v in sorted((summary.get("failures_by_status") or {}).items()))
    return [[name, f"{count:,}", f"{count / failed:.1%}" if failed else "-", statuses if name == "http_status" else ""]
            for name, count in sorted(summary["failures_by_class"].items(), key=lambda item: (-item[1], item[0]))]


SERVER_SOURCES = {"queue": "queue depth", "running": "running requests", "kv_cache": "KV-cache usage",
                  "prefix_hit": "prefix-cache hit rate", "generation_tokens": "generation tokens",
                  "prompt_tokens": "prompt tokens", "ttft_ms": "TTFT", "e2e_ms": "E2E", "tpot_ms": "TPOT"}


def server_metrics_section(facts: dict, url: str | None) -> tuple[str, str, list[str], list[list[str]]]:
    """The server's own metrics: what was found, and client mean minus server mean per latency."""
    found = ", ".join(f"{SERVER_SOURCES.get(k, k)} ({v})" for k, v in facts["sources"].items()) or "nothing we know"
    text = (f"{facts['scrapes']} scrapes of {url or 'the server'} over {facts['window_s']:.1f} s; found: {found}. "
            "Client-side overhead = the client's mean minus the server's mean (histogram _sum/_count deltas "
            "from the first to the last scrape), over the requests whose first token (TTFT) or end (E2E, TPOT) "
            "fell in that window: time the server never sees (network, HTTP, the client's reading).")
    if facts["reconciliation"] and facts["reconciliation"][0]["window_start"] > facts["first"]:
        text += " After a warm-up, the window starts at the first scrape after it."
    if not facts["reconciliation"]:
        text += " The server reports no TTFT/E2E/TPOT histogram we know: nothing to reconcile."
    rows = [[r["label"], r["server_metric"], _fmt(r["client_mean_ms"]), _fmt(r["server_mean_ms"]),
             _fmt(r["overhead_ms"]), f"{r['client_requests']:,}", f"{r['server_observations']:,}"]
            for r in facts["reconciliation"]]
    return ("Server metrics", text, ["Metric", "Server metric", "Client mean (ms)", "Server mean (ms)",
                                     "Client-side overhead (ms)", "Client requests", "Server observations"], rows)


def prefix_cache_section(cache: dict) -> tuple[str, str, list[str], list[list[str]]]:
    """Hit rate from the usage's cached tokens, and TTFT of the requests that hit vs those that did not."""
    if cache["hit_rate"] is None:
        return "Prefix cache", f"Prefix-cache hit rate: {cache.get('note', metrics.NOT_REPORTED)}.", [], []
    text = (f"Prefix-cache hit rate {cache['hit_rate']:.1%}: {cache['cached_tokens']:,.0f} cached of "
            f"{cache['input_tokens']:,.0f} input tokens, over the {cache['requests']:,} successful requests whose "
            "usage reported cached tokens. A request is cached when the server served any of its prompt "
            "from the cache.")
    rows = [[label, f"{cache[key]['requests']:,}", _fmt(cache[key]["ttft_p50"]), _fmt(cache[key]["ttft_p99"])]
            for key, label in (("cached", "cached (cached tokens > 0)"), ("uncached", "uncached"))]
    return "Prefix cache", text, ["Requests", "Count", "TTFT P50 (ms)", "TTFT P99 (ms)"], rows


def _sections(summary: dict, results: Results) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(title, text, table header, table rows) for both the Markdown and the HTML report."""
    header = ["Metric (successful requests)", *STAT_LABELS]
    out = [("Run", "What was run, against what, when and with what (from the run's metadata).", ["Setting", "Value"],
            [[label, value] for label, value in run_context(results.metadata, results.records, results.warmup_s)])]
    text = (f"{summary['requests']:,} requests, {summary['ok']:,} ok, {summary['failed']:,} failed "
            f"({summary['failure_ratio']:.2%}); window {summary['window_s']:.1f} s; "
            f"{summary['throughput_req_s']:.2f} req/s, {summary['throughput_output_tok_s']:,.1f} output tokens/s")
    if "goodput_req_s" in summary:
        slos = ", ".join(f"{k.removesuffix('_ms')} <= {v:g} ms" for k, v in summary["slos"].items())
        text += f"; goodput {summary['goodput_req_s']:.2f} req/s ({summary['slo_attainment']:.1%} meet {slos})"
    if summary.get("cancelled"):
        text += (f"; {summary['cancelled']} cancelled by the end of the run (neither failures nor successes, "
                 "left out of every figure)")
    if results.warmup_s:
        text += f"; the first {results.warmup_s:g} s are left out (warm-up)"
    out.append(("Summary", text, header, _metric_table(summary["metrics"])))
    if summary["failures_by_class"]:
        out.append(("Errors", f"{summary['failed']:,} failed requests by class; the HTTP statuses of the "
                    "http_status class in the last column.", ["Class", "Requests", "Share of failures",
                                                              "HTTP statuses"], errors_table(summary)))
    for column, groups in summary["groups"].items():
        for name, group in groups.items():
            out.append((f"{GROUP_COLUMNS[column]}: {name}",
                        f"{group['requests']:,} requests, {group['failed']:,} failed", header,
                        _metric_table(group["metrics"])))
    if summary.get("prefix_cache"):
        out.append(prefix_cache_section(summary["prefix_cache"]))
    checks = summary["cross_checks"]
    if checks:
        out.append(("Cross-checks", "Output tokens counted three ways (usage, tokenizer, chunks).",
                    ["Check", "Value"], [[CROSS_CHECK_LABELS.get(k, k), f"{v:.4g}"] for k, v in checks.items()]))
    if summary.get("client_vs_timing"):
        out.append(("Client load vs timings", "TTFT of requests whose first token arrived while the client's event "
                    "loop lagged this much: higher TTFT in laggy seconds means the client distorted the timings.",
                    ["Event-loop lag", "Requests", "Client CPU mean (%)", "TTFT P50 (ms)", "TTFT P99 (ms)"],
                    [[r["loop_lag"], str(r["requests"]), _fmt(r["cpu_pct_mean"]), _fmt(r["ttft_p50"]),
                      _fmt(r["ttft_p99"])] for r in summary["client_vs_timing"]]))
    if summary.get("server_metrics"):
        out.append(server_metrics_section(summary["server_metrics"], results.config.get("server_metrics")))
    if results.locust_stats is not None:
        stats = results.locust_stats
        columns = [c for c in ("Type", "Name", "Request Count", "Failure Count", "Median Response Time",
                               "Average Response Time", "95%", "99%", "Requests/s") if c in stats.columns]
        out.append(("Locust's own statistics", "From Locust's _stats.csv: bucketed and rounded percentiles "
                    "(kept for reference; the tables above are exact).", columns,
                    [[str(v) for v in row] for row in stats[columns].itertuples(index=False)]))
    failures = results.locust_failures
    if failures is not None and len(failures):
        columns = [c for c in ("Method", "Name", "Error", "Occurrences") if c in failures.columns]
        out.append(("Locust's failures", "From Locust's _failures.csv (grouped by its message).", columns,
                    [[str(v) for v in row] for row in failures[columns].itertuples(index=False)]))
    lost = summary.get("lost_workers") or {}
    if lost:
        out.append(("Lost workers", "Workers that stopped answering during the run.", ["Worker", "Finished requests"],
                    [[w, str(f["requests_finished"])] for w, f in lost.items()]))
    if summary.get("master_died"):
        out.append(("Master lost", "The master died during the run. These workers kept the records it never "
                    "confirmed (each record is counted once); its own metadata and Locust's CSVs may be missing.",
                    ["File"], [[name] for name in summary["master_died"]]))
    warnings = []
    clients = summary.get("client") or {}
    if isinstance(clients, dict) and "warnings" in clients:
        clients = {"client": clients}
    for worker, client in (clients or {}).items():
        for warning in (client or {}).get("warnings", []):
            warnings.append([str(worker), warning])
    if warnings:
        out.append(("Client self-check", "The load generator was busy enough to distort timings:",
                    ["Process", "Warning"], warnings))
    return out


def write_report(results: Results, window_s: float = 5.0, per_request: bool = False) -> dict:
    folder = results.folder
    summary = build_summary(results)
    plot_dir = folder / "plots"
    plot_dir.mkdir(exist_ok=True)
    ok = metrics.succeeded(results.records)
    made = [plots.distribution(ok["ttft_ms"], "TTFT (ms)", plot_dir / "ttft.png"),
            plots.distribution(ok["tpot_ms"], "TPOT (ms)", plot_dir / "tpot.png"),
            plots.over_time(timeseries.windows(results.records, window_s), plot_dir / "over_time.png")
            if len(results.records) else plots.locust_history(results.locust_history, plot_dir / "over_time.png"),
            plots.errors(results.records, plot_dir / "errors.png", window_s)]
    samples = server_metrics.load_samples(folder)
    if samples is not None and not samples.empty:
        made.append(server_metrics.plot(samples, results.records, timeseries.windows(results.records, window_s)
                                        if len(results.records) else pd.DataFrame(),
                                        plot_dir / "server_metrics.png"))
    for column in ("upstream", "scenario", "model"):
        made.append(plots.by_group(results.records, column, plot_dir / f"by_{column}.png"))
    made = [p for p in made if p is not None]
    sections = _sections(summary, results)
    title = f"tokenstorm report: {folder.name}"
    md = [f"# {title}", ""]
    if summary["token_count_warning"]:
        md += [f"> **{summary['token_count_warning']}**", ""]
    for name, text, header, rows in sections:
        md += [f"## {name}", "", text, "", _markdown_table(header, rows) if rows else "", ""]
    md.append("`*` a percentile over fewer samples than it needs (P99 needs 100, P99.9 needs 1,000).")
    md += ["", "## Plots", ""] + [f"![{plots.TITLES.get(p.stem, p.stem)}](plots/{p.name})" for p in made]
    (folder / "report.md").write_text("\n".join(md) + "\n")
    (folder / "report.html").write_text(_html(title, sections, made, summary["token_count_warning"]))
    export = {"config": results.config, "summary": _clean(summary),
              "counts": {"total": summary["requests"], "success": summary["ok"], "failed": summary["failed"]}}
    if per_request:
        export["requests"] = [_clean(r) for r in results.records.to_dict("records")]
    (folder / "summary.json").write_text(json.dumps(export, indent=1, default=str))
    return summary


def _html(title: str, sections, images: list[Path], warning: str = "") -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>"
             "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}"
             "img{max-width:100%}.warning{border:2px solid #c00;background:#fee;padding:.5em 1em;font-weight:bold}"
             "</style></head><body>", f"<h1>{esc(title)}</h1>"]
    if warning:
        parts.append(f"<p class='warning'>{esc(warning)}</p>")
    for name, text, header, rows in sections:
        parts.append(f"<h2>{esc(name)}</h2><p>{esc(text)}</p>")
        if rows:
            parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</table>")
    parts.append("<p>* a percentile over fewer samples than it needs (P99 needs 100, P99.9 needs 1,000).</p>")
    parts.append("<h2>Plots</h2>")
    for image in images:
        data = base64.b64encode(image.read_bytes()).decode()
        name = esc(plots.TITLES.get(image.stem, image.stem))
        parts.append(f"<h3>{name}</h3><img alt='{name}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
