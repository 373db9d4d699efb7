"""Hostile input against the mock, sent with raw sockets: each gets a clear 4xx fast, holds no slot,
and a healthy paced stream running alongside stays on schedule (its ITL gaps are measured, and allowed
what the OS withheld from the mock on a busy machine: its run-queue wait)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import gevent
import pytest
import sse_probe
from gevent import socket
from mock_metrics import run_queue_wait_s

ITL_MS = 20.0
GAP_SLACK_S = 0.25  # a gap beyond ITL + this means the event loop was frozen
CHAT = {"model": "mock-llm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
PACED = {**CHAT, "stream": True, "max_tokens": 150, "ignore_eos": True}  # ~3 s of tokens at 20 ms


@dataclass
class Paced:
    stream: gevent.Greenlet
    mock: object
    waited_before: float


def paced(mock) -> Paced:
    """A healthy stream, started now, with how long the OS had kept the mock waiting for a CPU."""
    stream = gevent.spawn(sse_probe.request, mock.port, PACED, timeout=60)
    gevent.sleep(0.3)  # under way before the attack starts
    return Paced(stream, mock, run_queue_wait_s(mock))


def assert_on_schedule(paced: Paced) -> None:
    """No gap beyond the ITL + GAP_SLACK_S, plus the time a busy machine did not run the mock at
    all (its run-queue wait meanwhile): on an idle machine that is ~0 and the bound stays tight."""
    probe = paced.stream.get(timeout=60)
    starved = run_queue_wait_s(paced.mock) - paced.waited_before
    assert probe.status == 200 and probe.complete, probe.error
    gaps = probe.itls()
    assert len(gaps) == PACED["max_tokens"] - 1
    assert max(gaps) < ITL_MS / 1000 + GAP_SLACK_S + starved, (max(gaps), starved)


def exchange(port: int, payload: bytes, chunks: list[bytes] | None = None, timeout: float = 30) -> tuple[int, dict]:
    """Send raw bytes (then `chunks`), read until the server closes; (status, JSON body of the last answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        for piece in chunks or []:
            sock.sendall(piece)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data, "the mock closed the connection without an answer"
    head, _, body = data.rpartition(b"HTTP/1.1 ")[2].partition(b"\r\n\r\n")
    return int(head.split(b" ", 1)[0]), json.loads(body)


def post(port: int, body: bytes, extra: str = "") -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer mock-key\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
            ).encode() + body


def tools_body(parameters: dict) -> bytes:
    return json.dumps({**CHAT, "tool_choice": "required", "tools": [
        {"type": "function", "function": {"name": "f", "parameters": parameters}}]}).encode()


@pytest.fixture
def mock(start_mock):
    return start_mock("--ttft-ms", "20", "--itl-ms", str(ITL_MS), "--max-num-seqs", "2")


def health(port: int) -> dict:
    return json.loads(sse_probe.request(port, None, path="/health", method="GET", timeout=5).body)


@pytest.mark.parametrize(("parameters", "needle"), [
    ({"type": "object", "required": ["a"], "properties": {"a": {"type": "array", "minItems": 100_000_000}}},
     "minItems 100000000 is over the mock's limit of 100"),
    ({"type": "object", "required": ["a"], "properties": {"a": {"type": "array", "minItems": 100, "items": {
        "type": "array", "minItems": 100, "items": {"type": "array", "minItems": 100}}}}},
     "more than 2000 values"),
    ({"type": "object", "required": ["s"], "properties": {"s": {"type": "string", "minLength": 10**9}}},
     "minLength 1000000000 is over the mock's limit of 4096"),
])
def test_tool_schemas_asking_too_much_get_a_400_naming_the_bound(mock, parameters, needle):
    stream = paced(mock)
    started = time.monotonic()
    status, body = exchange(mock.port, post(mock.port, tools_body(parameters)))
    assert time.monotonic() - started < 2
    assert status == 400 and needle in body["error"]["message"], body
    assert body["error"]["param"] == "tools"
    assert_on_schedule(stream)


@pytest.mark.parametrize("parameters", [
    {"type": "object", "properties": [1, 2]},
    {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "minimum": "x"}}},
    {"type": "object", "required": 7},
    {"type": 5},
])
def test_malformed_tool_schemas_are_400s_and_release_their_slot(mock, parameters):
    for _ in range(4):  # twice --max-num-seqs: a leaked slot would block the mock
        status, body = exchange(mock.port, post(mock.port, tools_body(parameters)))
        assert status == 400 and body["error"]["message"].startswith("Invalid tool parameters schema"), body
    assert health(mock.port)["running"] == 0
    answer = sse_probe.request(mock.port, {**CHAT, "stream": True}, timeout=5)
    assert answer.status == 200 and answer.complete


