"""Concurrency sweeps: throughput vs latency over several runs, with the knee marked.

Each results folder is one point: its concurrency (users, from the run metadata; else the
mean number of requests in flight), output tokens/s, TTFT P50/P99, TPOT P50 and E2E P50/P99.
The knee is the last point before throughput stops paying for latency: the step after it adds
less than `min_gain` (default 10%) of throughput. When every step still gains that much, there
is no knee: the target is not saturated at the highest level tried (a "knee" picked on a
curve that is still rising would be a guess).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .plots import subplots
from .results import load_results
from .stats import summarize
from .timeseries import windows

MIN_GAIN = 0.10


def sweep_points(folders: list[str | Path], warmup_s: float = 0.0) -> pd.DataFrame:
    rows = []
    for folder in folders:
        results = load_results(folder, warmup_s)
        summary = summarize(results.records)
        metrics = summary["metrics"]
        users = (results.metadata.get("settings") or {}).get("users") or results.metadata.get("users")
        if not users:
            series = windows(results.records, 5.0)
            users = round(float(series["in_flight"].mean()), 1) if len(series) else None
        rows.append({"folder": str(folder), "concurrency": users,
                     "output_tok_s": summary["throughput_output_tok_s"], "req_s": summary["throughput_req_s"],
                     "ttft_p50": metrics["ttft_ms"].get("p50"), "ttft_p99": metrics["ttft_ms"].get("p99"),
                     "tpot_p50": metrics["tpot_ms"].get("p50"), "e2e_p50": metrics["e2e_ms"].get("p50"),
                     "e2e_p99": metrics["e2e_ms"].get("p99"), "failure_ratio": summary["failure_ratio"]})
    return pd.DataFrame(rows).sort_values("concurrency").reset_index(drop=True)


def knee(points: pd.DataFrame, min_gain: float = MIN_GAIN) -> int | None:
    """Index of the knee in `points` (sorted by concurrency); None when there are fewer than two
    points or every step still gained `min_gain` (not saturated)."""
    tput = points["output_tok_s"].to_numpy(dtype=float)
    for i in range(1, len(points)):
        gain = (tput[i] - tput[i - 1]) / tput[i - 1] if tput[i - 1] else 0
        if gain < min_gain:
            return i - 1
    return None


def verdict(points: pd.DataFrame, knee_index: int | None, min_gain: float = MIN_GAIN) -> str:
    """One line: where the knee is, or that the curve is still rising (and what to try)."""
    if knee_index is not None:
        return f"knee: {points.iloc[knee_index]['concurrency']:g} streams"
    if len(points) < 2:
        return "knee: - (one point: a curve needs two levels or more)"
    top = points.iloc[-1]
    return (f"not saturated: throughput still rose by {min_gain:.0%} or more at every step, up to "
            f"{top['concurrency']:g} streams ({top['output_tok_s']:,.0f} output tokens/s); try higher levels")


def _concurrency_axis(axis, concurrency: pd.Series) -> None:
    """Doubling levels (1, 2, 4, ... 64) bunch up on a linear axis: log scale once they span 4x,
    with the levels themselves as the ticks."""
    levels = concurrency.dropna().astype(float)
    axis.set_xlabel("concurrency (streams)")
    if len(levels) >= 2 and levels.min() > 0 and levels.max() / levels.min() >= 4:
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels.to_list(), [f"{v:g}" for v in levels])
        axis.minorticks_off()


def plot_sweep(points: pd.DataFrame, path: Path, knee_index: int | None) -> Path:
    fig, (left, middle, right) = subplots(1, 3, figsize=(15, 4))
    left.plot(points["concurrency"], points["output_tok_s"], "o-", label="output tokens/s")
    _concurrency_axis(left, points["concurrency"])
    left.set_ylabel("output tokens/s")
    left.set_title("Throughput")
    for column, style, label in (("ttft_p50", "s--", "TTFT P50"), ("ttft_p99", "^:", "TTFT P99"),
                                 ("e2e_p50", "o-", "E2E P50"), ("e2e_p99", "v-.", "E2E P99")):
        if column in points and points[column].notna().any():
            middle.plot(points["concurrency"], points[column], style, label=label)
    _concurrency_axis(middle, points["concurrency"])
    middle.set_ylabel("ms")
    middle.set_title("Latency")
    right.plot(points["output_tok_s"], points["ttft_p99"], "o-", label="TTFT P99")
    right.plot(points["output_tok_s"], points["tpot_p50"], "s-", label="TPOT P50")
    right.set_xlabel("output tokens/s")
    right.set_ylabel("ms")
    right.set_title("Latency paid for throughput")
    if knee_index is not None:
        k = points.iloc[knee_index]
        for axis in (left, middle):
            axis.axvline(k["concurrency"], color="grey", linestyle="--")
        left.annotate(f"knee: {k['concurrency']:g} streams", (k["concurrency"], k["output_tok_s"]),
                      xytext=(5, -15), textcoords="offset points")
        right.axvline(k["output_tok_s"], color="grey", linestyle="--")
    elif len(points) >= 2:
        left.annotate("not saturated: still rising", (0.03, 0.92), xycoords="axes fraction", color="#c44e52")
    left.legend(loc="lower right")
    middle.legend()
    right.legend()
    fig.suptitle("Throughput vs latency over the sweep")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
