"""`python -m analysis compare BASE NEW`: per metric and percentile, the change and whether it is noise.

Each statistic gets a bootstrap confidence interval for the relative change (resampling both
runs' successful requests), Bonferroni-corrected for the number of statistics compared; a
change is flagged when its interval excludes 0, and it is a regression when it is flagged,
worse (higher latency, lower per-request tokens/s) and beyond the threshold. Tail percentiles
are compared only with enough samples (P90: 100, P99: 1,000 in both runs): the bootstrap of a
percentile resting on a few tail points is not to be trusted. The exit code is 1 when there
is a regression (for CI pipelines), 0 otherwise.

The failure ratio is a proportion: its change gets Newcombe's interval for a difference of two
proportions (from Wilson score intervals; right with few or no failures, where the normal
approximation is not), at the same corrected level as the bootstrap rows, and it is a regression
when that interval is above 0 and the rise is a tenth of the threshold in percentage points or
more (10% -> 1 point): 13 vs 17 failures in 400 is noise, not a regression. Throughput and
goodput are one number per run, with no interval: a regression when lower by the threshold or
more. Cancelled requests (cut off by the end of a run) are never failures.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd

from . import metrics
from .metrics import needed_samples
from .stats import METRICS

COMPARED = {  # metric -> True when higher is worse
    "ttft_ms": True, "tpot_ms": True, "e2e_ms": True, "itl_max_ms": True, "tokens_per_s": False,
}
STATS = ("p50", "p90", "p99", "mean")


def _stat(values: np.ndarray, stat: str, axis=None):
    if stat == "mean":
        return values.mean(axis=axis)
    return np.percentile(values, float(stat[1:]), axis=axis)


MIN_TAIL_FACTOR = 10  # compare percentile p only with 10 / (1 - p) samples in both runs (P99: 1,000)
BOOTSTRAP_CAP = 20_000  # larger runs are bootstrapped on a random subset: a wider, never narrower, interval
CHUNK = 50


def _bootstrap(a: np.ndarray, b: np.ndarray, resamples: int, rng) -> dict[str, np.ndarray]:
    """Relative change (%) of every statistic over `resamples` resamples, in bounded memory."""
    if len(a) > BOOTSTRAP_CAP:
        a = rng.choice(a, BOOTSTRAP_CAP, replace=False)
    if len(b) > BOOTSTRAP_CAP:
        b = rng.choice(b, BOOTSTRAP_CAP, replace=False)
    out: dict[str, list] = {stat: [] for stat in STATS}
    for start in range(0, resamples, CHUNK):
        n = min(CHUNK, resamples - start)
        sa = a[rng.integers(0, len(a), size=(n, len(a)))]
        sb = b[rng.integers(0, len(b), size=(n, len(b)))]
        for stat in STATS:
            xa = _stat(sa, stat, axis=1)
            out[stat].append((_stat(sb, stat, axis=1) - xa) / np.where(xa == 0, np.nan, xa) * 100)
    return {stat: np.concatenate(v) for stat, v in out.items()}


RATES = {"throughput_req_s": metrics.throughput_req_s, "output_tok_s": metrics.output_tokens_per_s}
LABELS = {**METRICS, "failure_ratio": "failure ratio", "throughput_req_s": "throughput (req/s)",
          "output_tok_s": "output tokens/s", "goodput_req_s": "goodput (req/s)"}


def _wilson(failed: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p, d = failed / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion_change_interval(failed_a: int, n_a: int, failed_b: int, n_b: int,
                               confidence: float) -> tuple[float, float]:
    """Interval of p_b - p_a (Newcombe 1998, method 10: hybrid of the two Wilson intervals)."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    pa, pb = (failed_a / n_a if n_a else 0.0), (failed_b / n_b if n_b else 0.0)
    (la, ua), (lb, ub) = _wilson(failed_a, n_a, z), _wilson(failed_b, n_b, z)
    d = pb - pa
    return d - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2), d + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)


def _run_rows(base: pd.DataFrame, new: pd.DataFrame, threshold_pct: float, slos: dict[str, float],
              confidence: float) -> list[dict]:
    """One row per run-level figure: failure ratio, throughput, output tokens/s, goodput."""
    ra, rb = metrics.failure_ratio(base), metrics.failure_ratio(new)
    low, high = proportion_change_interval(len(metrics.failed(base)), len(metrics.counted(base)),
                                           len(metrics.failed(new)), len(metrics.counted(new)), confidence)
    significant = bool(low > 0 or high < 0)
    rows = [{"metric": "failure_ratio", "stat": "ratio", "base": ra, "new": rb, "change_pct": (rb - ra) * 100,
             "ci_low_pct": low * 100, "ci_high_pct": high * 100, "significant": significant,
             "regression": low > 0 and (rb - ra) * 100 >= threshold_pct / 10}]
    rates = dict(RATES)
    if slos:
        rates["goodput_req_s"] = lambda records: metrics.goodput_req_s(records, slos)
    for name, rate in rates.items():
        va, vb = rate(base), rate(new)
        change = (vb - va) / va * 100 if va else 0.0
        rows.append({"metric": name, "stat": "run", "base": va, "new": vb, "change_pct": change,
                     "ci_low_pct": None, "ci_high_pct": None, "significant": abs(change) >= threshold_pct,
                     "regression": change <= -threshold_pct, "note": "one value per run"})
    return rows