@pytest.mark.parametrize(("payload", "needle"), [
    (b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", "Transfer-Encoding"),
    (b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
     "both Content-Length and Transfer-Encoding"),
    (b"GET /health HTTP/1.7\r\n\r\n", "HTTP version"),
    ("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: ²\r\n\r\n".encode(), "Content-Length"),
    (b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2, 3\r\n\r\n{}", "Content-Length"),
    (None, "X-Mock-Fault-After"),
    (None, "nested too deeply"),
    (b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 20000,
     "Chunk-size line longer than 8192 bytes"),
    (b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x10\r\n", "chunk size"),
])
def test_strict_http_each_gets_a_400_with_a_json_error(shared_mock, payload, needle):
    port = shared_mock.port
    if needle == "X-Mock-Fault-After":
        payload = post(port, json.dumps(CHAT).encode(), "X-Mock-Fault: truncate\r\nX-Mock-Fault-After: ²\r\n")
    elif needle == "nested too deeply":
        payload = post(port, b"[" * 5000 + b"]" * 5000)
    status, body = exchange(port, payload)
    assert status == 400, body
    assert needle in body["error"]["message"], body
    assert health(port)["status"] == "ok"


def test_chunked_body_of_one_byte_chunks_parses_in_linear_time(start_mock):
    mock = start_mock("--ttft-ms", "20", "--itl-ms", str(ITL_MS))
    body = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 1_000_000}]}).encode()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer mock-key\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    wire = b"".join(b"1\r\n%b\r\n" % body[i:i + 1] for i in range(len(body))) + b"0\r\n\r\n"
    stream = paced(mock)
    started = time.monotonic()
    status, answer = exchange(mock.port, head, [wire[i:i + 65536] for i in range(0, len(wire), 65536)])
    took = time.monotonic() - started
    assert status == 200 and answer["usage"]["prompt_tokens"] > 1000, answer
    assert took < 30, took  # was 85 s when each chunk copied the whole buffer
    assert_on_schedule(stream)


