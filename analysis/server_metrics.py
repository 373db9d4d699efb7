"""The target's own metrics (DIR/server-metrics.csv from --server-metrics): read, map, reconcile, plot.

The scraper writes every sample of every scrape (t, metric, labels, value). This module knows
which names vLLM, SGLang and the bundled mock give the same quantity, turns the scrapes into a
time series (queue depth, running requests, KV-cache usage, prefix-cache hit rate, token rates),
and reconciles the server's latency histograms with the client's records: over the window from
the first to the last scrape, the server's mean is (sum_last - sum_first) / (count_last -
count_first), and the client's mean minus it is the client-side overhead (network, HTTP, the
client's own reading): the part of a TTFT the server never sees.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics, plots
from .stats import RecordsError

FILENAME = "server-metrics.csv"

# Each quantity: the sample names that carry it, the first one a scrape holds wins.
GAUGES = {
    "queue": ("vllm:num_requests_waiting", "sglang:num_queue_reqs", "mock_queued_requests"),
    "running": ("vllm:num_requests_running", "sglang:num_running_reqs", "mock_running_streams"),
    # fractions 0-1 (vLLM renamed gpu_cache_usage_perc to kv_cache_usage_perc in V1)
    "kv_cache": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage"),
    "prefix_hit": ("vllm:gpu_prefix_cache_hit_rate", "sglang:cache_hit_rate"),
}
FRACTIONS = {"kv_cache", "prefix_hit"}  # averaged over label sets (engines), not added
# prefix-cache hits / queries as counters (vLLM V1; the gpu_ names are V0's)
PREFIX_COUNTERS = (("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"),
                   ("vllm:gpu_prefix_cache_hits_total", "vllm:gpu_prefix_cache_queries_total"))
COUNTERS = {
    "generation_tokens": ("vllm:generation_tokens_total", "sglang:generation_tokens_total",
                          "mock_output_tokens_total"),
    "prompt_tokens": ("vllm:prompt_tokens_total", "sglang:prompt_tokens_total", "mock_prompt_tokens_total"),
}
# latency histograms (seconds), by the client's record column they compare with
HISTOGRAMS = {
    "ttft_ms": ("vllm:time_to_first_token_seconds", "sglang:time_to_first_token_seconds",
                "mock_time_to_first_token_seconds"),
    "e2e_ms": ("vllm:e2e_request_latency_seconds", "sglang:e2e_request_latency_seconds"),
    # per request first (what the client's TPOT is); vLLM's older name is per token
    "tpot_ms": ("vllm:request_time_per_output_token_seconds", "vllm:time_per_output_token_seconds",
                "sglang:time_per_output_token_seconds"),
}
LABELS = {"ttft_ms": "TTFT", "e2e_ms": "E2E", "tpot_ms": "TPOT"}


def load_samples(folder: Path) -> pd.DataFrame | None:
    """The scrapes of a results folder (None without server-metrics.csv); RecordsError when unreadable."""
    path = Path(folder) / FILENAME
    if not path.exists():
        return None
    try:
        frame = pd.read_csv(path, dtype={"metric": str, "labels": str}, keep_default_na=False,
                            na_values={"t": [""], "value": [""]})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise RecordsError(f"{path}: cannot read it ({str(exc).splitlines()[0]})") from None
    missing = {"t", "metric", "labels", "value"} - set(frame.columns)
    if missing:
        raise RecordsError(f"{path}: no column {', '.join(sorted(missing))}")
    frame["t"] = pd.to_numeric(frame["t"], errors="coerce")
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    return frame.dropna(subset=["t"])


def _by_scrape(samples: pd.DataFrame, name: str, mean: bool = False) -> pd.Series:
    """One value per scrape time of the sample `name`, over its label sets (sum, or mean)."""
    part = samples[samples["metric"] == name].groupby("t")["value"]
    return (part.mean() if mean else part.sum()).sort_index()


def _first_present(samples: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    present = set(samples["metric"].unique())
    return next((n for n in names if n in present), None)


def _rate(counter: pd.Series) -> pd.Series:
    """Per-second rate from each scrape to the next; a counter reset (server restart) gives none."""
    dv, dt = _ahead(counter), _ahead(pd.Series(counter.index, index=counter.index))
    return (dv / dt).where(dv >= 0)


def _ahead(values: pd.Series) -> pd.Series:
    """The change from each scrape to the next (NaN at the last)."""
    return values.shift(-1) - values


def series(samples: pd.DataFrame, t0: float) -> tuple[pd.DataFrame, dict[str, str]]:
    """The quantities over time (t_s since t0), and which sample name each came from. Gauges are
    their value at each scrape; rates and means of an interval stand at its start, as the
    client's windows (analysis.timeseries) do."""
    times = np.sort(samples["t"].unique())
    out = pd.DataFrame({"t_s": times - t0}, index=times)
    sources: dict[str, str] = {}
    for key, names in GAUGES.items():
        name = _first_present(samples, names)
        if name:
            sources[key] = name
            out[key] = _by_scrape(samples, name, mean=key in FRACTIONS)
    if "prefix_hit" not in sources:
        for hits_name, queries_name in PREFIX_COUNTERS:
            hits, queries = _by_scrape(samples, hits_name), _by_scrape(samples, queries_name)
            if len(hits) and len(queries):
                dq = _ahead(queries)
                out["prefix_hit"] = (_ahead(hits) / dq).where(dq > 0)
                sources["prefix_hit"] = f"{hits_name} / {queries_name}"
                break
    for key, names in COUNTERS.items():
        name = _first_present(samples, names)
        if name:
            sources[key] = name
            out[f"{key}_s"] = _rate(_by_scrape(samples, name))
    for column, names in HISTOGRAMS.items():
        name = _first_present(samples, tuple(n + "_sum" for n in names))
        if name:
            base = name.removesuffix("_sum")
            sums, counts = _by_scrape(samples, base + "_sum"), _by_scrape(samples, base + "_count")
            dc = _ahead(counts)
            out[f"server_{column}"] = (_ahead(sums) / dc * 1000).where(dc > 0)  # mean per interval
            sources[column] = base
    return out.reset_index(drop=True), sources


