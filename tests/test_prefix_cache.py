"""Prefix caching end to end: the mock's vLLM-style prefix KV cache (usage, TTFT, /metrics, LRU), shared-prefix
scenarios, the cached_tokens record column and the report's hit rate."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys

import anthropic
import openai
import pytest
from locust_procs import run
from mock_metrics import mock_metrics

from analysis.stats import load_records
from mock_server.prefix_cache import PrefixCache, block_hashes
from mock_server.prompts import chat_prompt, chat_prompt_ids
from tokenstorm.client.datasets import Synthetic
from tokenstorm.client.stream import StreamAccount
from tokenstorm.core.formats import AnthropicMessages, OpenAIChat, OpenAIResponses
from tokenstorm.core.tokenizer import count_tokens
from tokenstorm.mockproc import ROOT

BLOCK = 16
SYSTEM = " ".join(f"rule {i}: answer briefly and cite the source." for i in range(60))  # ~600 tokens


def _shared_tokens(system: str) -> int:
    """Tokens two chat prompts with this system message and different user messages share: the system
    message with its framing (3 + role), then the user message's framing and role."""
    return 3 + count_tokens("system") + count_tokens(system) + 3 + count_tokens("user")


def _expected_hit(shared: int) -> int:
    return shared // BLOCK * BLOCK


@pytest.fixture(scope="module")
def cache_mock():
    from tokenstorm.mockproc import MockProcess

    proc = MockProcess(["--ttft-ms", "5", "--itl-ms", "1", "--output-tokens", "6", "--jitter", "0",
                        "--prefix-cache-tokens", "200000"])
    yield proc
    proc.stop()


# -- the mock's usage, read by the official SDKs -------------------------------------------------
def test_openai_sdk_reads_cached_tokens_streamed_and_not(cache_mock):
    client = openai.OpenAI(base_url=cache_mock.base_url, api_key="mock-key", max_retries=0, timeout=30)
    system = "sdk " + SYSTEM

    def ask(question: str, stream: bool):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        if stream:
            chunks = list(client.chat.completions.create(model="mock-llm", messages=messages, stream=True,
                                                         stream_options={"include_usage": True}))
            return chunks[-1].usage
        return client.chat.completions.create(model="mock-llm", messages=messages).usage

    first = ask("What is TTFT?", stream=True)
    assert first.prompt_tokens_details.cached_tokens == 0
    assert first.prompt_tokens == chat_prompt([{"role": "system", "content": system},
                                               {"role": "user", "content": "What is TTFT?"}])
    expected = _expected_hit(_shared_tokens(system))
    assert expected >= 600
    for question, stream in (("Tell me more.", True), ("Why is that?", False)):  # differ from their first token
        usage = ask(question, stream)
        assert usage.prompt_tokens_details.cached_tokens == expected
    again = ask("What is TTFT?", stream=False)  # the same prompt: every full block but the last token's
    assert again.prompt_tokens_details.cached_tokens == (again.prompt_tokens - 1) // BLOCK * BLOCK
    # The Responses API reports it as input_tokens_details.cached_tokens
    response = client.responses.create(model="mock-llm", instructions=system, input="What is TTFT?")
    assert response.usage.input_tokens_details.cached_tokens == (response.usage.input_tokens - 1) // BLOCK * BLOCK


def test_anthropic_sdk_reads_cache_read_input_tokens(cache_mock):
    client = anthropic.Anthropic(base_url=cache_mock.url, api_key="mock-key", max_retries=0, timeout=30)
    system = "anthropic " + SYSTEM
    prompt = client.messages.count_tokens(model="mock-llm", system=system,
                                          messages=[{"role": "user", "content": "First?"}]).input_tokens
    first = client.messages.create(model="mock-llm", max_tokens=8, system=system,
                                   messages=[{"role": "user", "content": "First?"}]).usage
    assert (first.input_tokens, first.cache_read_input_tokens, first.cache_creation_input_tokens) == (prompt, 0, 0)
    expected = _expected_hit(_shared_tokens(system))
    with client.messages.stream(model="mock-llm", max_tokens=8, system=system,
                                messages=[{"role": "user", "content": "Second?"}]) as stream:
        final = stream.get_final_message().usage
    assert final.cache_read_input_tokens == expected and final.cache_creation_input_tokens == 0
    second = client.messages.count_tokens(model="mock-llm", system=system,
                                          messages=[{"role": "user", "content": "Second?"}]).input_tokens
    assert final.input_tokens + final.cache_read_input_tokens == second  # input_tokens: the uncached rest


