"""Exact statistics from per-request records (pandas; no Locust import).

The metrics themselves (failure ratio, window, throughput, goodput, percentiles) are defined
once in analysis.metrics; the record columns come from the schema in tokenstorm.core.records.
Latency statistics are over successful requests; failures are counted by class; cancelled
requests (cut off by the end of the run) are counted apart.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from tokenstorm.core.records import NUMERIC_FIELDS, TEXT_FIELDS

from . import metrics
from .metrics import describe

METRICS = {  # column -> label
    "ttft_ms": "TTFT (ms)",
    "tpot_ms": "TPOT (ms)",
    "e2e_ms": "E2E (ms)",
    "tokens_per_s": "Tokens/s per request",
    "ttfb_ms": "TTFB (ms)",
    "itl_max_ms": "ITL max (ms)",
    "output_tokens": "Output tokens",
}
REPORT_METRICS = ("ttft_ms", "tpot_ms", "e2e_ms", "tokens_per_s")
LATE_MS = 10.0  # an open-loop request sent later than this after its intended time: the client fell behind
LATE_WARN_FRACTION, LATE_WARN_MIN = 0.01, 3  # warn past 1% late requests; one VM hiccup is not falling behind


class RecordsError(Exception):
    """Records that cannot be read; the message names the file and the problem."""


NUMERIC = tuple(NUMERIC_FIELDS)  # the schema's number columns (tokenstorm.core.records)
TEXT = tuple(TEXT_FIELDS)
CATEGORIES = ("status", "error_type", "worker_id", "scenario", "upstream", "model", "output_tokens_source",
              "finish_reason")
REQUIRED = ("request_id", "worker_id", "t_start", "status", "error_type", "ttft_ms", "e2e_ms", "output_tokens")


UNSENT_SUFFIX = "-unsent.csv"  # records a worker kept when its master died (tokenstorm/loadgen/distributed.py)


def load_records(directory: str | Path) -> pd.DataFrame:
    """All requests-*.csv of a results folder as one DataFrame (a record in a worker's -unsent
    file and in the master's file counts once)."""
    directory = Path(directory)
    files = sorted(directory.glob("requests-*.csv"))
    if not files:
        raise RecordsError(f"{directory}: no requests-*.csv files")
    frames = []
    for file in files:
        _check_complete(file)
        try:
            frame = pd.read_csv(file, dtype=dict.fromkeys(TEXT, "string"), keep_default_na=False,
                                na_values={c: [""] for c in NUMERIC})
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise RecordsError(f"{file}: cannot read it ({str(exc).splitlines()[0]})") from None
        missing = [c for c in REQUIRED if c not in frame.columns]
        if missing:
            raise RecordsError(f"{file}: missing columns {', '.join(missing)}")
        for column in NUMERIC:
            if column in frame.columns:
                converted = pd.to_numeric(frame[column], errors="coerce")
                bad = converted.isna() & frame[column].notna()
                if bad.any():
                    line = int(bad.idxmax()) + 2  # header is line 1
                    raise RecordsError(f"{file} line {line}: {column} {frame[column][bad.idxmax()]!r} is not a number")
                frame[column] = converted
        frames.append(frame)
    unsent = [file.name.endswith(UNSENT_SUFFIX) for file in files]
    if any(unsent):  # a worker's copy of the records its dead master may have written before it died
        written = {rid for frame, kept in zip(frames, unsent, strict=True) if not kept for rid in frame["request_id"]}
        frames = [frame[~frame["request_id"].isin(written)] if kept else frame
                  for frame, kept in zip(frames, unsent, strict=True)]
    records = pd.concat(frames, ignore_index=True)
    for column in CATEGORIES:  # few distinct values: categories compare and group much faster
        if column in records.columns:
            records[column] = records[column].astype("category")
    return records


def _check_complete(file: Path) -> None:
    """A records file whose last line has no line end was cut off mid-record (a crash, a full disk)."""
    with open(file, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        if size == 0:
            raise RecordsError(f"{file}: empty file (not even the header line)")
        f.seek(size - 1)
        if f.read(1) != b"\n":
            f.seek(0)
            lines = f.read().count(b"\n") + 1
            raise RecordsError(f"{file} line {lines}: the last record is cut short (no line end)")


def summarize(records: pd.DataFrame, slos: dict[str, float] | None = None) -> dict:
    """Totals, failures by class, throughput, goodput and exact latency statistics (analysis.metrics)."""
    cancelled = int(metrics.cancelled_mask(records).sum())
    records = metrics.counted(records)  # cut off by the end of the run: not failures, not counted
    total = len(records)
    ok = metrics.succeeded(records)
    failed = metrics.failed(records)
    window = metrics.window_s(records)
    summary: dict = {
        "requests": total,
        "ok": len(ok),
        "failed": len(failed),
        "failure_ratio": metrics.failure_ratio(records),
        "cancelled": cancelled,
        "failures_by_class": {str(k): int(v) for k, v in failed["error_type"].value_counts().items() if v},
        "window_s": round(window, 3),
        "throughput_req_s": metrics.throughput_req_s(records, window),
        "throughput_output_tok_s": metrics.output_tokens_per_s(records, window),
        "metrics": {column: describe(ok[column]) for column in METRICS if column in ok.columns},
    }
    if "t_intended" in records.columns and records["t_intended"].notna().any():
        lag = records["schedule_lag_ms"].dropna()
        intended = records["t_intended"].dropna()
        span = float(intended.max() - intended.min()) if len(intended) > 1 else 0.0
        summary["open_loop"] = {
            "arrivals": len(intended),
            "intended_rate_req_s": metrics.per_second(len(intended) - 1, span),
            "schedule_lag_ms": describe(lag),
            "late": int((lag > LATE_MS).sum()),
            "late_fraction": float((lag > LATE_MS).mean()) if len(lag) else 0.0,
            "ttft_from_intended": describe(ok["ttft_ms"] + ok["schedule_lag_ms"]),
        }
    if "http_status" in failed.columns:
        statuses = failed.loc[failed["error_type"] == "http_status", "http_status"].dropna().astype(int)
        summary["failures_by_status"] = {str(k): int(v) for k, v in statuses.value_counts().items()}
    if "output_tokens_source" in ok.columns:
        summary["output_tokens_source"] = {str(k): int(v) for k, v in ok["output_tokens_source"].value_counts().items()
                                           if v}
    slos = {k: v for k, v in (slos or {}).items() if v}
    if slos:
        summary["slos"] = slos
        summary["goodput_req_s"] = metrics.goodput_req_s(records, slos, window)
        summary["slo_attainment"] = metrics.slo_attainment(records, slos)
    return summary


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"


def format_report(summary: dict, title: str = "tokenstorm report") -> str:
    lines = [f"=== {title} ===",
             f"requests {summary['requests']}   ok {summary['ok']}   failed {summary['failed']} "
             f"({summary['failure_ratio']:.2%} of requests)   window {summary['window_s']:.1f} s"]
    if summary.get("cancelled"):
        lines.append(f"cancelled {summary['cancelled']} (still streaming when the run ended; not counted above)")
    if summary.get("token_count_warning"):
        lines.append(summary["token_count_warning"])
    if summary.get("master_died"):
        kept = ", ".join(summary["master_died"])
        lines.append(f"WARNING: the master died during the run; records its workers kept: {kept}")
    if summary["failures_by_class"]:
        statuses = ", ".join(f"{k} x{v}" for k, v in sorted((summary.get("failures_by_status") or {}).items()))
        lines.append("failures: " + ", ".join(f"{k} {v}" + (f" (HTTP {statuses})" if k == "http_status" and statuses
                                                            else "")
                                              for k, v in sorted(summary["failures_by_class"].items())))
    lines.append(f"throughput {summary['throughput_req_s']:.2f} req/s, "
                 f"{summary['throughput_output_tok_s']:,.1f} output tokens/s")
    if "goodput_req_s" in summary:
        slos = ", ".join(f"{k.removesuffix('_ms')} <= {v:g} ms" for k, v in summary["slos"].items())
        lines.append(f"goodput {summary['goodput_req_s']:.2f} req/s ({summary['slo_attainment']:.1%} of requests "
                     f"meet {slos})")
    loop = summary.get("open_loop")
    if loop:
        lag = loop["schedule_lag_ms"]
        lines.append(f"open loop: {loop['arrivals']} arrivals at {loop['intended_rate_req_s']:.2f} req/s intended; "
                     f"send lag p50 {lag.get('p50', 0):.2f} ms, p99 {lag.get('p99', 0):.2f} ms; TTFT from the "
                     f"intended time p50 {loop['ttft_from_intended'].get('p50', 0):.1f} ms, "
                     f"p99 {loop['ttft_from_intended'].get('p99', 0):.1f} ms")
        if loop["late_fraction"] > LATE_WARN_FRACTION and loop["late"] >= LATE_WARN_MIN:
            lines.append(f"WARNING: the client fell behind its schedule: {loop['late_fraction']:.1%} of requests were "
                         f"sent more than {LATE_MS:g} ms late (all users busy, or the client too slow): raise -u "
                         "(the cap on streams in flight) or add workers")
    header = f"{'metric (ok requests)':<22}{'count':>7}" + "".join(
        f"{h:>10}" for h in ("min", "mean", "median", "stddev", "P50", "P90", "P95", "P99", "max"))
    lines += ["", header]
    for column in REPORT_METRICS:
        stats = summary["metrics"].get(column, {"count": 0})
        if not stats["count"]:
            lines.append(f"{METRICS[column]:<22}{0:>7}")
            continue
        lines.append(f"{METRICS[column]:<22}{stats['count']:>7}" + "".join(
            f"{_fmt(stats[k]):>10}" for k in ("min", "mean", "median", "stddev", "p50", "p90", "p95", "p99", "max")))
    if summary.get("output_tokens_source"):
        lines.append("output tokens counted from: " + ", ".join(
            f"{k} {v}" for k, v in summary["output_tokens_source"].items()))
    return "\n".join(lines)