def _client_event_time(records: pd.DataFrame, column: str) -> pd.Series:
    """When the server would have observed `column` of each request: first token for TTFT, else the end."""
    if column == "ttft_ms":
        return records["t_start"] + records["ttft_ms"] / 1000
    return metrics.end_times(records)


def reconcile(samples: pd.DataFrame, records: pd.DataFrame, since: float | None = None) -> list[dict]:
    """Client mean minus server mean of each latency the server reports as a histogram, over the
    window between the first and the last scrape (requests whose first token, or end, falls in it).
    `since` (unix s, the end of a warm-up): the window starts at the first scrape at or after it."""
    if since is not None:
        samples = samples[samples["t"] >= since]
    out = []
    for column, names in HISTOGRAMS.items():
        name = _first_present(samples, tuple(n + "_sum" for n in names))
        if name is None or column not in records.columns:
            continue
        base = name.removesuffix("_sum")
        sums, counts = _by_scrape(samples, base + "_sum"), _by_scrape(samples, base + "_count")
        both = pd.concat([sums, counts], axis=1, keys=["sum", "count"]).dropna()
        if len(both) < 2:
            continue
        first, last = both.index[0], both.index[-1]
        n_server = float(both["count"].iloc[-1] - both["count"].iloc[0])
        sum_server = float(both["sum"].iloc[-1] - both["sum"].iloc[0])
        timed = records[records[column].notna()]  # cancelled too: the server saw their first token
        at = _client_event_time(timed, column)
        client = timed.loc[(at > first) & (at <= last), column]
        server_mean = sum_server / n_server * 1000 if n_server > 0 else math.nan
        client_mean = float(client.mean()) if len(client) else math.nan
        out.append({"metric": column, "label": LABELS[column], "server_metric": base, "window_start": float(first),
                    "window_s": float(last - first), "client_requests": len(client),
                    "server_observations": int(n_server), "client_mean_ms": client_mean,
                    "server_mean_ms": server_mean, "overhead_ms": client_mean - server_mean})
    return out


def summary(samples: pd.DataFrame, records: pd.DataFrame, since: float | None = None) -> dict:
    """What the report says about the scrapes: count, window, sources, reconciliation (from `since`)."""
    times = np.sort(samples["t"].unique())
    t0 = float(records["t_start"].min()) if len(records) else float(times[0])
    _, sources = series(samples, t0)
    return {"scrapes": len(times), "first": float(times[0]), "last": float(times[-1]),
            "window_s": float(times[-1] - times[0]), "sources": sources,
            "reconciliation": reconcile(samples, records, since)}


def plot(samples: pd.DataFrame, records: pd.DataFrame, client: pd.DataFrame, path: Path) -> Path | None:
    """Server queue, running, KV-cache and prefix-cache hit rate beside the client's TTFT and throughput.
    `client` is analysis.timeseries.windows(records)."""
    if samples.empty:
        return None
    t0 = float(records["t_start"].min()) if len(records) else float(samples["t"].min())
    server, sources = series(samples, t0)
    fig, (lat, load, cache, thr) = plots.subplots(4, 1, figsize=(10, 10), sharex=True)
    if not client.empty:
        lat.plot(client["t_s"], client["ttft_p50"], "o-", markersize=3, label="client TTFT P50")
    if "server_ttft_ms" in server:
        lat.step(server["t_s"], server["server_ttft_ms"], "--", where="post",
                 label=f"server TTFT mean ({sources['ttft_ms']})")
    lat.set_ylabel("TTFT (ms)")
    lat.legend(loc="upper left", fontsize=8)
    for key, style in (("running", "-"), ("queue", "--")):
        if key in server:
            load.step(server["t_s"], server[key], style, where="post", label=f"server {key} ({sources[key]})")
    if not client.empty:
        load.plot(client["t_s"], client["in_flight"], ":", color="#8172b2", label="client in flight")
    load.set_ylabel("requests")
    load.legend(loc="upper left", fontsize=8)
    shown = False
    for key, label in (("kv_cache", "KV-cache usage"), ("prefix_hit", "prefix-cache hit rate")):
        if key in server:
            cache.step(server["t_s"], server[key] * 100, where="post", label=f"{label} ({sources[key]})")
            shown = True
    cache.set_ylabel("cache (%)")
    if shown:
        cache.legend(loc="upper left", fontsize=8)
    else:
        cache.text(0.5, 0.5, "no KV-cache or prefix-cache metrics exposed by this server", ha="center",
                   va="center", transform=cache.transAxes)
    if not client.empty:
        thr.plot(client["t_s"], client["output_tok_s"], "o-", markersize=3, label="client output tokens/s")
    if "generation_tokens_s" in server:
        thr.step(server["t_s"], server["generation_tokens_s"], "--", where="post",
                 label=f"server generation tokens/s ({sources['generation_tokens']})")
    thr.set_ylabel("tokens/s")
    thr.set_xlabel("seconds since the first request")
    thr.legend(loc="upper left", fontsize=8)
    fig.suptitle("The server's own metrics beside the client's view")
    return plots._save(fig, path)
