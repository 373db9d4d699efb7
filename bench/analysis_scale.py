"""The analysis report on 1,000,000 records: seconds and peak memory (JSON out).

Writes N synthetic records (realistic value distributions, 4 workers, 2 upstreams, 2% errors)
into a temporary results folder, then times `python -m analysis report` on it in a child
process and reads the child's peak RSS.

  python bench/analysis_scale.py --records 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tokenstorm.core.records import RECORD_FIELDS  # noqa: E402


def synthetic(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ttft = rng.lognormal(np.log(150), 0.4, n)
    tokens = rng.integers(50, 400, n)
    tpot = rng.lognormal(np.log(15), 0.2, n)
    e2e = ttft + tpot * (tokens - 1)
    failed = rng.random(n) < 0.02
    frame = pd.DataFrame({
        "request_id": [f"w{i % 4}-{i}" for i in range(n)], "worker_id": [f"w{i}" for i in rng.integers(0, 4, n)],
        "user_id": rng.integers(0, 1000, n), "scenario": "default",
        "upstream": np.where(rng.random(n) < 0.5, "http://a:8082", "http://b:8082"), "model": "m",
        "t_start": 1.7e9 + np.sort(rng.random(n)) * 3600, "status": np.where(failed, "error", "ok"),
        "error_type": np.where(failed, "http_status", ""), "error": np.where(failed, "HTTP 503", ""),
        "http_status": np.where(failed, 503, 200), "connect_ms": np.nan, "ttfb_ms": ttft * 0.1, "ttft_ms": ttft,
        "ttfvt_ms": ttft, "e2e_ms": e2e, "total_ms": e2e + 0.5, "tpot_ms": tpot, "itl_mean_ms": tpot,
        "itl_max_ms": tpot * 3, "input_tokens": 200, "output_tokens": tokens, "output_tokens_source": "usage",
        "output_tokens_usage": tokens, "output_tokens_tokenizer": tokens, "reasoning_tokens": np.nan,
        "chunks": tokens, "finish_reason": "stop", "tokens_per_s": tokens / (e2e / 1000)})
    for column in ("ttft_ms", "ttfvt_ms", "e2e_ms", "total_ms", "tpot_ms", "itl_mean_ms", "itl_max_ms", "tokens_per_s"):
        frame.loc[failed, column] = np.nan
    return frame[RECORD_FIELDS]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=1_000_000)
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="analysis-scale-"))
    frame = synthetic(args.records)
    for worker, part in frame.groupby("worker_id"):
        part.to_csv(folder / f"requests-{worker}.csv", index=False, float_format="%.3f")
    size = sum(f.stat().st_size for f in folder.glob("requests-*.csv"))
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "analysis", "report", str(folder)], capture_output=True,
                            text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"records": args.records, "csv_mb": round(size / 1e6, 1), "exit_code": result.returncode,
                      "seconds": round(seconds, 2), "peak_rss_mb": round(peak_kib / 1024, 1),
                      "error": result.stderr.strip()[-300:] or None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
