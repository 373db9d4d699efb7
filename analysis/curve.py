"""Concurrency sweeps: throughput vs latency over several runs, with the knee marked.

Each results folder is one point: its concurrency (users, from the run metadata; else the
mean number of requests in flight), output tokens/s, TTFT P50/P99 and TPOT P50. The knee is
the last point before throughput stops paying for latency: past it, each step adds less
than `min_gain` (default 10%) of throughput per step while TTFT P99 keeps growing. When every
step still gains, the knee is the point farthest from the line joining the first and last
points of the normalized curve (the "kneedle" rule).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .plots import subplots
from .results import load_results
from .stats import summarize
from .timeseries import windows


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
                     "tpot_p50": metrics["tpot_ms"].get("p50"), "failure_ratio": summary["failure_ratio"]})
    return pd.DataFrame(rows).sort_values("concurrency").reset_index(drop=True)


def knee(points: pd.DataFrame, min_gain: float = 0.10) -> int | None:
    """Index of the knee in `points` (sorted by concurrency)."""
    if len(points) < 3:
        return None
    tput = points["output_tok_s"].to_numpy(dtype=float)
    for i in range(1, len(points)):
        gain = (tput[i] - tput[i - 1]) / tput[i - 1] if tput[i - 1] else 0
        if gain < min_gain:
            return i - 1
    x = points["concurrency"].to_numpy(dtype=float)
    xn = (x - x.min()) / (np.ptp(x) or 1)
    yn = (tput - tput.min()) / (np.ptp(tput) or 1)
    distance = yn - xn  # above the diagonal from the first to the last point
    return int(np.argmax(distance))


def plot_sweep(points: pd.DataFrame, path: Path, knee_index: int | None) -> Path:
    fig, (left, right) = subplots(1, 2, figsize=(11, 4))
    left.plot(points["concurrency"], points["output_tok_s"], "o-", label="output tokens/s")
    left.set_xlabel("concurrency (streams)")
    left.set_ylabel("output tokens/s")
    twin = left.twinx()
    twin.plot(points["concurrency"], points["ttft_p50"], "s--", color="#dd8452", label="TTFT P50")
    twin.plot(points["concurrency"], points["ttft_p99"], "^:", color="#c44e52", label="TTFT P99")
    twin.set_ylabel("TTFT (ms)")
    right.plot(points["output_tok_s"], points["ttft_p99"], "o-", label="TTFT P99")
    right.plot(points["output_tok_s"], points["tpot_p50"], "s-", label="TPOT P50")
    right.set_xlabel("output tokens/s")
    right.set_ylabel("ms")
    if knee_index is not None:
        k = points.iloc[knee_index]
        left.axvline(k["concurrency"], color="grey", linestyle="--")
        left.annotate(f"knee: {k['concurrency']:g} streams", (k["concurrency"], k["output_tok_s"]),
                      xytext=(5, -15), textcoords="offset points")
        right.axvline(k["output_tok_s"], color="grey", linestyle="--")
    left.legend(loc="upper left")
    twin.legend(loc="lower right")
    right.legend()
    fig.suptitle("Throughput vs latency over the sweep")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
