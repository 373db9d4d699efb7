"""Time series in fixed windows, from the records (or from Locust's history CSV without records)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import metrics


def windows(records: pd.DataFrame, width_s: float = 5.0) -> pd.DataFrame:
    """Per window (by completion time): requests, errors, output tokens/s, TTFT/TPOT p50/p99,
    and the mean number of requests in flight (cancelled requests count in flight only: the
    metrics are analysis.metrics', per window)."""
    if records.empty:
        return pd.DataFrame()
    start = records["t_start"]
    end = metrics.end_times(records)
    t0 = float(start.min())
    edges = np.arange(t0, float(end.max()) + width_s, width_s)
    frame = records.assign(_end=end, _win=np.floor((end - t0) / width_s).astype(int))
    ok = metrics.succeeded(frame)
    out = pd.DataFrame({"t_s": (edges[:-1] - t0)})
    grouped_all = metrics.counted(frame).groupby("_win")
    grouped_ok = ok.groupby("_win")
    out["requests"] = grouped_all.size().reindex(out.index, fill_value=0)
    out["errors"] = metrics.failed(frame).groupby("_win").size().reindex(out.index, fill_value=0)
    out["output_tok_s"] = metrics.per_second(grouped_ok["output_tokens"].sum().reindex(out.index, fill_value=0),
                                             width_s)
    out["req_s"] = metrics.per_second(grouped_ok.size().reindex(out.index, fill_value=0), width_s)
    for column, label in (("ttft_ms", "ttft"), ("tpot_ms", "tpot")):
        out[f"{label}_p50"] = grouped_ok[column].quantile(0.5).reindex(out.index)
        out[f"{label}_p99"] = grouped_ok[column].quantile(0.99).reindex(out.index)
    out["in_flight"] = np.diff(_concurrency_integral(start.to_numpy(), end.to_numpy(), edges)) / width_s
    return out


def _concurrency_integral(starts: np.ndarray, ends: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The integral of the number of requests in flight from the first event to each `at`.

    Concurrency is a step function (+1 at each start, -1 at each end), so its integral is
    piecewise linear between events: O(n log n) for any number of windows."""
    times = np.concatenate([starts, ends])
    steps = np.concatenate([np.ones(len(starts)), -np.ones(len(ends))])
    order = np.argsort(times, kind="stable")
    times, level = times[order], np.cumsum(steps[order])
    integral = np.concatenate([[0.0], np.cumsum(level[:-1] * np.diff(times))])
    return np.interp(at, times, integral)


def error_windows(records: pd.DataFrame, width_s: float = 5.0) -> pd.DataFrame:
    """Failed requests per window and class (columns), for the error timeline (cancelled ones are not failures)."""
    failed = metrics.failed(records)[["t_start", "error_type"]]
    if failed.empty:
        return pd.DataFrame()
    t0 = float(records["t_start"].min())
    win = (np.floor((failed["t_start"] - t0) / width_s) * width_s).rename("t_s")
    return failed.groupby([win, failed["error_type"].astype(str)]).size().unstack(fill_value=0)


def from_locust_history(history: pd.DataFrame) -> pd.DataFrame:
    """The same view from Locust's _stats_history.csv (Aggregated rows), for runs without records."""
    rows = history[history["Name"] == "Aggregated"].copy()
    if rows.empty:
        return pd.DataFrame()
    t0 = rows["Timestamp"].min()
    return pd.DataFrame({"t_s": rows["Timestamp"] - t0, "users": rows["User Count"],
                         "req_s": rows["Requests/s"], "errors_s": rows["Failures/s"],
                         "p50_ms": pd.to_numeric(rows["50%"], errors="coerce"),
                         "p99_ms": pd.to_numeric(rows["99%"], errors="coerce")})