def compare(base: pd.DataFrame, new: pd.DataFrame, threshold_pct: float = 10.0, resamples: int = 1000,
            confidence: float = 0.95, seed: int = 0, slos: dict[str, float] | None = None) -> dict:
    """Base vs new records; `slos` (the base run's, applied to both) adds a goodput row."""
    rng = np.random.default_rng(seed)
    rows = []
    base_ok, new_ok = metrics.succeeded(base), metrics.succeeded(new)
    for metric, higher_is_worse in COMPARED.items():
        a = base_ok[metric].dropna().to_numpy(dtype=float)
        b = new_ok[metric].dropna().to_numpy(dtype=float)
        if len(a) < 2 or len(b) < 2:
            continue
        boots = _bootstrap(a, b, resamples, rng)
        for stat in STATS:
            va, vb = float(_stat(a, stat)), float(_stat(b, stat))
            if va == 0:
                continue
            rows.append({"metric": metric, "stat": stat, "base": va, "new": vb, "change_pct": (vb - va) / va * 100,
                         "_boot": boots[stat], "_worse_up": higher_is_worse, "_n": min(len(a), len(b))})
    # Many statistics are compared at once: with 20 of them at 95% each, one would be flagged by
    # chance in most reruns. Bonferroni: each interval at 1 - (1 - confidence) / number of tests.
    per_test = 1 - (1 - confidence) / (len(rows) + 1)  # + the failure ratio's interval
    for row in rows:
        boot, higher_is_worse, n = row.pop("_boot"), row.pop("_worse_up"), row.pop("_n")
        if row["stat"] != "mean" and n < MIN_TAIL_FACTOR * needed_samples(float(row["stat"][1:])):
            # a tail percentile from a handful of tail points (and its bootstrap) is not stable
            row |= {"ci_low_pct": None, "ci_high_pct": None, "significant": False, "regression": False,
                    "note": "too few samples"}
            continue
        low, high = np.nanpercentile(boot, [(1 - per_test) / 2 * 100, (1 + per_test) / 2 * 100])
        significant = bool(low > 0 or high < 0)
        worse = row["change_pct"] > 0 if higher_is_worse else row["change_pct"] < 0
        row |= {"ci_low_pct": float(low), "ci_high_pct": float(high), "significant": significant,
                "regression": significant and worse and abs(row["change_pct"]) >= threshold_pct}
    rows += _run_rows(base, new, threshold_pct, {k: v for k, v in (slos or {}).items() if v}, per_test)
    return {"threshold_pct": threshold_pct, "confidence": confidence, "per_test_confidence": per_test,
            "resamples": resamples, "rows": rows,
            "regressions": [f"{r['metric']} {r['stat']}" for r in rows if r["regression"]]}


def _stat_label(stat: str) -> str:
    return stat.upper().replace("_", ".") if stat.startswith("p") else stat


def format_comparison(result: dict, base_name: str, new_name: str,
                      differences: list[tuple[str, object, object]] | None = None) -> str:
    lines = [f"=== compare: {base_name} -> {new_name} (flagged: the {result['per_test_confidence']:.2%} bootstrap "
             f"interval excludes 0, {result['confidence']:.0%} for the whole table; regression: flagged, worse "
             f"and >= {result['threshold_pct']:g}%) ==="]
    if differences is not None:
        if differences:
            lines.append("config differences (base -> new):")
            lines += [f"  {key}: {a!r} -> {b!r}" for key, a, b in differences]
        else:
            lines.append("config differences: none (same settings, users and versions)")
    lines.append(f"{'metric':<22}{'stat':>6}{'base':>12}{'new':>12}{'change':>10}{'interval':>22}  verdict")
    for r in result["rows"]:
        unit = "pt" if r["metric"] == "failure_ratio" else "%"
        interval = "" if r["ci_low_pct"] is None else f"[{r['ci_low_pct']:+.1f}{unit}, {r['ci_high_pct']:+.1f}{unit}]"
        verdict = "REGRESSION" if r["regression"] else ("changed" if r["significant"] else r.get("note", "noise"))
        change = f"{r['change_pct']:>+8.1f}" + ("pt" if r["metric"] == "failure_ratio" else "% ")
        lines.append(f"{LABELS.get(r['metric'], r['metric']):<22}{_stat_label(r['stat']):>6}{r['base']:>12.3f}"
                     f"{r['new']:>12.3f}{change}{interval:>22}  {verdict}")
    lines.append("regressions: " + (", ".join(result["regressions"]) or "none"))
    return "\n".join(lines)