def test_chunked_body_over_the_limit_is_413(start_mock, tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text("limits:\n  max_body_bytes: 2048\n")
    mock = start_mock("--config", str(config))
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer mock-key\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    status, body = exchange(mock.port, head + b"1000\r\n" + b"x" * 4096 + b"\r\n")
    assert status == 413 and body["error"]["code"] == "request_too_large"


def test_slow_and_idle_connections_are_timed_out(start_mock):
    mock = start_mock("--ttft-ms", "20", "--itl-ms", str(ITL_MS), "--idle-timeout-s", "1",
                      "--header-timeout-s", "1", "--body-timeout-s", "1")
    stream = paced(mock)
    idle = [socket.create_connection(("127.0.0.1", mock.port), timeout=10) for _ in range(150)]
    slow_head = [socket.create_connection(("127.0.0.1", mock.port), timeout=10) for _ in range(100)]
    slow_body = [socket.create_connection(("127.0.0.1", mock.port), timeout=10) for _ in range(50)]
    for sock in slow_head:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    for sock in slow_body:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    started = time.monotonic()

    def answer_of(sock) -> bytes:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data

    answers = [gevent.spawn(answer_of, s) for s in idle + slow_head + slow_body]
    gevent.joinall(answers, timeout=10, raise_error=True)
    assert time.monotonic() - started < 5
    assert all(a.value == b"" for a in answers[:150])  # idle: closed quietly
    for a in answers[150:]:
        assert a.value.startswith(b"HTTP/1.1 408"), a.value[:80]
        assert b"did not arrive within 1 s" in a.value
    for sock in idle + slow_head + slow_body:
        sock.close()
    assert_on_schedule(stream)
    assert "Traceback" not in "".join(mock.stderr_lines)


def test_queued_clients_that_disconnect_give_up_their_place(start_mock):
    mock = start_mock("--ttft-ms", "20", "--itl-ms", str(ITL_MS), "--max-num-seqs", "1", "--max-queue", "2")
    stream = paced(mock)  # holds the only slot for ~3 s
    leavers = [socket.create_connection(("127.0.0.1", mock.port), timeout=5) for _ in range(2)]
    for sock in leavers:
        sock.sendall(post(mock.port, json.dumps({**CHAT, "stream": True}).encode()))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")  # headers out, waiting in the queue
    assert health(mock.port)["queued"] == 2
    for sock in leavers:
        sock.close()
    gevent.sleep(0.3)
    assert health(mock.port)["queued"] == 0
    live = sse_probe.request(mock.port, {**CHAT, "stream": True}, timeout=30)  # not 429 queue_full
    assert live.status == 200 and live.complete, live.body[:200]
    assert_on_schedule(stream)


@pytest.mark.parametrize("stream", [True, False])
def test_client_that_half_closes_still_gets_its_answer(shared_mock, stream):
    body = json.dumps({**CHAT, "stream": stream}).encode()
    with socket.create_connection(("127.0.0.1", shared_mock.port), timeout=10) as sock:
        sock.sendall(post(shared_mock.port, body))
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert (b"data: [DONE]" in data) if stream else (b'"finish_reason": "length"' in data)


def closed_by_server(sock, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_connection_cap_sheds_the_oldest_idle_connections(start_mock):
    mock = start_mock("--ttft-ms", "20", "--itl-ms", str(ITL_MS), "--max-connections", "100")
    stream = paced(mock)
    socks = []
    for _ in range(300):
        socks.append(socket.create_connection(("127.0.0.1", mock.port), timeout=10))
        gevent.sleep(0.001)  # accepted in this order
    assert health(mock.port)["status"] == "ok"
    gevent.sleep(0.3)
    closed = [closed_by_server(s, 0.05) for s in socks]
    assert sum(closed) >= 200, sum(closed)
    assert not any(closed[-50:])  # the newest were kept, the oldest went first
    for sock in socks:
        sock.close()
    assert_on_schedule(stream)
    assert "Traceback" not in "".join(mock.stderr_lines)


def test_out_of_file_descriptors_sheds_idle_connections_without_a_traceback(tmp_path):
    import resource
    import subprocess
    import sys

    from tokenstorm.mockproc import ROOT

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    # --max-connections above the fd limit, so accept() itself runs out of descriptors
    proc = subprocess.Popen([sys.executable, "-m", "mock_server", "--port", "0", "--max-connections", "5000"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=low_limit)
    try:
        port = int(proc.stdout.readline().split("127.0.0.1:")[1].split(" ")[0])
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(300)]
        gevent.sleep(0.5)
        assert health(port)["status"] == "ok"
        for sock in socks:
            sock.close()
        assert health(port)["status"] == "ok"
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=10)
    assert "Traceback" not in err, err[-2000:]
    assert "out of file descriptors" in err


def test_an_8_mb_prompt_is_tokenized_off_the_event_loop(start_mock):
    mock = start_mock("--ttft-ms", "20", "--itl-ms", str(ITL_MS))
    words = "load test the streaming mock with a long prompt of many different words " * 110_000
    body = json.dumps({**CHAT, "messages": [{"role": "user", "content": words[:7_900_000]}]}).encode()
    stream = paced(mock)
    status, answer = exchange(mock.port, post(mock.port, body))
    assert status == 200 and answer["usage"]["prompt_tokens"] > 1_000_000, answer
    assert_on_schedule(stream)


def test_tool_definitions_count_in_prompt_tokens(shared_mock):
    from tokenstorm.core.tokenizer import count_chat_prompt

    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    _, plain = exchange(shared_mock.port, post(shared_mock.port, json.dumps({**CHAT, "messages": messages}).encode()))
    _, with_tools = exchange(shared_mock.port, post(shared_mock.port, json.dumps(
        {**CHAT, "messages": messages, "tools": tools, "tool_choice": "none"}).encode()))
    assert plain["usage"]["prompt_tokens"] == count_chat_prompt(messages)
    assert with_tools["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 15


def test_stop_strings_end_the_output_before_them(shared_mock):
    import openai

    client = openai.OpenAI(base_url=shared_mock.base_url, api_key="mock-key")
    ask = {"model": "mock-llm", "messages": [{"role": "user", "content": "hi"}], "seed": 7, "max_tokens": 24}
    full = client.chat.completions.create(**ask).choices[0].message.content
    stop = full.split()[len(full.split()) // 2]
    before = full[: full.index(stop)]
    for given in (stop, [stop, "never-in-the-output"]):
        choice = client.chat.completions.create(**ask, stop=given).choices[0]
        assert choice.finish_reason == "stop" and stop not in choice.message.content
        assert before.startswith(choice.message.content) and len(choice.message.content) > len(before) - 20
        chunks = list(client.chat.completions.create(**ask, stop=given, stream=True))
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == choice.message.content and chunks[-1].choices[0].finish_reason == "stop"


def test_n_null_and_stream_null_are_accepted(shared_mock):
    status, body = exchange(shared_mock.port, post(shared_mock.port, json.dumps(
        {**CHAT, "n": None, "stream": None}).encode()))
    assert status == 200 and body["object"] == "chat.completion", body


ANTHROPIC = {"model": "mock-llm", "max_tokens": 5, "messages": [{"role": "user", "content": "Hello there"}]}


def anthropic_post(path: str, body: dict, key: str | None = "mock-key") -> bytes:
    # The official anthropic SDK is not in this venv: raw HTTP with its headers.
    data = json.dumps(body).encode()
    auth = f"x-api-key: {key}\r\n" if key else ""
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}anthropic-version: 2023-06-01\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n")
    return head.encode() + data


def test_anthropic_missing_key_and_count_tokens(shared_mock):
    from tokenstorm.core.tokenizer import count_chat_prompt

    port = shared_mock.port
    status, body = exchange(port, anthropic_post("/v1/messages", ANTHROPIC, key=None))
    assert status == 401 and body["type"] == "error"
    assert body["error"]["type"] == "authentication_error" and "x-api-key" in body["error"]["message"]
    status, body = exchange(port, anthropic_post("/v1/messages", ANTHROPIC, key="wrong"))
    assert status == 401 and body["error"]["type"] == "authentication_error"
    count_body = {k: v for k, v in ANTHROPIC.items() if k != "max_tokens"}
    status, counted = exchange(port, anthropic_post("/v1/messages/count_tokens", count_body))
    assert status == 200 and counted == {"input_tokens": count_chat_prompt(
        [{"role": "user", "content": "Hello there"}])}
    _, message = exchange(port, anthropic_post("/v1/messages", ANTHROPIC))
    assert message["usage"]["input_tokens"] == counted["input_tokens"]


def test_anthropic_tools_stream_tool_use_blocks(shared_mock):
    import jsonschema

    schema = {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}
    body = {**ANTHROPIC, "max_tokens": 200, "tools": [{"name": "get_weather", "input_schema": schema}],
            "tool_choice": {"type": "any"}}
    probe = sse_probe.request(shared_mock.port, {**body, "stream": True}, path="/v1/messages",
                              headers={"x-api-key": "mock-key"}, key=None)
    events = probe.json_events()
    starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    assert starts[-1]["type"] == "tool_use" and starts[-1]["name"] == "get_weather"
    assert starts[-1]["id"].startswith("toolu_")
    pieces = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert pieces and all(p["type"] == "input_json_delta" for p in pieces)
    jsonschema.validate(json.loads("".join(p["partial_json"] for p in pieces)), schema)
    assert next(e for e in events if e["type"] == "message_delta")["delta"]["stop_reason"] == "tool_use"
    _, message = exchange(shared_mock.port, anthropic_post("/v1/messages", body))
    assert message["stop_reason"] == "tool_use" and message["content"][-1]["type"] == "tool_use"
    jsonschema.validate(message["content"][-1]["input"], schema)
    # after a tool_result the answer is text
    followup = {**body, "tool_choice": {"type": "auto"}, "messages": [*ANTHROPIC["messages"],
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                                   "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}]}
    _, answer = exchange(shared_mock.port, anthropic_post("/v1/messages", followup))
    assert answer["stop_reason"] != "tool_use" and answer["content"][0]["type"] == "text"


def test_anthropic_stop_sequences_through_the_official_sdk(shared_mock):
    import anthropic

    client = anthropic.Anthropic(base_url=shared_mock.url, api_key="mock-key")
    ask = {"model": "mock-llm", "max_tokens": 24, "messages": [{"role": "user", "content": "hi"}],
           "extra_body": {"seed": 7}}  # seed is the mock's own (repeatable answers)
    full = client.messages.create(**ask).content[0].text
    stop = full.split()[len(full.split()) // 2]
    message = client.messages.create(**ask, stop_sequences=[stop, "never-in-the-output"])
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", stop)
    assert stop not in message.content[0].text and full.startswith(message.content[0].text)
    with client.messages.stream(**ask, stop_sequences=[stop]) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", stop)
    assert final.content[0].text == message.content[0].text


def test_a_client_that_stops_reading_is_cut_off_and_frees_its_slot(start_mock):
    mock = start_mock("--ttft-ms", "20", "--itl-ms", "0", "--max-num-seqs", "1", "--write-timeout-s", "1")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once: the mock's writes block
    sock.settimeout(10)
    sock.connect(("127.0.0.1", mock.port))
    started = time.monotonic()
    sock.sendall(post(mock.port, json.dumps({**CHAT, "stream": True, "max_tokens": 100_000,
                                             "ignore_eos": True}).encode()))
    deadline = time.monotonic() + 20
    while health(mock.port)["running"] and time.monotonic() < deadline:  # never reads a byte
        gevent.sleep(0.2)
    assert health(mock.port)["running"] == 0
    assert 1 <= time.monotonic() - started < 15
    live = sse_probe.request(mock.port, {**CHAT, "stream": True}, timeout=30)  # the slot is free
    assert live.status == 200 and live.complete
    sock.close()
    assert "Traceback" not in "".join(mock.stderr_lines)
