"""tokenstorm's SSE decoder against sseclient-py on the same bytes (why the hot path has its own).

Feeds a realistic OpenAI chat stream (20,000 content chunks) to both decoders, once as one
read per event (a client that keeps up) and once as 64 KiB reads (a client that lags), and
prints JSON: events per second and microseconds per event for each, and the ratio.

  python bench/sse_decoders.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sseclient

from tokenstorm.core.sse import SSEDecoder

N = 20_000


def stream_events() -> list[bytes]:
    head = '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
    return [f'data: {head}"delta":{{"content":" token{i}"}},"finish_reason":null}}]}}\n\n'.encode()
            for i in range(N)] + [b"data: [DONE]\n\n"]


def ours(reads: list[bytes]) -> int:
    decoder, n = SSEDecoder(), 0
    for read in reads:
        n += len(decoder.feed(read))
    return n


def theirs(reads: list[bytes]) -> int:
    return sum(1 for _ in sseclient.SSEClient(iter(reads)).events())


def best_of(fn, reads, repeat=5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        count = fn(reads)
        times.append(time.perf_counter() - t)
        assert count == N + 1, count
    return statistics.median(times)


def main() -> int:
    events = stream_events()
    blob = b"".join(events)
    for name, reads in (("one read per event", events),
                        ("64 KiB reads", [blob[i:i + 65536] for i in range(0, len(blob), 65536)])):
        t_ours, t_theirs = best_of(ours, reads), best_of(theirs, reads)
        print(json.dumps({"reads": name, "events": N + 1,
                          "tokenstorm_us_per_event": round(t_ours / (N + 1) * 1e6, 3),
                          "sseclient_us_per_event": round(t_theirs / (N + 1) * 1e6, 3),
                          "tokenstorm_events_per_s": round((N + 1) / t_ours),
                          "sseclient_events_per_s": round((N + 1) / t_theirs),
                          "speedup": round(t_theirs / t_ours, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
