"""Token accounting of API-gateway logs (Kong http-log shape), from the CLI and over HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

from tokenstorm.core.tokenizer import count_chat_prompt, count_tokens
from tokenstorm.mockproc import ROOT

LOG = ROOT / "tests" / "data" / "gateway.log.jsonl"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analysis", "tokens", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_counts_per_entry_model_and_route(tmp_path):
    result = run(str(LOG), "--csv", str(tmp_path / "tokens.csv"))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    entries = out["entries"]
    assert [e["line"] for e in entries] == [1, 2, 5, 6]
    english, chinese, tool_json, tool_sse = entries
    prompt = count_chat_prompt([{"role": "system", "content": "You are terse."},
                                {"role": "user", "content": "Say hello in English."}])
    assert english["prompt_tokens"] == prompt and english["completion_tokens"] == count_tokens("Hello, world!")
    assert english["streamed"] and english["usage_completion_tokens"] == 4
    assert chinese["completion_tokens"] == count_tokens("负载测试用来衡量系统在压力下的表现。")
    assert chinese["prompt_tokens"] == count_chat_prompt([{"role": "user", "content": "用中文介绍一下负载测试。"}])
    assert not tool_json["streamed"] and tool_json["completion_tokens"] == count_tokens('get_weather{"city": "Paris"}')
    assert tool_sse["completion_tokens"] == count_tokens('lookup{"q": "tokens"}')
    assert all(e["total_tokens"] == e["prompt_tokens"] + e["completion_tokens"] for e in entries)
    by_model = out["totals_by_model"]
    assert by_model["gpt-4o-mini"]["entries"] == 3 and by_model["qwen-max"]["entries"] == 1
    assert out["totals_by_route"]["openai-chat"]["total_tokens"] == sum(
        e["total_tokens"] for e in entries if e["route"] == "openai-chat")
    assert [s["line"] for s in out["skipped"]] == [3, 4, 7]
    assert "line 3: skipped: request.body is not valid JSON" in result.stderr
    assert "line 4: skipped: not JSON" in result.stderr
    assert "line 7: skipped: request.body has neither messages nor prompt" in result.stderr
    assert (tmp_path / "tokens.csv").read_text().count("\n") == 5


def test_missing_file_is_one_line():
    result = run("/nonexistent.jsonl")
    assert result.returncode == 2 and result.stderr.strip().endswith("cannot read it (No such file or directory)")


def test_serve_answers_one_entry():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "analysis", "tokens", "--serve", "--port", str(port)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert "serving on http://127.0.0.1:" in server.stdout.readline()
        entry = LOG.read_text().splitlines()[0].encode()
        answer = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/", data=entry, timeout=10).read())
        assert answer["completion_tokens"] == count_tokens("Hello, world!")
        bad = urllib.request.Request(f"http://127.0.0.1:{port}/", data=b'{"request": {}}')
        try:
            urllib.request.urlopen(bad, timeout=10)
            raise AssertionError("expected 400")
        except urllib.error.HTTPError as exc:
            assert exc.code == 400 and "request.body is missing" in exc.read().decode()
    finally:
        server.terminate()
        server.wait(timeout=10)
    time.sleep(0)
