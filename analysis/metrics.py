"""One definition of each run-level metric: the report, compare, the time series, sweeps and the
web UI's live tab all compute them here, so one run gives the same numbers everywhere.

- A request is *counted* unless it was cancelled: a stream still running when the run ended was
  cut off by the run, not failed by the target. Cancelled requests are reported apart and are
  never failures (nor successes).
- Failure ratio: failed counted requests / counted requests.
- Window: first counted request sent -> last counted request ended (end of stream, else last token).
- Throughput: successful requests / window (req/s); output tokens/s: output tokens of the
  successful requests / window.
- Goodput: successful requests that meet every SLO (column <= limit) / window; SLO attainment:
  those / counted requests.
- Percentiles: linear interpolation (numpy's default) over the raw values, never Locust's buckets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from tokenstorm.core.records import CANCELLED

PERCENTILES = (50, 90, 95, 99, 99.9)


# -- one request ----------------------------------------------------------------------------
def is_cancelled(error_type: object) -> bool:
    return error_type == CANCELLED


def is_failure(status: object, error_type: object) -> bool:
    """A counted request that did not succeed (a cancelled one is not a failure)."""
    return status != "ok" and not is_cancelled(error_type)


def meets_slos(values: Mapping[str, float | None], slos: Mapping[str, float]) -> bool:
    """A successful request's values (e.g. {"ttft_ms": 80}) within every SLO limit."""
    return all(values.get(column) is not None and values[column] <= limit for column, limit in slos.items() if limit)


def per_second(count: float, window_s: float) -> float:
    return count / window_s if window_s > 0 else 0.0


# -- a frame of records ---------------------------------------------------------------------
def cancelled_mask(records: pd.DataFrame) -> pd.Series:
    return records["error_type"] == CANCELLED


def counted(records: pd.DataFrame) -> pd.DataFrame:
    """The requests every metric counts: all but the cancelled ones."""
    mask = cancelled_mask(records)
    return records[~mask] if mask.any() else records


def succeeded(records: pd.DataFrame) -> pd.DataFrame:
    return records[records["status"] == "ok"]


def failed(records: pd.DataFrame) -> pd.DataFrame:
    """Failed requests (cancelled ones left out)."""
    return records[(records["status"] != "ok") & ~cancelled_mask(records)]


def failure_ratio(records: pd.DataFrame) -> float:
    total = len(counted(records))
    return len(failed(records)) / total if total else 0.0


def end_times(records: pd.DataFrame) -> pd.Series:
    """Unix time each request ended: end of stream, else its last output token, else its start."""
    return records["t_start"] + records["total_ms"].fillna(records["e2e_ms"]).fillna(0) / 1000


def window_s(records: pd.DataFrame) -> float:
    """First counted request sent -> last counted request ended, in seconds."""
    records = counted(records)
    if records.empty:
        return 0.0
    return float(end_times(records).max() - records["t_start"].min())


def throughput_req_s(records: pd.DataFrame, window: float | None = None) -> float:
    return per_second(len(succeeded(records)), window_s(records) if window is None else window)


def output_tokens_per_s(records: pd.DataFrame, window: float | None = None) -> float:
    tokens = float(succeeded(records)["output_tokens"].sum())
    return per_second(tokens, window_s(records) if window is None else window)


def good(records: pd.DataFrame, slos: Mapping[str, float]) -> pd.DataFrame:
    """Successful requests that meet every SLO."""
    out = succeeded(records)
    for column, limit in slos.items():
        if limit:
            out = out[out[column].notna() & (out[column] <= limit)]
    return out


def goodput_req_s(records: pd.DataFrame, slos: Mapping[str, float], window: float | None = None) -> float:
    return per_second(len(good(records, slos)), window_s(records) if window is None else window)


def slo_attainment(records: pd.DataFrame, slos: Mapping[str, float]) -> float:
    total = len(counted(records))
    return len(good(records, slos)) / total if total else 0.0


# -- percentiles ----------------------------------------------------------------------------
def percentiles(values: Iterable[float] | np.ndarray, points: Iterable[float] = PERCENTILES) -> list[float | None]:
    """The percentiles `points` (0-100) of `values` (NaN and None left out): None for no values."""
    array = np.asarray([v for v in values if v is not None] if not isinstance(values, np.ndarray) else values,
                       dtype=float)
    array = array[~np.isnan(array)]
    points = list(points)
    if not array.size:
        return [None] * len(points)
    return [float(v) for v in np.percentile(array, points)]


def percentile_key(p: float) -> str:
    """The key of percentile p in summaries and JSON: p50, p99_9."""
    return f"p{p:g}".replace(".", "_")


def percentile_label(p: float) -> str:
    """The label of percentile p for people: P50, P99.9."""
    return f"P{p:g}"


def needed_samples(p: float) -> int:
    """A percentile p says something about the tail only with at least 1 / (1 - p) samples."""
    return math.ceil(1 / (1 - p / 100) - 1e-9)


def describe(values: pd.Series) -> dict:
    """count, min, max, mean, median, stddev and the PERCENTILES (linear interpolation)."""
    array = values.to_numpy(dtype=float, na_value=np.nan)
    array = array[~np.isnan(array)]
    if not array.size:
        return {"count": 0}
    out = {"count": int(array.size), "min": float(array.min()), "max": float(array.max()),
           "mean": float(array.mean()), "stddev": float(array.std(ddof=1)) if array.size > 1 else 0.0}
    points = percentiles(array, [50, *PERCENTILES])  # one partition for all of them
    out["median"] = points[0]
    thin = []
    for p, value in zip(PERCENTILES, points[1:], strict=True):
        key = percentile_key(p)
        out[key] = value
        if array.size < needed_samples(p):
            thin.append(key)
    out["few_samples"] = thin  # percentiles computed over fewer samples than they need
    return out


# -- prefix cache ---------------------------------------------------------------------------
NOT_REPORTED = "not reported by the server"


def prefix_cache(records: pd.DataFrame) -> dict | None:
    """The prefix-cache hit rate (sum cached_tokens / sum input_tokens over the successful requests whose
    usage reported cached tokens) and TTFT P50/P99 of cached (cached_tokens > 0) vs uncached requests.
    None when the records have no cached_tokens column (written before it existed); hit_rate None
    when no successful request reported it."""
    if "cached_tokens" not in records.columns:
        return None
    ok = succeeded(records)
    reported = ok[ok["cached_tokens"].notna() & ok["input_tokens"].notna()]
    if reported.empty:
        return {"requests": 0, "hit_rate": None, "note": NOT_REPORTED}
    input_tokens = float(reported["input_tokens"].sum())
    cached_tokens = float(reported["cached_tokens"].sum())
    out: dict = {"requests": len(reported), "cached_tokens": cached_tokens, "input_tokens": input_tokens,
                 "hit_rate": cached_tokens / input_tokens if input_tokens else None}
    for name, part in (("cached", reported[reported["cached_tokens"] > 0]),
                       ("uncached", reported[reported["cached_tokens"] == 0])):
        p50, p99 = percentiles(part["ttft_ms"].to_numpy(dtype=float, na_value=np.nan), (50, 99))
        out[name] = {"requests": len(part), "ttft_p50": p50, "ttft_p99": p99}
    return out
