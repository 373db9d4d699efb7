"""How much one Locust worker process (one core) can ingest, and how true its timings stay.

Runs the real mock and one real `locust --headless` process (locustfiles/chat_stream.py) per
concurrency level, and prints one JSON object per level, computed from the run's records:

  streams                 concurrent users (= streams)
  output_tok_s            output tokens/s ingested with full accounting (ok requests / window)
  req_s                   requests/s
  client_cpu_pct          mean CPU of the Locust process (100 = one core), from its self-check
  ttft_err_ms_p50/p99     measured TTFT minus the mock's configured TTFT
  tpot_err_ms_p50/p99     measured TPOT minus the configured ITL
  mock_lag_ms_p99         the mock's own schedule lag (part of the error above is the mock's)
  failures, cancelled     failed requests; streams cut by the end of the window

Two modes:
  --mode capacity  the mock writes tokens back to back (--itl-ms 0): the mock costs little and
                   the client is what is measured (tokens/s, CPU)
  --mode accuracy  paced streams (default TTFT 100 ms, ITL 50 ms): the timing error

  python bench/loadgen_capacity.py --mode capacity --users 25,50,100,200
  python bench/loadgen_capacity.py --mode accuracy --users 100,500,1000,2000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.stats import load_records  # noqa: E402
from tokenstorm.mockproc import MockProcess  # noqa: E402


def mock_lag_p99(url: str, before: dict) -> tuple[float | None, dict]:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    buckets = {float(m.group(1)): float(m.group(2)) for m in
               re.finditer(r'^mock_token_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M)}
    delta = sorted((b, c - before.get(b, 0.0)) for b, c in buckets.items())
    total = delta[-1][1] if delta else 0
    if not before or not total:
        return None, buckets
    prev_b, prev_c = 0.0, 0.0
    for b, c in delta:
        if c >= 0.99 * total:
            if b == float("inf"):
                return prev_b * 1000, buckets
            return (prev_b + (b - prev_b) * (0.99 * total - prev_c) / max(c - prev_c, 1e-9)) * 1000, buckets
        prev_b, prev_c = b, c
    return prev_b * 1000, buckets


def pct(values, q: float) -> float | None:
    values = [v for v in values if v == v]
    return round(float(np.percentile(values, q * 100)), 3) if values else None


def run_level(users: int, args, mock: MockProcess) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"loadgen-{users}-"))
    _, lag_before = mock_lag_p99(mock.url, {})
    cmd = [str(Path(sys.executable).parent / "locust"), "-f", str(ROOT / "locustfiles" / "chat_stream.py"),
           "--headless", "--only-summary", "--host", mock.url, "-u", str(users), "-r", str(args.spawn_rate or users),
           "-t", f"{args.duration}s", "--max-tokens", str(args.max_tokens), "--ignore-eos",
           "--results-dir", str(folder), "--stop-timeout", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")} | {"OPENAI_API_KEY": "mock-key"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.duration + 120)
    lag, _ = mock_lag_p99(mock.url, lag_before)
    records = load_records(folder)
    meta = json.loads((folder / "run-local.json").read_text())
    # skip the ramp: requests sent in the first `warmup` seconds
    start = records["t_start"].min()
    steady = records[(records["t_start"] >= start + args.warmup) & (records["error_type"] != "cancelled")]
    ok = steady[steady["status"] == "ok"]
    ends = ok["t_start"] + ok["total_ms"] / 1000
    window = float(ends.max() - ok["t_start"].min()) if len(ok) else 0.0
    cpu = [float(line.split(",")[1]) for line in (folder / "monitor-local.csv").read_text().splitlines()[1:]]
    steady_cpu = cpu[int(args.warmup):-1] or cpu
    return {
        "mode": args.mode, "streams": users, "exit_code": proc.returncode,
        "requests": len(steady), "failures": int((steady["status"] != "ok").sum()),
        "cancelled": int((records["error_type"] == "cancelled").sum()),
        "output_tok_s": round(float(ok["output_tokens"].sum()) / window) if window else 0,
        "req_s": round(len(ok) / window, 1) if window else 0,
        "client_cpu_pct": round(statistics.fmean(steady_cpu), 1) if steady_cpu else None,
        "client_loop_lag_ms_p99": meta["client"].get("loop_lag_ms_p99"),
        "ttft_err_ms_p50": pct(ok["ttft_ms"] - args.ttft_ms, 0.50),
        "ttft_err_ms_p99": pct(ok["ttft_ms"] - args.ttft_ms, 0.99),
        "tpot_err_ms_p50": pct(ok["tpot_ms"] - args.itl_ms, 0.50),
        "tpot_err_ms_p99": pct(ok["tpot_ms"] - args.itl_ms, 0.99),
        "mock_lag_ms_p99": None if lag is None else round(lag, 3),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("capacity", "accuracy"), default="capacity")
    p.add_argument("--users", default="", help="comma-separated concurrency levels")
    p.add_argument("--duration", type=int, default=20, help="seconds per level")
    p.add_argument("--warmup", type=float, default=5, help="seconds of each level left out of the figures")
    p.add_argument("--spawn-rate", type=float, default=0, help="users started per second (default: all at once)")
    p.add_argument("--ttft-ms", type=float, default=None)
    p.add_argument("--itl-ms", type=float, default=None)
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--mock-workers", type=int, default=1)
    args = p.parse_args()
    capacity = args.mode == "capacity"
    args.ttft_ms = args.ttft_ms if args.ttft_ms is not None else (0.0 if capacity else 100.0)
    args.itl_ms = args.itl_ms if args.itl_ms is not None else (0.0 if capacity else 50.0)
    args.max_tokens = args.max_tokens or (512 if capacity else 100)
    levels = [int(u) for u in (args.users or ("25,50,100,200" if capacity else "100,500,1000,2000")).split(",")]
    mock_args = ["--ttft-ms", str(args.ttft_ms), "--itl-ms", str(args.itl_ms), "--jitter", "0",
                 "--workers", str(args.mock_workers), "--max-queue", "100000"]
    with MockProcess(mock_args) as mock:
        for users in levels:
            print(json.dumps(run_level(users, args, mock)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
