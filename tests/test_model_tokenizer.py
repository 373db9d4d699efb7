"""--tokenizer PATH: a local Hugging Face tokenizer.json for synthetic prompts and fallback counts, on the
client, the mock and the analysis; and the report's warning when counts are cl100k_base estimates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hf_tokenizer import EXTRA_WORDS, train_tokenizer
from locust_procs import clean_env, free_port, start_master, stop_all

from analysis.stats import load_records
from tokenstorm.client.datasets import Synthetic
from tokenstorm.core import tokenizer
from tokenstorm.mockproc import ROOT

TOKENSTORM = str(Path(sys.executable).parent / "tokenstorm")
WARNING = "WARNING: the server sent no usage"
N = 96  # output tokens per request (--ignore-eos)


@pytest.fixture(scope="module")
def tok_file(tmp_path_factory) -> Path:
    return train_tokenizer(tmp_path_factory.mktemp("tok") / "tiny-bpe.json")


@pytest.fixture
def hf(tok_file):
    yield tokenizer.use(str(tok_file))
    tokenizer.use(None)


TEXTS = ["Hello, world!", "tokenstorm measures kubernetes autoscaling with speculative prefill.",
         "The queue grows.\n\nEvery request waits", "", "   spaces   and\ttabs "]


def test_hf_counts_match_the_tokenizers_library(hf, tok_file):
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(tok_file))
    assert hf.name == "tiny-bpe.json" and not hf.default
    for text in TEXTS:
        ids = reference.encode(text, add_special_tokens=False).ids
        assert tokenizer.encode(text) == ids and tokenizer.count_tokens(text) == len(ids)
        assert tokenizer.count_tokens_cached(text) == len(ids)
        assert b"".join(tokenizer.pieces(text)) == text.encode() and len(tokenizer.pieces(text)) == len(ids)
    # a different tokenizer from cl100k_base, visibly: whole words it cuts into pieces are one token here
    text = " ".join(EXTRA_WORDS)
    assert tokenizer.count_tokens(text) == len(EXTRA_WORDS) < tokenizer.count_tokens(text, "cl100k_base")


def test_synthetic_prompts_have_the_exact_token_count_under_the_hf_tokenizer(hf, tok_file):
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(tok_file))
    data = Synthetic(300, 120, 10, 0, seed=3)
    for _ in range(40):
        row = data.next()
        assert len(reference.encode(row["prompt"], add_special_tokens=False).ids) == row["input_tokens"]


BAD = {"missing": "nowhere/tokenizer.json", "hub name": "meta-llama/Llama-3-8B", "directory": "{dir}",
       "not json": "{dir}/notes.txt", "json but no tokenizer": "{dir}/config.json"}


def _bad_value(kind: str, tmp_path: Path) -> str:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return BAD[kind].format(dir=tmp_path)


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_tokenizer_stops_tokenstorm_run_before_any_request(kind, tmp_path):
    value = _bad_value(kind, tmp_path)
    # the host is a closed port: reaching the network would fail with "cannot reach --host" instead
    result = subprocess.run([TOKENSTORM, "run", "--headless", "--only-summary", "--host",
                             f"http://127.0.0.1:{free_port()}", "-u", "1", "--total-requests", "1",
                             "--results-dir", str(tmp_path / "run"), "--tokenizer", value],
                            capture_output=True, text=True, timeout=120, env=clean_env({"OPENAI_API_KEY": "k"}))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "--tokenizer" in line]
    assert len(lines) == 1 and value in lines[0] and "only local" in lines[0], result.stderr[-2000:]
    assert "cannot reach" not in result.stderr and not (tmp_path / "run" / "requests-local.csv").exists()


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_tokenizer_stops_the_mock_before_it_listens(kind, tmp_path):
    value = _bad_value(kind, tmp_path)
    result = subprocess.run([sys.executable, "-m", "mock_server", "--port", "0", "--tokenizer", value],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and value in lines[0] and "only local" in lines[0] and "listening" not in result.stdout


def _run(mock, tmp: Path, *args: str, usage: bool = False) -> tuple[pd.DataFrame, str]:
    result = subprocess.run([TOKENSTORM, "run", "--headless", "--only-summary", "--host", mock.url, "-u", "2",
                             "--total-requests", "10", "--results-dir", str(tmp), "--max-tokens", str(N),
                             "--ignore-eos", *([] if usage else ["--no-include-usage"]), *args],
                            capture_output=True, text=True, timeout=120, env=clean_env({"OPENAI_API_KEY": "k"}))
    assert result.returncode == 0, result.stderr[-2000:]
    report = (tmp / "report.md").read_text()
    return load_records(tmp), report


def test_fallback_counts_use_the_given_tokenizer_and_the_report_says_when_they_are_estimates(
        start_mock, tok_file, tmp_path):
    mock = start_mock("--ttft-ms", "10", "--itl-ms", "1", "--jitter", "0", "--no-auth", "--tokenizer", str(tok_file))
    # the model's tokenizer on both sides, no usage: the client's count is the mock's exactly
    df, report = _run(mock, tmp_path / "same", "--tokenizer", str(tok_file))
    assert len(df) == 10 and (df["status"] == "ok").all()
    assert (df["output_tokens_source"] == "tokenizer").all() and df["output_tokens_usage"].isna().all()
    assert (df["output_tokens"] == N).all() and (df["tokenizer"] == "tiny-bpe.json").all()
    assert WARNING not in report and "tokenizer:tiny-bpe.json 100%" in report
    meta = json.loads((tmp_path / "same" / "run-local.json").read_text())
    assert meta["settings"]["tokenizer"] == "tiny-bpe.json"

    # the default cl100k_base counts the same text differently: flagged at the top of the reports
    df, report = _run(mock, tmp_path / "default")
    assert (df["tokenizer"] == "cl100k_base").all() and (df["output_tokens_source"] == "tokenizer").all()
    assert (df["output_tokens"] != N).any() and (df["output_tokens"] >= N).all()
    head = report.split("## Run")[0]
    assert WARNING in head and "100% of output token counts (10 of 10 requests)" in head and "--tokenizer" in head
    assert WARNING in (tmp_path / "default" / "report.html").read_text().split("<h2>")[0]

    # with usage, the server's count is used and nothing is flagged
    df, report = _run(mock, tmp_path / "usage", usage=True)
    assert (df["output_tokens_source"] == "usage").all() and (df["output_tokens"] == N).all()
    assert WARNING not in report and "usage 100%" in report


def test_workers_count_with_the_masters_tokenizer(start_mock, tok_file, tmp_path):
    mock = start_mock("--ttft-ms", "10", "--itl-ms", "1", "--jitter", "0", "--tokenizer", str(tok_file))
    port = free_port()
    master = start_master(mock.url, port, 1, "-u", "2", "-r", "2", "--total-requests", "6", "--results-dir",
                          str(tmp_path / "ok"), "--max-tokens", str(N), "--ignore-eos", "--no-include-usage",
                          "--tokenizer", str(tok_file))
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "chat_stream.py"), "--worker",
           "--master-host", "127.0.0.1", "--master-port", str(port)]
    worker = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env(), cwd=ROOT)
    try:
        _out, err = master.communicate(timeout=120)
    finally:
        stop_all(master, worker)
    assert master.returncode == 0, err[-2000:]
    df = load_records(tmp_path / "ok")
    assert len(df) == 6 and (df["worker_id"] == "w0").all()
    assert (df["tokenizer"] == "tiny-bpe.json").all() and (df["output_tokens"] == N).all()


def test_a_worker_without_the_tokenizer_file_says_so(start_mock, tok_file, tmp_path):
    """A relative --tokenizer path resolves on the master; the worker, elsewhere, has no such file."""
    mock = start_mock("--ttft-ms", "10", "--itl-ms", "1")
    (tmp_path / "master").mkdir()
    (tmp_path / "master" / "tok.json").write_bytes(tok_file.read_bytes())
    port = free_port()
    locustfile = str(ROOT / "locustfiles" / "chat_stream.py")
    master = subprocess.Popen([sys.executable, "-m", "locust", "-f", locustfile, "--master", "--headless",
                               "--only-summary", "--host", mock.url, "--master-bind-host", "127.0.0.1",
                               "--master-bind-port", str(port), "--expect-workers", "1", "-u", "1",
                               "--total-requests", "2", "--results-dir", str(tmp_path / "res"), "--tokenizer",
                               "tok.json", "-t", "20"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
                              cwd=tmp_path / "master")
    worker = subprocess.Popen([sys.executable, "-m", "locust", "-f", locustfile, "--worker", "--master-host",
                               "127.0.0.1", "--master-port", str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=clean_env(), cwd=tmp_path)
    try:
        _out, worker_err = worker.communicate(timeout=60)
    finally:
        stop_all(master, worker)
    line = next((x for x in worker_err.splitlines() if "--tokenizer tok.json" in x), "")
    assert "no such file" in line and "on this worker" in line, worker_err[-2000:]
    assert "Traceback" not in worker_err, worker_err


def test_analysis_tokens_recounts_with_the_given_tokenizer(hf, tok_file, tmp_path):
    log = ROOT / "tests" / "data" / "gateway.log.jsonl"
    result = subprocess.run([sys.executable, "-m", "analysis", "tokens", str(log), "--tokenizer", str(tok_file)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    english, chinese, tool_json, _tool_sse = out["entries"]
    assert out["tokenizer"] == "tiny-bpe.json"
    assert english["completion_tokens"] == tokenizer.count_tokens("Hello, world!")
    assert tool_json["completion_tokens"] == tokenizer.count_tokens('get_weather{"city": "Paris"}')
    assert chinese["completion_tokens"] == tokenizer.count_tokens("负载测试用来衡量系统在压力下的表现。")
    default = json.loads(subprocess.run([sys.executable, "-m", "analysis", "tokens", str(log)], capture_output=True,
                                        text=True, cwd=ROOT, timeout=60).stdout)
    assert default["tokenizer"] == "cl100k_base"
    assert [e["completion_tokens"] for e in default["entries"]] != [e["completion_tokens"] for e in out["entries"]]
    bad = subprocess.run([sys.executable, "-m", "analysis", "tokens", str(log), "--tokenizer", "org/model"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "org/model" in bad.stderr, bad.stderr
