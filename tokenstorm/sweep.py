"""`python -m tokenstorm sweep` and `calibrate`: series of real Locust runs, one results folder each.

sweep: one headless run per concurrency level (or arrival rate), each to a fixed number of
requests or a fixed time, into OUT/<level>/; it stops past saturation (TTFT P99 or the error
rate over its limit, or throughput no longer rising by --min-gain), then writes the analysis
sweep curve (OUT/sweep.csv/json/png) and attaches the client calibration.

calibrate: the client against the bundled mock with --jitter 0 at rising concurrency: how far
measured TTFT and TPOT are from the configured ones (P50/P99) and the client's CPU, i.e. how
far one worker process can be pushed on this machine before its numbers stop being true.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from analysis import metrics
from analysis.curve import knee, plot_sweep, sweep_points, verdict
from analysis.results import load_results
from analysis.stats import RecordsError, summarize

from .core.assets import locustfile
from .mockproc import MockProcess

LOCUSTFILE = locustfile("chat_stream")
SAFE_TTFT_ERROR_MS = 5.0
SAFE_CPU_PCT = 70.0
SAFE_RULE = f"TTFT error p99 <= {SAFE_TTFT_ERROR_MS:g} ms and client CPU < {SAFE_CPU_PCT:g}%"


def _locust(host: str, folder: Path, users: int, extra: list[str], timeout: float,
            env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "locust"), "-f", str(LOCUSTFILE), "--headless", "--only-summary",
           "--host", host, "-u", str(users), "--results-dir", str(folder), "--exit-code-on-error", "0", *extra]
    if "-r" not in extra:
        cmd += ["-r", str(users)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")} | (env_extra or {})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _point(folder: Path, level: float) -> dict:
    summary = summarize(load_results(folder).records)
    metrics = summary["metrics"]
    return {"level": level, "requests": summary["requests"], "error_rate": summary["failure_ratio"],
            "output_tok_s": summary["throughput_output_tok_s"], "ttft_p50": metrics["ttft_ms"].get("p50"),
            "ttft_p99": metrics["ttft_ms"].get("p99"), "tpot_p50": metrics["tpot_ms"].get("p50"),
            "e2e_p50": metrics["e2e_ms"].get("p50"), "e2e_p99": metrics["e2e_ms"].get("p99")}


def sweep(host: str, levels: list[float], out: Path, requests: int, duration_s: float, rate_mode: bool,
          max_ttft_p99_ms: float | None, max_error_rate: float, min_gain: float, locust_args: list[str],
          calibration: dict | None = None, cap: int = 0, log=print) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    points, stopped, warnings = [], "all levels run", []
    for level in levels:
        folder = out / (f"rate-{level:g}" if rate_mode else f"users-{int(level):04d}")
        extra = list(locust_args)
        if rate_mode:  # users cap the streams in flight; the rate is the level
            extra += ["--arrival-rate", f"{level:g}"]
            extra += ["--arrival-duration", f"{duration_s:g}"] if duration_s else []
            users = cap or max(10, int(level * 10))
        else:
            users = int(level)
            extra += ["-t", f"{duration_s:g}s", "--stop-timeout", "0"] if duration_s else []
        if requests or not duration_s:
            total = requests or max(100, int(level * 20))
            extra += ["--total-requests", str(total)]
            if not rate_mode and total < 2 * users:
                # each user needs a request in flight at once (and a second round for a steady state)
                warning = (f"level {level:g}: {total} requests for {users} users: " +
                           (f"never more than {total} streams in flight" if total < users else
                            "each user sends fewer than 2 requests, so the level is only reached in a burst") +
                           f"; give --requests {20 * users} or more")
                warnings.append(warning)
                log(f"sweep: WARNING: {warning}")
        log(f"sweep: {'rate' if rate_mode else 'users'} {level:g} -> {folder}")
        result = _locust(host, folder, users, extra, timeout=max(600, (duration_s or 0) * 3))
        try:
            point = _point(folder, level)
        except RecordsError:
            log(f"sweep: level {level:g} produced no records: {result.stderr.strip()[-300:]}")
            stopped = f"level {level:g} failed"
            break
        points.append(point)
        log(f"sweep:   {point['output_tok_s']:,.0f} output tokens/s, TTFT p50 {point['ttft_p50'] or 0:.1f} ms "
            f"p99 {point['ttft_p99'] or 0:.1f} ms, errors {point['error_rate']:.1%}")
        if max_ttft_p99_ms and (point["ttft_p99"] or 0) > max_ttft_p99_ms:
            stopped = f"TTFT P99 {point['ttft_p99']:.0f} ms > {max_ttft_p99_ms:g} ms at {level:g}"
            break
        if point["error_rate"] > max_error_rate:
            stopped = f"error rate {point['error_rate']:.1%} > {max_error_rate:.1%} at {level:g}"
            break
        if len(points) > 1 and points[-2]["output_tok_s"] > 0:
            gain = point["output_tok_s"] / points[-2]["output_tok_s"] - 1
            if gain < min_gain:
                stopped = f"throughput rose {gain:+.1%} (< {min_gain:.0%}) from {points[-2]['level']:g} to {level:g}"
                break
    result = {"stopped": stopped, "points": points, "warnings": warnings, "calibration": calibration}
    folders = sorted(p for p in out.iterdir() if p.is_dir() and list(p.glob("requests-*.csv")))
    if len(folders) >= 2:
        curve = sweep_points(folders)
        if rate_mode:
            curve["concurrency"] = [p["level"] for p in points][: len(curve)]
        k = knee(curve, min_gain)
        curve.to_csv(out / "sweep.csv", index=False)
        plot_sweep(curve, out / "sweep.png", k)
        result["knee"] = None if k is None else curve.iloc[k].to_dict()
        result["saturated"] = k is not None
        result["verdict"] = verdict(curve, k, min_gain)
    (out / "sweep.json").write_text(json.dumps(result, indent=1, default=str))
    log(f"sweep: stopped: {stopped}; {result.get('verdict', 'knee: -')}; wrote {out}/sweep.json, sweep.csv, "
        "sweep.png")
    return result


def _errors(name: str, values) -> dict:
    p50, p99 = metrics.percentiles(values, (50, 99))
    return {f"{name}_err_ms_p50": None if p50 is None else round(p50, 3),
            f"{name}_err_ms_p99": None if p99 is None else round(p99, 3)}


def calibrate(levels: list[int], requests_per_user: int = 4, ttft_ms: float = 100.0, itl_ms: float = 20.0,
              tokens: int = 40, log=print) -> dict:
    """Timing error of this machine's client against the exact mock, per concurrency level."""
    rows = []
    with MockProcess(["--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms), "--jitter", "0",
                      "--max-queue", "1000000"]) as mock, tempfile.TemporaryDirectory() as tmp:
        for users in levels:
            folder = Path(tmp) / f"c{users}"
            # starts spread over ~2 s: a synchronized burst of thousands of requests is not a workload
            _locust(mock.url, folder, users, ["--total-requests", str(max(100, users * requests_per_user)),
                                              "--max-tokens", str(tokens), "--ignore-eos",
                                              "-r", str(max(1, users // 2))], timeout=900,
                    env_extra={"OPENAI_API_KEY": "mock-key"})
            records = load_results(folder).records
            # leave out the first round (users starting, connections opening): steady state is the question
            records = records.sort_values("t_start").iloc[len(records) // requests_per_user:]
            ok = metrics.succeeded(records)
            ttft_err = (ok["ttft_ms"] - ttft_ms).dropna().to_numpy()
            tpot_err = (ok["tpot_ms"] - itl_ms).dropna().to_numpy()
            meta = json.loads((folder / "run-local.json").read_text())
            row = {"streams": users, "requests": len(metrics.counted(records)), "failed": len(metrics.failed(records)),
                   **_errors("ttft", ttft_err), **_errors("tpot", tpot_err),
                   "client_cpu_pct": meta["client"].get("cpu_pct_mean"),
                   "loop_lag_ms_p99": meta["client"].get("loop_lag_ms_p99")}
            rows.append(row)
            log(f"calibrate: {users} streams: TTFT error p50 {row['ttft_err_ms_p50']} ms "
                f"p99 {row['ttft_err_ms_p99']} ms, TPOT error p99 {row['tpot_err_ms_p99']} ms, "
                f"client CPU {row['client_cpu_pct']}%")
    safe = [r["streams"] for r in rows if r["ttft_err_ms_p99"] is not None
            and r["ttft_err_ms_p99"] <= SAFE_TTFT_ERROR_MS and (r["client_cpu_pct"] or 0) < SAFE_CPU_PCT]
    result = {"configured": {"ttft_ms": ttft_ms, "itl_ms": itl_ms, "tokens": tokens}, "levels": rows,
              "safe_streams_per_worker": max(safe) if safe else None, "rule": SAFE_RULE}
    log(calibration_verdict(rows, result["safe_streams_per_worker"]))
    return result


def calibration_verdict(rows: list[dict], safe_streams: int | None) -> str:
    """The closing line of a calibration: how many streams one worker process can take here."""
    if safe_streams is not None:
        return f"calibrate: up to {safe_streams} streams per worker process keep {SAFE_RULE} on this machine"
    tried = ", ".join(str(r["streams"]) for r in rows) or "none"
    return (f"calibrate: no level tried (streams: {tried}) kept {SAFE_RULE} on this machine; "
            f"use fewer streams per worker process than the lowest tried")
