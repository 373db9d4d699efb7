"""How many paced chunks per second the bundled mock delivers, and how late.

Starts a real mock (`python -m mock_server`, jitter 0), opens K streams that each ask for
endless tokens (ignore_eos) at a fixed ITL, keeps them open for the measured window, and
prints one JSON object per configuration:

  chunks_per_s      chunks the mock wrote per second in the window (its own counter)
  target_per_s      K / ITL: what perfect pacing would deliver
  lag_p50/p99_ms    how late chunks left against their absolute deadlines (mock histogram,
                    interpolated inside its buckets); lag_max_ms is the largest since start
  server_cpu_pct    CPU of the mock process(es) in the window (100 = one core)
  client_cpu_pct    CPU of the reading clients (separate processes, raw sockets)

Stream starts are spread over one ITL so deadlines do not all fall on the same instant (a
synchronized burst of K chunks measures the burst, not the pacing).

  python bench/mock_capacity.py --streams 500,1000,2000 --itl-ms 40 --duration 15
  python bench/mock_capacity.py --streams 2000 --itl-ms 40 --workers 2 --clients 2
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_seconds  # noqa: E402
from tokenstorm.mockproc import MockProcess  # noqa: E402


def client_main(port: int, streams: int, itl_ms: float, seconds: float) -> None:
    """One client process: `streams` raw-socket streams, counts SSE events, prints JSON."""
    import gevent
    from gevent import socket

    body = json.dumps({"model": "mock-llm", "messages": [{"role": "user", "content": "go"}], "stream": True,
                       "max_tokens": 1_000_000, "ignore_eos": True}).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer mock-key\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    counts = [0] * streams
    errors: list[str] = []
    stop_at = time.monotonic() + seconds

    def one(i: int) -> None:
        gevent.sleep(i * itl_ms / 1000 / streams)  # spread deadlines over one ITL
        try:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(request)
            while time.monotonic() < stop_at:
                data = sock.recv(65536)
                if not data:
                    errors.append("closed early")
                    break
                counts[i] += data.count(b"data: ")
            sock.close()
        except OSError as exc:
            errors.append(type(exc).__name__)

    gevent.joinall([gevent.spawn(one, i) for i in range(streams)])
    print(json.dumps({"events": sum(counts), "errors": len(errors), "first_error": errors[:1]}), flush=True)


def scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("mock_chunks_total ", "mock_token_lag", "mock_client_disconnects_total ")):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def lag_quantile(before: dict, after: dict, q: float) -> float | None:
    buckets = []
    for name, value in after.items():
        m = re.fullmatch(r'mock_token_lag_seconds_bucket\{le="([^"]+)"\}', name)
        if m:
            buckets.append((float(m.group(1)), value - before.get(name, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    target, prev_bound, prev_count = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= target:
            if bound == float("inf"):
                return prev_bound
            return prev_bound + (bound - prev_bound) * (target - prev_count) / max(count - prev_count, 1e-9)
        prev_bound, prev_count = bound, count
    return prev_bound




def measure(streams: int, itl_ms: float, duration: float, workers: int, clients: int, warmup: float) -> dict:
    with MockProcess(["--itl-ms", str(itl_ms), "--ttft-ms", "0", "--jitter", "0", "--workers", str(workers),
                      "--max-queue", "100000"]) as mock:
        server = psutil.Process(mock.proc.pid)
        server_procs = [server, *server.children()] if workers > 1 else [server]
        per_client = [streams // clients + (1 if i < streams % clients else 0) for i in range(clients)]
        seconds = warmup + duration + 2
        kids = [subprocess.Popen([sys.executable, __file__, "--client", str(mock.port), str(n), str(itl_ms),
                                  str(seconds)], stdout=subprocess.PIPE, text=True) for n in per_client]
        client_procs = [psutil.Process(k.pid) for k in kids]
        time.sleep(warmup)
        before, cpu_s0, cpu_c0, t0 = scrape(mock.url), cpu_seconds(server_procs), cpu_seconds(client_procs), \
            time.monotonic()
        time.sleep(duration)
        after, cpu_s1, cpu_c1, t1 = scrape(mock.url), cpu_seconds(server_procs), cpu_seconds(client_procs), \
            time.monotonic()
        reports = [json.loads(k.communicate(timeout=seconds + 60)[0] or '{"events": 0, "errors": -1}') for k in kids]
    window = t1 - t0
    chunks = after.get("mock_chunks_total", 0) - before.get("mock_chunks_total", 0)
    p50, p99 = lag_quantile(before, after, 0.5), lag_quantile(before, after, 0.99)
    return {
        "streams": streams, "itl_ms": itl_ms, "workers": workers, "clients": clients,
        "window_s": round(window, 2),
        "target_per_s": round(streams / (itl_ms / 1000)),
        "chunks_per_s": round(chunks / window),
        "client_events_total": sum(r["events"] for r in reports),
        "client_errors": sum(r["errors"] for r in reports),
        "lag_p50_ms": None if p50 is None else round(p50 * 1000, 3),
        "lag_p99_ms": None if p99 is None else round(p99 * 1000, 3),
        "lag_max_ms": round(after.get("mock_token_lag_max_seconds", 0) * 1000, 3),
        "server_cpu_pct": round(100 * (cpu_s1 - cpu_s0) / window, 1),
        "client_cpu_pct": round(100 * (cpu_c1 - cpu_c0) / window, 1),
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        port, streams, itl_ms, seconds = sys.argv[2:6]
        client_main(int(port), int(streams), float(itl_ms), float(seconds))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", default="500,1000,2000", help="comma-separated stream counts")
    p.add_argument("--itl-ms", type=float, default=40.0)
    p.add_argument("--duration", type=float, default=15.0, help="measured window in seconds")
    p.add_argument("--warmup", type=float, default=4.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--clients", type=int, default=1, help="client processes reading the streams")
    p.add_argument("--repeat", type=int, default=1, help="runs per configuration; the median of each field "
                   "is printed (this machine is shared and noisy)")
    args = p.parse_args()
    for streams in (int(s) for s in args.streams.split(",")):
        runs = [measure(streams, args.itl_ms, args.duration, args.workers, args.clients, args.warmup)
                for _ in range(args.repeat)]
        print(json.dumps(median_of(runs) | {"runs": len(runs)}), flush=True)
    return 0


def median_of(runs: list[dict]) -> dict:
    out = {}
    for key, value in runs[0].items():
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = statistics.median(values) if values and isinstance(value, (int, float)) else value
    return out


if __name__ == "__main__":
    sys.exit(main())
