"""Trace replay: a Mooncake trace as the open-loop schedule, with real Locust runs against the mock."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from locust_procs import free_port, run, start_master, start_worker, stop_all

from analysis.stats import load_records
from tokenstorm.client.blocks import BLOCK_TOKENS, PromptSynth
from tokenstorm.client.datasets import DataError
from tokenstorm.client.trace import TraceEntry, expected_cached_blocks, load_trace
from tokenstorm.core import tokenizer
from tokenstorm.mockproc import ROOT

SAMPLE = ROOT / "data" / "traces" / "mooncake-sample.jsonl"


def small_trace(path: Path, count: int, span_ms: int, seed: int = 1) -> list[dict]:
    """A bursty trace with shared prefixes: two documents, each request with its own last block."""
    rng = random.Random(seed)
    docs, own = [[1, 2], [1, 3, 4]], 100
    lines, times = [], sorted(rng.randint(0, span_ms) for _ in range(count - 1))
    for t in [0, *times]:
        own += 1
        ids = rng.choice(docs) + [own]
        lines.append({"timestamp": t, "input_length": BLOCK_TOKENS * (len(ids) - 1) + rng.randint(1, BLOCK_TOKENS),
                      "output_length": rng.randint(3, 12), "hash_ids": ids})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return lines


def scenario(tmp_path: Path, trace: Path, speedup: float) -> Path:
    path = tmp_path / "trace.yaml"
    path.write_text(f"""name: trace-test
format: openai-completions
data: {{type: mooncake, file: {trace}, speedup: {speedup}}}
body: {{model: mock-llm, prompt: "{{{{prompt}}}}", max_tokens: "{{{{max_tokens}}}}", ignore_eos: true,
        stream: true, stream_options: {{include_usage: true}}}}
