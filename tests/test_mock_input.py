"""Bad requests get OpenAI-shaped 4xx answers (never a 500); bad flags and configs exit 2 in one line."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import gevent
import pytest
import sse_probe

from tokenstorm.mockproc import ROOT

CHAT = {"model": "mock-llm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def error_of(probe: sse_probe.Probe) -> dict:
    error = json.loads(probe.body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b"{not json", 400, "could not parse the JSON body"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b"", 400, "body is empty"),
    (b"\xff\xfe{}", 400, "not valid UTF-8"),
    ({"model": "mock-llm"}, 400, "messages: Field required"),
    ({**CHAT, "max_tokens": "10"}, 400, "max_tokens: Input should be a valid integer"),
    ({**CHAT, "max_tokens": 0}, 400, "max_tokens: Input should be greater than or equal to 1"),
    ({**CHAT, "stream": "yes"}, 400, "stream: Input should be a valid boolean"),
    ({**CHAT, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
    ({**CHAT, "n": 2}, 400, "n: Input should be less than or equal to 1"),
    ({**CHAT, "stream_options": {"include_usage": True}}, 400, "stream_options is only allowed when stream"),
    ({**CHAT, "tool_choice": "required"}, 400, "tool_choice 'required' needs tools"),
    ({**CHAT, "model": "gpt-9"}, 404, "The model `gpt-9` does not exist"),
])
def test_bad_bodies(shared_mock, body, status, needle):
    probe = sse_probe.request(shared_mock.port, body)
    assert probe.status == status
    error = error_of(probe)
    assert needle in error["message"]
    assert error["type"] == "invalid_request_error"


def test_missing_field_names_the_param(shared_mock):
    error = error_of(sse_probe.request(shared_mock.port, {"messages": CHAT["messages"]}))
    assert error["param"] == "model" and error["code"] == "invalid_value"


def test_body_over_the_limit_is_413(start_mock, tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text("limits:\n  max_body_bytes: 2048\n")
    mock = start_mock("--config", str(config))
    probe = sse_probe.request(mock.port, {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]})
    assert probe.status == 413 and error_of(probe)["code"] == "request_too_large"


def test_wrong_method_unknown_path_and_auth(shared_mock):
    probe = sse_probe.request(shared_mock.port, None, method="GET")
    assert probe.status == 405 and probe.headers["allow"] == "POST"
    probe = sse_probe.request(shared_mock.port, CHAT, path="/v1/chat/complete")
    assert probe.status == 404 and error_of(probe)["message"] == "Invalid URL (POST /v1/chat/complete)"
    probe = sse_probe.request(shared_mock.port, CHAT, key=None)
    assert probe.status == 401 and error_of(probe)["code"] == "missing_api_key"
    probe = sse_probe.request(shared_mock.port, CHAT, key="nope")
    assert probe.status == 401 and error_of(probe)["code"] == "invalid_api_key"
    assert b"nope" not in probe.body


def test_health_and_metrics_need_no_key(shared_mock):
    assert sse_probe.request(shared_mock.port, None, path="/health", method="GET", key=None).status == 200
    metrics = sse_probe.request(shared_mock.port, None, path="/metrics", method="GET", key=None)
    assert metrics.status == 200 and b"mock_requests_total" in metrics.body
    assert metrics.headers["content-type"].startswith("text/plain")


def raw_exchange(port: int, payload: bytes) -> bytes:
    """Send raw bytes, read until the server closes (the last request must close or be invalid)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_malformed_http_gets_400_not_a_crash(shared_mock):
    assert raw_exchange(shared_mock.port, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw_exchange(shared_mock.port, b"GET /health HTTP/2.0\r\n\r\n").startswith(b"HTTP/1.1 505")
    answer = raw_exchange(shared_mock.port, b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") and b"Content-Length" in answer
    # still serving afterwards
    assert sse_probe.request(shared_mock.port, None, path="/health", method="GET").status == 200


def test_chunked_request_body_keep_alive_and_expect_continue(shared_mock):
    body = json.dumps(CHAT).encode()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer mock-key\r\n"
            b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
    chunked = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    second = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = raw_exchange(shared_mock.port, head + chunked + second)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
    assert answer.count(b"HTTP/1.1 200 OK") == 2 and b'"status": "ok"' in answer


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mock_server", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize(("args", "needle"), [
    (["--config", "nope.yaml"], "config file nope.yaml not found (profiles: chaos, deterministic, realistic-8b)"),
    (["--jitter", "-1"], "command line: latency.jitter: Input should be greater than or equal to 0"),
    (["--itl-ms", "fast"], "argument --itl-ms: invalid float value: 'fast'"),
    (["--port", "70000"], "server.port: Input should be less than or equal to 65535"),
])
def test_bad_flags_fail_in_one_line(args, needle):
    result = run_cli(*args)
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("content", "needle"), [
    ("latency:\n  itl_ms: -3\n", "latency.itl_ms: Input should be greater than or equal to 0"),
    ("latency:\n  itl: 3\n", "latency.itl: Extra inputs are not permitted"),
    ("faults:\n  probabilities:\n    explode: 0.1\n", "faults.probabilities.explode"),
    ("faults:\n  probabilities:\n    http_500: 0.7\n    http_503: 0.7\n", "add up to more than 1"),
    ("latency: [1, 2\n", "not valid YAML"),
    ("- 1\n", "the top level must be a mapping"),
])
def test_bad_config_files_fail_in_one_line(tmp_path, content, needle):
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    result = run_cli("--config", str(config))
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and str(config) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_port_in_use_is_a_one_line_error(shared_mock):
    result = run_cli("--port", str(shared_mock.port))
    assert result.returncode == 2 and "cannot listen on 127.0.0.1" in result.stderr


