"""1 worker vs 2 workers against the mock in burst mode, and what the master costs.

For each K in --workers, runs the real mock (--itl-ms 0: tokens back to back), a headless
Locust master and K workers on 127.0.0.1 for --duration seconds, and prints JSON computed
from the run's records: output tokens/s and requests/s in the steady window, and the CPU of
the master, the workers and the mock (100 = one core).

  python bench/distributed.py --workers 1,2 --users 50 --duration 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.stats import load_records  # noqa: E402
from bench.common import cpu_seconds, free_port  # noqa: E402
from tokenstorm.mockproc import MockProcess  # noqa: E402

LOCUST = str(Path(sys.executable).parent / "locust")
LOCUSTFILE = str(ROOT / "locustfiles" / "chat_stream.py")






def run(workers: int, args, mock: MockProcess) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"dist-{workers}-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")} | {"OPENAI_API_KEY": "mock-key"}
    master = subprocess.Popen([LOCUST, "-f", LOCUSTFILE, "--master", "--headless", "--only-summary", "--host",
                               mock.url, "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                               "--expect-workers", str(workers), "-u", str(args.users), "-r", str(args.users),
                               "-t", f"{args.duration}s", "--stop-timeout", "0", "--max-tokens", "256",
                               "--ignore-eos", "--results-dir", str(folder)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    kids = [subprocess.Popen([LOCUST, "-f", LOCUSTFILE, "--worker", "--master-host", "127.0.0.1", "--master-port",
                              str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            for _ in range(workers)]
    pm, pw, pk = psutil.Process(master.pid), [psutil.Process(k.pid) for k in kids], psutil.Process(mock.proc.pid)
    time.sleep(args.warmup)
    c0 = (cpu_seconds([pm]), cpu_seconds(pw), cpu_seconds([pk]), time.monotonic())
    time.sleep(args.duration - args.warmup - 2)
    c1 = (cpu_seconds([pm]), cpu_seconds(pw), cpu_seconds([pk]), time.monotonic())
    master.wait(timeout=args.duration + 120)
    for k in kids:
        k.wait(timeout=60)
    window = c1[3] - c0[3]
    records = load_records(folder)
    start = records["t_start"].min() + args.warmup
    ok = records[(records["status"] == "ok") & (records["t_start"] >= start)]
    span = float((ok["t_start"] + ok["total_ms"] / 1000).max() - ok["t_start"].min())
    return {"workers": workers, "users": args.users, "requests": len(records),
            "output_tok_s": round(float(ok["output_tokens"].sum()) / span), "req_s": round(len(ok) / span, 1),
            "master_cpu_pct": round(100 * (c1[0] - c0[0]) / window, 1),
            "workers_cpu_pct": round(100 * (c1[1] - c0[1]) / window, 1),
            "mock_cpu_pct": round(100 * (c1[2] - c0[2]) / window, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--duration", type=int, default=20)
    p.add_argument("--warmup", type=float, default=5)
    args = p.parse_args()
    with MockProcess(["--ttft-ms", "0", "--itl-ms", "0", "--jitter", "0", "--max-queue", "100000"]) as mock:
        for k in (int(x) for x in args.workers.split(",")):
            print(json.dumps(run(k, args, mock)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