""")
    return path


def check_replay(records, lines: list[dict], speedup: float, loop_lag_ms: float) -> None:
    """Every trace line sent once, at start + timestamp / speedup, with its lengths."""
    records = records.sort_values(["t_intended", "input_tokens"])
    assert len(records) == len(lines) and (records["status"] == "ok").all()
    start = records["t_intended"].min()
    want = sorted((start + line["timestamp"] / 1000 / speedup, line["input_length"], line["output_length"])
                  for line in lines)
    got = list(zip(records["t_intended"], records["input_tokens"], records["output_tokens"], strict=True))
    assert np.allclose([g[0] for g in got], [w[0] for w in want], atol=1e-5)
    assert [g[1:] for g in got] == [w[1:] for w in want]  # input_length and output_length, request by request
    lag = records["schedule_lag_ms"]
    assert lag.quantile(0.9) < 10 + loop_lag_ms and lag.max() < 100 + loop_lag_ms


def test_a_replay_keeps_the_traces_timing_and_lengths(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "10", "--itl-ms", "1", "--jitter", "0")
    lines = small_trace(tmp_path / "t.jsonl", 60, 8000)
    result = run("chat_stream.py", mock.url, "-u", "30", "-r", "30", "--scenario",
                 str(scenario(tmp_path, tmp_path / "t.jsonl", 2.0)), "--results-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-2000:]
    loop_lag = json.loads((tmp_path / "out" / "run-local.json").read_text())["client"]["loop_lag_ms_max"]
    check_replay(load_records(tmp_path / "out"), lines, 2.0, loop_lag)
    meta = json.loads((tmp_path / "out" / "run-local.json").read_text())
    assert meta["settings"]["trace"]["requests"] == 60 and meta["settings"]["trace"]["speedup"] == 2.0


def test_two_workers_replay_every_line_once(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "10", "--itl-ms", "1", "--jitter", "0")
    lines = small_trace(tmp_path / "t.jsonl", 50, 5000, seed=2)
    port = free_port()
    master = start_master(mock.url, port, 2, "-u", "20", "-r", "20", "--scenario",
                          str(scenario(tmp_path, tmp_path / "t.jsonl", 1.0)), "--results-dir", str(tmp_path / "out"))
    workers = [start_worker(port) for _ in range(2)]
    try:
        _out, err = master.communicate(timeout=120)
    finally:
        stop_all(master, *workers)
    assert master.returncode == 0, err[-2000:]
    records = load_records(tmp_path / "out")
    assert records["worker_id"].value_counts().to_list() == [25, 25]
    workers_meta = json.loads((tmp_path / "out" / "run-master.json").read_text())["workers"]
    loop_lag = max(w["client"]["loop_lag_ms_max"] for w in workers_meta.values())  # each worker's own measure
    check_replay(records, lines, 1.0, loop_lag)


def test_total_requests_still_bounds_a_replay(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "5", "--itl-ms", "0", "--jitter", "0")
    small_trace(tmp_path / "t.jsonl", 40, 4000)
    result = run("chat_stream.py", mock.url, "-u", "10", "-r", "10", "--total-requests", "10", "--scenario",
                 str(scenario(tmp_path, tmp_path / "t.jsonl", 4.0)), "--results-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(load_records(tmp_path / "out")) == 10


@pytest.mark.parametrize("line, problem", [
    ('{"timestamp": 5, "input_length": 10, "output_length": 3}', "t.jsonl:2: hash_ids: Field required"),
    ('{"timestamp": "5", "input_length": 10, "output_length": 3, "hash_ids": [1]}', "t.jsonl:2: timestamp:"),
    ('{"timestamp": 5, "input_length": 600, "output_length": 3, "hash_ids": [1]}',
     "t.jsonl:2: hash_ids: 1 blocks given, but input_length 600 needs 2 blocks"),
    ('{"timestamp": 5, "input_length": 10, "output_length": 0, "hash_ids": [1]}', "t.jsonl:2: output_length:"),
    ("{not json", "t.jsonl:2: not valid JSON"),
    ('{"timestamp": 0, "input_length": 10, "output_length": 3, "hash_ids": [1]}',
     "t.jsonl:2: timestamp: 0 is before the previous line's 1"),
])
def test_a_bad_trace_line_is_one_line_before_any_load(tmp_path, line, problem):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"timestamp": 1, "input_length": 10, "output_length": 3, "hash_ids": [9]}\n' + line + "\n")
    with pytest.raises(DataError) as caught:
        load_trace(trace)
    assert problem in str(caught.value) and "\n" not in str(caught.value)
    # the same through a run: non-zero exit, one line naming the file:line, no request sent
    result = run("chat_stream.py", "http://127.0.0.1:9", "-u", "1", "--scenario",
                 str(scenario(tmp_path, trace, 1.0)), "--results-dir", str(tmp_path / "out"), timeout=60)
    assert result.returncode != 0 and problem in result.stderr and "Traceback" not in result.stderr


def test_a_trace_sets_its_own_schedule(tmp_path):
    small_trace(tmp_path / "t.jsonl", 5, 100)
    result = run("chat_stream.py", "http://127.0.0.1:9", "-u", "1", "--arrival-rate", "5", "--scenario",
                 str(scenario(tmp_path, tmp_path / "t.jsonl", 1.0)), "--results-dir", str(tmp_path / "out"),
                 timeout=60)
    assert result.returncode != 0 and "--arrival-rate" in result.stderr and "Traceback" not in result.stderr


def test_equal_hash_ids_give_equal_token_blocks_and_exact_lengths():
    synth, enc = PromptSynth(seed=0), tokenizer.get_encoding()
    entries = load_trace(SAMPLE)
    blocks: dict[int, list[int]] = {}
    for entry in entries:
        ids = enc.encode_ordinary(synth.prompt(entry.hash_ids, entry.input_length))
        assert len(ids) == entry.input_length  # blocks do not merge at their boundaries
        for i, hash_id in enumerate(entry.hash_ids):
            block = ids[i * BLOCK_TOKENS:(i + 1) * BLOCK_TOKENS]
            known = blocks.setdefault(hash_id, block)
            n = min(len(known), len(block))
            assert block[:n] == known[:n]  # a partial last block is the block's beginning
    assert enc.encode_ordinary(synth.block(1)) != enc.encode_ordinary(synth.block(2))
    assert PromptSynth(seed=1).block(1) != synth.block(1)  # the seed changes every block


def test_expected_cache_hits_count_leading_full_blocks_seen_before():
    def e(n: int, ids: list[int]) -> TraceEntry:
        return TraceEntry(timestamp=0, input_length=n, output_length=1, hash_ids=ids)
    entries = [e(1024, [1, 2]), e(1500, [1, 2, 3]), e(1100, [1, 5, 6]), e(1024, [2, 1]), e(1500, [1, 2, 3]),
               e(1024, [1, 2]), e(1536, [1, 2, 3]), e(1537, [1, 2, 3, 4])]
    # 1: nothing before; 2: [1, 2]; 3: [1]; 4: block 1 after another first block (none); 5: [1, 2] (its
    # partial block 3 was never sent whole); 6: only [1] (block 2 holds its last token); 7: [1, 2] (block 3
    # holds its last token); 8: [1, 2, 3], sent whole by 7
    assert expected_cached_blocks(entries) == [0, 2, 1, 0, 2, 1, 2, 3]
    sample = load_trace(SAMPLE)
    hits = expected_cached_blocks(sample)
    assert len(sample) == 200 and sample[-1].timestamp >= 55000 and sum(hits) > len(sample)  # real sharing


def test_the_mocks_prefix_cache_hits_are_the_expected_ones(start_mock, tmp_path):
    """Against the mock's prefix cache (block size 512, large enough to evict nothing), every request's
    cached_tokens is 512 x expected_cached_blocks, request by request."""
    mock = start_mock("--ttft-ms", "10", "--itl-ms", "1", "--jitter", "0", "--prefix-cache-tokens", "1000000",
                      "--prefix-cache-block-size", str(BLOCK_TOKENS))
    lines = small_trace(tmp_path / "t.jsonl", 40, 4000, seed=3)
    for i, line in enumerate(lines):  # 100 ms apart: each request admitted before the next arrives
        line["timestamp"] = 100 * i
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = run("chat_stream.py", mock.url, "-u", "10", "-r", "10", "--scenario",
                 str(scenario(tmp_path, tmp_path / "t.jsonl", 1.0)), "--results-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-2000:]
    records = load_records(tmp_path / "out").sort_values("t_intended")
    expected = [BLOCK_TOKENS * hits for hits in expected_cached_blocks(load_trace(tmp_path / "t.jsonl"))]
    assert records["input_tokens"].to_list() == [line["input_length"] for line in lines]
    assert records["cached_tokens"].to_list() == expected and sum(expected) > 0
