"""The report's plots, as PNG files.

Figures are made with matplotlib's object API (matplotlib.figure.Figure), never pyplot: no global
backend is set, so importing this in a notebook keeps its inline plots, and reports drawn from
the web UI's threads share no pyplot state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import metrics, timeseries

TITLES = {"ttft": "TTFT distribution", "tpot": "TPOT distribution", "over_time": "Over time",
          "errors": "Errors over time", "by_upstream": "TTFT by upstream", "by_scenario": "TTFT by scenario",
          "by_model": "TTFT by model", "by_turn": "TTFT by conversation turn",
          "server_metrics": "Server metrics over time"}


def subplots(rows: int = 1, cols: int = 1, **kwargs):
    """A Figure and its axes, like pyplot.subplots but with no pyplot state."""
    figsize = kwargs.pop("figsize", None)
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, cols, **kwargs)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def distribution(values: pd.Series, label: str, path: Path) -> Path | None:
    """Histogram and empirical CDF of one metric, with its P50/P90/P99 marked."""
    values = values.dropna().to_numpy()
    if not len(values):
        return None
    fig, (hist, cdf) = subplots(1, 2, figsize=(10, 3.6))
    hist.hist(values, bins=min(60, max(10, len(values) // 10)), color="#4c72b0")
    hist.set_xlabel(label)
    hist.set_ylabel("requests")
    ordered = np.sort(values)
    fractions = np.arange(1, len(ordered) + 1) / len(ordered)
    if len(ordered) > 4000:  # a CDF line of 4,000 points looks the same and draws in milliseconds
        keep = np.unique(np.linspace(0, len(ordered) - 1, 4000).astype(int))
        ordered, fractions = ordered[keep], fractions[keep]
    cdf.plot(ordered, fractions, color="#4c72b0")
    cdf.set_xlabel(label)
    cdf.set_ylabel("fraction of requests")
    for q, style in ((50, "--"), (90, "-."), (99, ":")):
        x = float(np.percentile(values, q))  # of all values, not the thinned line
        for ax in (hist, cdf):
            ax.axvline(x, color="#c44e52", linestyle=style, linewidth=1)
        cdf.annotate(f"P{q} {x:.1f}", (x, q / 100), fontsize=8, xytext=(4, -10), textcoords="offset points")
    fig.suptitle(f"{label}: distribution ({len(values)} successful requests)")
    return _save(fig, path)


def over_time(series: pd.DataFrame, path: Path) -> Path | None:
    if series.empty:
        return None
    fig, (lat, thr) = subplots(2, 1, figsize=(10, 6), sharex=True)
    for column, label, style in (("ttft_p50", "TTFT P50", "-"), ("ttft_p99", "TTFT P99", "--")):
        lat.plot(series["t_s"], series[column], style, marker="o", markersize=3, label=label)
    lat.set_ylabel("TTFT (ms)")
    twin = lat.twinx()
    twin.plot(series["t_s"], series["tpot_p50"], ":", color="#55a868", label="TPOT P50")
    twin.set_ylabel("TPOT (ms)")
    lat.legend(loc="upper left")
    twin.legend(loc="upper right")
    thr.plot(series["t_s"], series["output_tok_s"], label="output tokens/s")
    thr.set_ylabel("output tokens/s")
    thr.set_xlabel("seconds since the first request")
    twin2 = thr.twinx()
    twin2.plot(series["t_s"], series["in_flight"], color="#8172b2", label="in flight")
    twin2.set_ylabel("requests in flight")
    thr.legend(loc="upper left")
    twin2.legend(loc="upper right")
    fig.suptitle("Latency percentiles, throughput and concurrency over time")
    return _save(fig, path)


def errors(records: pd.DataFrame, path: Path, width_s: float) -> Path | None:
    table = timeseries.error_windows(records, width_s)
    if table.empty:
        return None
    fig, ax = subplots(figsize=(10, 3.2))
    bottom = np.zeros(len(table))
    for column in table.columns:
        ax.bar(table.index, table[column], width=width_s * 0.9, bottom=bottom, label=column, align="edge")
        bottom += table[column].to_numpy()
    ax.set_xlabel("seconds since the first request")
    ax.set_ylabel("failed requests")
    ax.legend()
    ax.set_title("Errors over time, by class")
    return _save(fig, path)


def by_group(records: pd.DataFrame, column: str, path: Path) -> Path | None:
    if column not in records.columns or records[column].nunique() < 2:
        return None
    ok = metrics.succeeded(records)[[column, "ttft_ms"]]
    groups = [(name, g["ttft_ms"].dropna().to_numpy()) for name, g in ok.groupby(column, observed=True)]
    groups = [(n, v) for n, v in groups if len(v)]
    if len(groups) < 2:
        return None
    fig, ax = subplots(figsize=(10, 3.6))
    ax.boxplot([v for _, v in groups], showfliers=False)
    ax.set_xticks(range(1, len(groups) + 1), [f"{n:g}" if isinstance(n, float) else str(n) for n, _ in groups],
                  rotation=15)
    ax.set_ylabel("TTFT (ms)")
    ax.set_title(f"TTFT by {column}")
    return _save(fig, path)


def locust_history(history: pd.DataFrame | None, path: Path) -> Path | None:
    """For runs without records: users, req/s and Locust's P50/P99 over time from _stats_history.csv."""
    if history is None:
        return None
    series = timeseries.from_locust_history(history)
    if series.empty:
        return None
    fig, (lat, thr) = subplots(2, 1, figsize=(10, 5.5), sharex=True)
    lat.plot(series["t_s"], series["p50_ms"], "o-", markersize=3, label="P50 (Locust, bucketed)")
    lat.plot(series["t_s"], series["p99_ms"], "o--", markersize=3, label="P99 (Locust, bucketed)")
    lat.set_ylabel("response time (ms)")
    lat.legend()
    thr.plot(series["t_s"], series["req_s"], label="requests/s")
    thr.plot(series["t_s"], series["errors_s"], label="failures/s")
    thr.set_xlabel("seconds")
    twin = thr.twinx()
    twin.plot(series["t_s"], series["users"], color="#8172b2", label="users")
    twin.set_ylabel("users")
    thr.legend(loc="upper left")
    fig.suptitle("From Locust's history CSV (no per-request records in this folder)")
    return _save(fig, path)