def test_profiles_load_and_flags_override_them(start_mock):
    for profile in ("deterministic", "realistic-8b", "chaos"):
        mock = start_mock("--config", profile, "--itl-ms", "1")
        assert not any("Traceback" in line for line in mock.stderr_lines)
        assert mock.url.startswith("http://127.0.0.1:")
    mock = start_mock("--config", "deterministic", "--ttft-ms", "30", "--no-auth")
    probe = sse_probe.request(mock.port, {**CHAT, "stream": True}, key=None)
    assert probe.status == 200 and 0.029 < probe.ttft < 0.04


def test_workers_share_one_port_and_metrics_add_up(start_mock):
    mock = start_mock("--workers", "2", "--ttft-ms", "0", "--itl-ms", "0")
    jobs = [gevent.spawn(sse_probe.request, mock.port, None, path="/health", method="GET") for _ in range(60)]
    gevent.joinall(jobs)
    workers = {json.loads(j.value.body)["worker"] for j in jobs}
    assert workers == {0, 1}
    for _ in range(10):
        assert sse_probe.request(mock.port, {**CHAT, "stream": True}).status == 200
    text = sse_probe.request(mock.port, None, path="/metrics", method="GET").body.decode()
    total = float(re.search(r'^mock_requests_total\{endpoint="/v1/chat/completions",status="200"\} (\S+)$',
                            text, re.M).group(1))
    assert total == 10
    assert mock.stop() == 0


def test_rate_limit_headers_and_429(start_mock, tmp_path):
    config = tmp_path / "rl.yaml"
    config.write_text("rate_limit:\n  requests_per_minute: 3\n  tokens_per_minute: 100000\n"
                      "latency: {ttft_ms: 0, itl_ms: 0}\n")
    mock = start_mock("--config", str(config))
    answers = [sse_probe.request(mock.port, CHAT) for _ in range(4)]
    assert [a.status for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    assert answers[0].headers["x-ratelimit-remaining-requests"] == "2"
    assert answers[0].headers["x-ratelimit-limit-tokens"] == "100000"
    assert re.fullmatch(r"\d+(ms|(\.\d+)?s)", answers[0].headers["x-ratelimit-reset-requests"])
    assert int(answers[3].headers["retry-after-ms"]) > 1000
    assert error_of(answers[3])["code"] == "rate_limit_exceeded"
