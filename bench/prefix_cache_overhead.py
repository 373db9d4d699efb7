"""What the mock's prefix cache costs per request, in process and end to end.

In process: the admission work the cache adds to a chat request (its prompt's token ids, the
chained block hashes, the LRU lookup) against what the request costs without it (validation and
the prompt token count), for prompts of several lengths, the prompt text new (tokenized) or
seen before (token ids cached).

End to end: requests/s of a real mock (ttft 0, itl 0, 4 output tokens, non-streamed) answering
shared-prefix prompts from a few client threads, with the cache off and on.

  python bench/prefix_cache_overhead.py --tokens 1000,4000,16000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mock_server.prefix_cache import PrefixCache, block_hashes  # noqa: E402
from mock_server.schema import ChatRequest  # noqa: E402
from tokenstorm.client.datasets import Synthetic  # noqa: E402
from tokenstorm.mockproc import MockProcess  # noqa: E402


def _bodies(tokens: int, n: int, seed: int) -> list[dict]:
    source = Synthetic(tokens, 0, 4, 0, seed=seed, prefix_tokens=tokens * 3 // 4, prefix_pool=4)
    rows = [source.next() for _ in range(n)]
    return [{"model": "mock-llm", "max_tokens": 4, "messages": [{"role": "system", "content": r["prefix"]},
                                                                 {"role": "user", "content": r["suffix"]}]}
            for r in rows]


def in_process(tokens: int, n: int) -> dict:
    """Microseconds per request of the admission work, cache off and on, as the mock does it (on: the
    token ids first, which leave prompt_tokens() a cache hit). New texts (another seed) for each."""
    cache = PrefixCache(1_000_000, 16)
    out: dict = {"prompt_tokens": tokens}
    for label, seed in (("off", 1), ("on", 2)):
        requests = [ChatRequest.model_validate(b) for b in _bodies(tokens, n, seed)]
        t0 = time.perf_counter()
        for r in requests:
            if label == "on":
                cache.lookup(block_hashes(r.prompt_ids(), 16))
            r.prompt_tokens()
        out[f"cache_{label}_us"] = round((time.perf_counter() - t0) / n * 1e6, 1)
    return out


def end_to_end(tokens: int, n: int, threads: int, cache_tokens: int) -> float:
    bodies = [json.dumps(b).encode() for b in _bodies(tokens, n, 2)]
    with MockProcess(["--ttft-ms", "0", "--itl-ms", "0", "--output-tokens", "4", "--jitter", "0",
                      "--prefix-cache-tokens", str(cache_tokens)]) as mock:
        def send(body: bytes) -> None:
            req = urllib.request.Request(mock.base_url + "/chat/completions", body,
                                         {"Authorization": "Bearer mock-key", "Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=30).read()

        for body in bodies[:20]:
            send(body)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(send, bodies))
        return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", default="1000,4000,16000", help="comma-separated prompt lengths")
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--threads", type=int, default=4)
    args = p.parse_args()
    for tokens in (int(t) for t in args.tokens.split(",")):
        row = in_process(tokens, min(args.requests, 200))
        off = end_to_end(tokens, args.requests, args.threads, 0)
        on = end_to_end(tokens, args.requests, args.threads, 1_000_000)
        row.update(req_s_cache_off=round(off, 1), req_s_cache_on=round(on, 1))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
