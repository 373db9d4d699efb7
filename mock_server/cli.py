"""`python -m mock_server`: flags override the YAML config (a file or a profile name)."""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile

from tokenstorm.core import tokenizer

from .config import ConfigError, apply_overrides, load_config

# flag dest -> dotted config field
OVERRIDES = {
    "host": "server.host", "port": "server.port", "workers": "server.workers",
    "ttft_ms": "latency.ttft_ms", "itl_ms": "latency.itl_ms", "jitter": "latency.jitter",
    "per_input_token_ms": "latency.per_input_token_ms", "load_slope": "latency.load_slope",
    "max_num_seqs": "capacity.max_num_seqs", "max_queue": "capacity.max_queue",
    "output_tokens": "output.mean_tokens", "language": "output.language", "tokenizer": "output.tokenizer",
    "reasoning_tokens": "output.reasoning_tokens", "seed": "seed", "log_requests": "server.log_requests",
    "idle_timeout_s": "limits.idle_timeout_s", "header_timeout_s": "limits.header_timeout_s",
    "write_timeout_s": "limits.write_timeout_s",
    "body_timeout_s": "limits.body_timeout_s", "max_connections": "limits.max_connections",
    "role_chunk": "output.role_chunk",
    "prefix_cache_tokens": "prefix_cache.capacity_tokens", "prefix_cache_block_size": "prefix_cache.block_size",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mock_server",
        description="tokenstorm's OpenAI-compatible streaming mock (gevent). Flags override --config.")
    p.add_argument("--config", metavar="FILE", help="YAML config file, or a profile name from configs/mock/ "
                   "(deterministic, realistic-8b, chaos)")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8082; 0 picks a free one)")
    p.add_argument("--ttft-ms", type=float, help="fixed part of TTFT in ms (default 200)")
    p.add_argument("--itl-ms", type=float, help="time between output tokens in ms; 0 = back to back (default 20)")
    p.add_argument("--jitter", type=float, metavar="CV", help="lognormal jitter coefficient of variation; 0 = exact")
    p.add_argument("--seed", type=int, help="seed of the output text, jitter and random faults")
    p.add_argument("--api-key", action="append", metavar="KEY", dest="api_keys",
                   help="accepted bearer key (repeat for several; default mock-key)")
    p.add_argument("--no-auth", action="store_true", help="accept requests without a valid key")
    p.add_argument("--max-num-seqs", type=int, help="running slots, split over workers; 0 = unlimited")
    p.add_argument("--max-queue", type=int, help="requests that may wait for a slot before 429")
    p.add_argument("--workers", type=int, help="processes serving the same port (SO_REUSEPORT)")
    p.add_argument("--per-input-token-ms", type=float, help="prefill time per prompt token in ms")
    p.add_argument("--load-slope", type=float, help="TTFT/ITL grow by this fraction per extra running stream")
    p.add_argument("--output-tokens", type=int, help="natural output length in tokens (default 128)")
    p.add_argument("--reasoning-tokens", type=int, help="reasoning_content tokens before every answer")
    p.add_argument("--language", choices=("en", "zh"), help="language of the generated text")
    p.add_argument("--tokenizer", metavar="PATH", help="count and generate tokens with this local Hugging Face "
                   "tokenizer.json (the model's), not tiktoken cl100k_base; never downloaded")
    p.add_argument("--accept-any-model", action="store_true", help="serve any model name instead of 404")
    p.add_argument("--log-requests", metavar="FILE", help="append every generation request body to FILE (JSON lines)")
    p.add_argument("--idle-timeout-s", type=float, help="close a keep-alive connection unused this long (default 60)")
    p.add_argument("--header-timeout-s", type=float, help="408 when a request head takes longer (default 10)")
    p.add_argument("--body-timeout-s", type=float, help="408 when a request body takes longer (default 60)")
    p.add_argument("--write-timeout-s", type=float, help="cut off a client that reads none of its answer this long, "
                   "freeing its slot (default 60)")
    p.add_argument("--max-connections", type=int, help="open connections kept; past it the longest idle are "
                   "closed (default: ulimit -n less a reserve)")
    p.add_argument("--role-chunk", choices=("with-first-token", "with-headers"),
                   help="the role-only first chat chunk goes with the first token (default, as vLLM) or the headers")
    p.add_argument("--prefix-cache-tokens", type=int, metavar="N",
                   help="prefix KV cache of N prompt tokens (LRU): cached prompt blocks cost no prefill; 0 = off")
    p.add_argument("--prefix-cache-block-size", type=int, metavar="TOKENS",
                   help="tokens per prefix-cache block (default 16, as vLLM)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        overrides = {field: getattr(args, dest) for dest, field in OVERRIDES.items()}
        overrides["auth.api_keys"] = args.api_keys
        if args.no_auth:
            overrides["auth.enabled"] = False
        if args.accept_any_model:
            overrides["accept_any_model"] = True
        config = apply_overrides(config, overrides)
        if config.output.tokenizer:
            tokenizer.use(config.output.tokenizer)  # checked here, before listening (app.py makes it active)
            from .textgen import TextSource

            TextSource(config.output.language, config.seed)  # its output must stay exact under this tokenizer
    except (ConfigError, tokenizer.TokenizerError) as exc:
        print(f"mock_server: {exc}", file=sys.stderr)
        return 2

    workers = config.server.workers
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Must be set before prometheus_client is imported: values then live in shared files.
        shared = tempfile.mkdtemp(prefix="tokenstorm-mock-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared
        parent = os.getpid()
        atexit.register(lambda: os.getpid() == parent and shutil.rmtree(shared, ignore_errors=True))

    from .server import listen_socket, serve, serve_workers

    host, port = config.server.host, config.server.port
    ready = (f"mock_server: listening on http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''}, "
             f"ttft {config.latency.ttft_ms:g} ms, itl {config.latency.itl_ms:g} ms, "
             f"jitter {config.latency.jitter:g}, max_num_seqs {config.capacity.max_num_seqs or 'unlimited'}, "
             f"auth {'on' if config.auth.enabled else 'off'})")
    try:
        if workers > 1:
            return serve_workers(config, ready)
        sock = listen_socket(host, port, reuse_port=False)
    except OSError as exc:
        print(f"mock_server: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    serve(config, sock, ready_message=ready.replace(f":{port} ", f":{sock.getsockname()[1]} "))
    return 0