def test_cache_off_by_default_keeps_usage_and_metrics_unchanged(shared_mock):
    client = openai.OpenAI(base_url=shared_mock.base_url, api_key="mock-key", max_retries=0, timeout=30)
    for _ in range(2):
        usage = client.chat.completions.create(model="mock-llm", messages=[{"role": "system", "content": SYSTEM},
                                                                           {"role": "user", "content": "Hi"}]).usage
        assert usage.prompt_tokens_details is None
    assert "vllm:prefix_cache" not in mock_metrics(shared_mock)


# -- the cache model ---------------------------------------------------------------------------
def test_only_a_shared_prefix_hits():
    """Chained identities: the same block after another prefix is another block."""
    cache = PrefixCache(10_000, BLOCK)
    a = chat_prompt_ids([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "one"}])
    assert len(a) // 4 == chat_prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "one"}])
    assert cache.lookup(block_hashes(a, BLOCK)) == 0
    assert cache.lookup(block_hashes(a, BLOCK)) == (len(a) // 4 - 1) // BLOCK * BLOCK
    shifted = chat_prompt_ids([{"role": "system", "content": "x" + SYSTEM}, {"role": "user", "content": "one"}])
    assert cache.lookup(block_hashes(shifted, BLOCK)) == 0  # a different first block: nothing after it hits
    bounded = PrefixCache(10 * BLOCK, BLOCK)
    bounded.lookup(block_hashes(a, BLOCK))
    assert len(bounded) == 10  # never more block identities than capacity_tokens / block_size


def test_lru_eviction_with_a_capacity_smaller_than_the_pool(start_mock):
    """8 prefixes of ~400 tokens drawn at random: a cache that holds them all hits on almost every repeat;
    one that holds two prefixes' worth evicts most of them before they come back."""
    source = Synthetic(450, 0, 4, 0, seed=3, prefix_tokens=400, prefix_pool=8)
    rows = [source.next() for _ in range(80)]

    def hit_rate(capacity: int) -> float:
        mock = start_mock("--ttft-ms", "0", "--itl-ms", "0", "--output-tokens", "2", "--jitter", "0",
                          "--prefix-cache-tokens", str(capacity))
        client = openai.OpenAI(base_url=mock.base_url, api_key="mock-key", max_retries=0, timeout=30)
        cached = prompt = 0
        for row in rows:
            usage = client.chat.completions.create(model="mock-llm", max_tokens=2,
                                                   messages=[{"role": "user", "content": row["prompt"]}]).usage
            cached += usage.prompt_tokens_details.cached_tokens
            prompt += usage.prompt_tokens
        mock.stop()
        return cached / prompt

    large, small = hit_rate(100_000), hit_rate(2 * 460)
    assert large > 0.75  # 72 of 80 requests repeat a prefix of 400 of ~456 tokens
    assert small < large / 2


def test_a_refused_request_leaves_the_cache_as_it_was(start_mock):
    """A 429 (queue full) computed no prefill: its prompt must not make the next one a hit."""
    mock = start_mock("--ttft-ms", "800", "--itl-ms", "0", "--output-tokens", "2", "--jitter", "0",
                      "--max-num-seqs", "1", "--max-queue", "0", "--prefix-cache-tokens", "100000")
    client = openai.OpenAI(base_url=mock.base_url, api_key="mock-key", max_retries=0, timeout=30)
    system = "refused " + SYSTEM
    holder = client.chat.completions.create(model="mock-llm", messages=[{"role": "user", "content": "hold"}],
                                            stream=True)  # holds the only slot until read to its end
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="mock-llm", messages=[{"role": "system", "content": system},
                                                                   {"role": "user", "content": "refused"}])
    list(holder)
    usage = client.chat.completions.create(model="mock-llm", messages=[{"role": "system", "content": system},
                                                                       {"role": "user", "content": "admitted"}]).usage
    assert usage.prompt_tokens_details.cached_tokens == 0


