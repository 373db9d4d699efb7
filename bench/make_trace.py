"""Write a small synthetic Mooncake-format trace (data/traces/mooncake-sample.jsonl), seeded.

Shape: ~60 s of bursty arrivals (quiet gaps with bursts of gamma-distributed gaps), requests
drawn from a few "documents" (shared system prompt + document prefix blocks) so that many
requests share leading 512-token blocks, plus unique question blocks; output lengths lognormal.
Not a copy of a real trace.

    python bench/make_trace.py [--seed 7] [--count 200] [--out data/traces/mooncake-sample.jsonl]
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path


def make(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    next_id = 0

    def new_ids(n: int) -> list[int]:
        nonlocal next_id
        ids = list(range(next_id, next_id + n))
        next_id += n
        return ids

    system = new_ids(2)  # a system prompt every request starts with
    documents = [new_ids(rng.randint(1, 6)) for _ in range(8)]
    entries, t = [], 0.0
    while len(entries) < count:
        burst = rng.random() < 0.15  # a burst: short gaps for a while
        for _ in range(rng.randint(5, 20) if burst else 1):
            t += rng.gammavariate(0.5, 0.06) if burst else rng.expovariate(1 / 0.9)
            doc = documents[min(int(rng.paretovariate(1.2)) - 1, len(documents) - 1)]
            own = rng.randint(0, 2)  # the request's own blocks (its question)
            blocks = system + doc + new_ids(own)
            tail = rng.randint(1, 512)
            entries.append({"timestamp": round(t * 1000), "input_length": 512 * (len(blocks) - 1) + tail,
                            "output_length": max(1, round(rng.lognormvariate(math.log(120), 0.6))),
                            "hash_ids": blocks})
            if len(entries) == count:
                break
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("data/traces/mooncake-sample.jsonl"))
    args = parser.parse_args()
    lines = [json.dumps(e, separators=(", ", ": ")) for e in make(args.count, args.seed)]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
