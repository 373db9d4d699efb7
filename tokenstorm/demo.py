"""`make demo`: start the bundled mock, stream one chat completion through it, print its timings."""

from __future__ import annotations

import http.client
import json
import sys
import time

from tokenstorm.mockproc import MockProcess
from tokenstorm.tokenizer import count_tokens


def stream_once(port: int) -> dict:
    body = json.dumps({"model": "mock-llm", "stream": True, "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": "Say something about load testing."}]})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    sent = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Authorization": "Bearer mock-key",
                                                        "Content-Type": "application/json"})
    response = conn.getresponse()
    ttfb = time.perf_counter() - sent
    ttft = last = None
    text, usage = [], None
    for raw in response:  # one line per read: http.client hands lines over as they arrive
        line = raw.strip()
        if not line.startswith(b"data:") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[5:])
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices", []):
            content = choice["delta"].get("content")
            if content:
                now = time.perf_counter()
                ttft = ttft if ttft is not None else now - sent
                last = now
                text.append(content)
    conn.close()
    return {"ttfb_ms": ttfb * 1000, "ttft_ms": ttft * 1000, "e2e_ms": (last - sent) * 1000,
            "text": "".join(text), "usage": usage}


def main() -> int:
    print("Starting the bundled mock (ttft 200 ms, itl 20 ms, jitter 0)...", flush=True)
    with MockProcess(["--ttft-ms", "200", "--itl-ms", "20", "--jitter", "0", "--output-tokens", "32"]) as mock:
        result = stream_once(mock.port)
    tokens = result["usage"]["completion_tokens"]
    print(f"\n{result['text']}\n")
    print(f"TTFB  {result['ttfb_ms']:8.1f} ms   (response headers)")
    print(f"TTFT  {result['ttft_ms']:8.1f} ms   (first content token; configured 200)")
    print(f"E2E   {result['e2e_ms']:8.1f} ms   (last token)")
    print(f"TPOT  {(result['e2e_ms'] - result['ttft_ms']) / (tokens - 1):8.2f} ms   (configured 20)")
    print(f"tokens {tokens} (usage) / {count_tokens(result['text'])} (tiktoken cl100k_base)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