def test_bad_cache_options_fail_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mock_server", "--prefix-cache-block-size", "0"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "prefix_cache.block_size: Input should be greater than or equal to 1" in result.stderr
    config = tmp_path / "mock.yaml"
    config.write_text("prefix_cache: {capacity_tokens: -5}\n")
    result = subprocess.run([sys.executable, "-m", "mock_server", "--config", str(config)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and "prefix_cache.capacity_tokens" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- synthetic shared prefixes ---------------------------------------------------------------------
def test_pool_prompts_have_exact_lengths_and_are_deterministic():
    def draw(seed: int) -> list[dict]:
        source = Synthetic(700, 80, 32, 4, seed=seed, prefix_tokens=500, prefix_pool=5)
        return [source.next() for _ in range(300)]

    rows = draw(11)
    assert rows == draw(11) and rows != draw(12)
    assert all(count_tokens(r["prompt"]) == r["input_tokens"] for r in rows)
    assert all(count_tokens(r["prefix"]) == 500 and r["prompt"] == r["prefix"] + r["suffix"] for r in rows)
    assert all(r["input_tokens"] >= 501 for r in rows)
    assert len({r["prefix"] for r in rows}) == 5 and {r["prefix_id"] for r in rows} == set(range(5))
    assert len({r["prefix"][:40] for r in rows}) == 5  # distinct from their first tokens: distinct first blocks
    plain = Synthetic(700, 80, 32, 4, seed=11)
    assert "prefix" not in plain.fields and "prefix" not in plain.next()


@pytest.mark.parametrize(("prefix", "needle"), [
    ("{tokens: 3000, pool: 8}", "data: prefix.tokens (3000) must be less than input_tokens.mean (2000)"),
    ("{tokens: 100, pool: 0}", "data.prefix.pool: Input should be greater than or equal to 1"),
    ("{tokens: 100, reuse: 3}", "data.prefix.reuse: Extra inputs are not permitted"),
])
def test_bad_prefix_settings_fail_in_one_line(shared_mock, tmp_path, prefix, needle):
    text = (ROOT / "configs" / "scenarios" / "prefix-cache.yaml").read_text()
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(text.replace("{tokens: 1500, pool: 8}", prefix))
    result = run("chat_stream.py", shared_mock.url, "--scenario", str(scenario), "-u", "1",
                 "--total-requests", "1", "--results-dir", str(tmp_path / "run"), timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-1500:]
    assert needle in result.stderr, result.stderr[-1500:]


# -- the client's record -------------------------------------------------------------------------
def test_cached_tokens_are_type_checked_like_the_other_counts():
    for value, expected in ((12, 12), (True, None), (-1, None), ("12", None), (1.5, None)):
        account = StreamAccount()
        OpenAIChat().handle("", json.dumps({"choices": [], "usage": {
            "prompt_tokens": 20, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": value}}}).encode(),
            0.0, account)
        assert account.usage_cached == expected and account.usage_prompt == 20
    account = StreamAccount()
    OpenAIChat().handle("", b'{"choices": [], "usage": {"prompt_tokens": 5, "prompt_tokens_details": null}}', 0.0,
                        account)
    assert account.usage_cached is None and account.usage_prompt == 5
    account = StreamAccount()  # Anthropic: the prompt is input + cache reads + cache writes
    AnthropicMessages().handle("message_start", json.dumps({"type": "message_start", "message": {"usage": {
        "input_tokens": 7, "cache_read_input_tokens": 96, "cache_creation_input_tokens": 32}}}).encode(), 0.0,
        account)
    assert (account.usage_prompt, account.usage_cached) == (135, 96)
    account = StreamAccount()  # Responses API: input_tokens_details.cached_tokens in the final response
    OpenAIResponses().handle("response.completed", json.dumps({"type": "response.completed", "response": {
        "status": "completed", "usage": {"input_tokens": 50, "output_tokens": 3,
                                         "input_tokens_details": {"cached_tokens": 32}}}}).encode(), 0.0, account)
    assert (account.usage_prompt, account.usage_cached) == (50, 32)


def _prometheus_counter(text: str, name: str) -> float:
    return float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.M).group(1))


def test_shared_prefix_workload_ttft_drop_csv_report_and_metrics(start_mock, tmp_path):
    """prefix-cache.yaml shape against a mock with a known prefill cost: cache hits' TTFT is lower by
    per_input_token_ms x cached tokens; the CSV, the report and the mock's counters agree."""
    per_token_ms = 0.2
    mock = start_mock("--ttft-ms", "20", "--itl-ms", "1", "--output-tokens", "1000", "--jitter", "0",
                      "--per-input-token-ms", str(per_token_ms), "--prefix-cache-tokens", "1000000")
    text = (ROOT / "configs" / "scenarios" / "prefix-cache.yaml").read_text()
    text = (text.replace("{mean: 2000, stddev: 200}", "{mean: 3000, stddev: 0}")
            .replace("{mean: 64, stddev: 8}", "{mean: 8, stddev: 0}")
            .replace("{tokens: 1500, pool: 8}", "{tokens: 2500, pool: 4}"))
    scenario = tmp_path / "prefix.yaml"
    scenario.write_text(text)
    folder = tmp_path / "run"
    result = run("chat_stream.py", mock.url, "--scenario", str(scenario), "-u", "2", "-r", "2",
                 "--total-requests", "40", "--results-dir", str(folder), "--server-metrics", mock.url + "/metrics")
    assert result.returncode == 0, result.stderr[-2500:]
    records = load_records(folder)
    assert len(records) == 40 and (records["status"] == "ok").all(), records["error"].tolist()
    assert records["cached_tokens"].notna().all()
    hits, misses = records[records["cached_tokens"] > 0], records[records["cached_tokens"] == 0]
    assert len(misses) >= 4 and len(hits) >= 30  # the first request of each prefix misses (two may race)
    assert (hits["cached_tokens"] % BLOCK == 0).all() and (hits["cached_tokens"] < hits["input_tokens"]).all()
    assert hits["cached_tokens"].min() >= 2496  # the 2,500-token prefix (and its framing) in full blocks
    expected_drop = per_token_ms * statistics.median(hits["cached_tokens"])  # ~500 ms
    measured_drop = statistics.median(misses["ttft_ms"]) - statistics.median(hits["ttft_ms"])
    assert abs(measured_drop - expected_drop) < 0.15 * expected_drop, (measured_drop, expected_drop)

    exposed = mock_metrics(mock)
    assert _prometheus_counter(exposed, "vllm:prefix_cache_hits_total") == records["cached_tokens"].sum()
    assert _prometheus_counter(exposed, "vllm:prefix_cache_queries_total") == records["input_tokens"].sum()

    report = subprocess.run([sys.executable, "-m", "analysis", "report", str(folder)], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert report.returncode == 0, report.stderr[-2000:]
    summary = json.loads((folder / "summary.json").read_text())["summary"]
    # the scraped counters are the ones the server-metrics analysis knows (vLLM V1's)
    assert summary["server_metrics"]["sources"]["prefix_hit"] == (
        "vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total")
    cache = summary["prefix_cache"]
    hit_rate = records["cached_tokens"].sum() / records["input_tokens"].sum()
    assert cache["hit_rate"] == pytest.approx(hit_rate)
    assert cache["cached"]["requests"] == len(hits) and cache["uncached"]["requests"] == len(misses)
    assert cache["cached"]["ttft_p50"] == pytest.approx(hits["ttft_ms"].median())
    md = (folder / "report.md").read_text()
    assert f"Prefix-cache hit rate {hit_rate:.1%}" in md
    assert "cached (cached tokens > 0)" in md and "Prefix cache" in (folder / "report.html").read_text()


def test_report_says_not_reported_without_cached_tokens(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "5", "--itl-ms", "1", "--output-tokens", "1000", "--jitter", "0")
    folder = tmp_path / "run"
    result = run("chat_stream.py", mock.url, "--scenario", str(ROOT / "configs" / "scenarios" / "prefix-cache.yaml"),
                 "-u", "2", "-r", "2", "--total-requests", "4", "--results-dir", str(folder))
    assert result.returncode == 0, result.stderr[-2500:]
    assert load_records(folder)["cached_tokens"].isna().all()
    report = subprocess.run([sys.executable, "-m", "analysis", "report", str(folder)], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "Prefix-cache hit rate: not reported by the server." in (folder / "report.md").read_text()
    assert json.loads((folder / "summary.json").read_text())["summary"]["prefix_cache"]["hit_rate"] is None
