"""Scenario files, data sources, response formats, tool agents and upstreams, against the real mock."""

from __future__ import annotations

import csv
import json
import statistics

import pytest
import sse_probe
from locust_procs import run
from mock_metrics import chat_requests_seen

from analysis.stats import load_records
from tokenstorm.client.datasets import Synthetic
from tokenstorm.core.tokenizer import count_tokens
from tokenstorm.mockproc import ROOT

SCENARIOS = ROOT / "configs" / "scenarios"
@pytest.mark.parametrize("name", ["openai-chat-mock", "csv-driven", "conversations", "long-context", "reasoning",
                                  "anthropic", "raw-stream", "openai-responses", "prefix-cache"])
def test_every_scenario_runs_against_the_mock(start_mock, tmp_path, name):
    mock = start_mock("--ttft-ms", "10", "--itl-ms", "1", "--output-tokens", "1000")  # max_tokens decides
    result = run("chat_stream.py", mock.url, "--scenario", str(SCENARIOS / f"{name}.yaml"), "-u", "3", "-r", "3",
                 "--total-requests", "9", "--results-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2500:]
    records = load_records(tmp_path)
    assert len(records) == 9 and (records["status"] == "ok").all(), records["error"].tolist()
    assert (records["scenario"] == name).all()
    assert (records["output_tokens"] == records["output_tokens_tokenizer"]).all()
    expected_source = {"raw-stream": "tokenizer"}.get(name, "usage")
    assert (records["output_tokens_source"] == expected_source).all()
    expected_tokens = {"openai-chat-mock": 64, "csv-driven": 96, "conversations": 128, "reasoning": 256,
                       "anthropic": 80, "raw-stream": 48, "openai-responses": 64}
    if name in expected_tokens:  # each request's max_tokens, counted in the format's own way
        assert (records["output_tokens"] == expected_tokens[name]).all()
    if name == "raw-stream":
        assert records["output_tokens_usage"].isna().all()
    if name == "reasoning":
        # the first visible token is due after TTFT 10 ms + 64 reasoning tokens at 1 ms (the mock is never early)
        assert (records["reasoning_tokens"] == 64).all() and (records["ttfvt_ms"] >= 10 + 64 - 1).all()
        assert (records["ttfvt_ms"] > records["ttft_ms"]).all()
    if name == "anthropic":
        assert records["input_tokens"].notna().all()
    if name == "openai-responses":  # the mock counts the prompt as the client does (instructions, input)
        summary = count_tokens("Summarize the following notes.\n\n")
        assert records["input_tokens"].between(500 - 200 + summary, 500 + 200 + summary + 20).all()
        assert (records["finish_reason"] == "length").all()
    if name == "prefix-cache":  # a 1,500-token system prompt and the rest of ~2,000 (+ the chat framing)
        assert records["input_tokens"].between(1500 + 200, 2000 + 5 * 200).all()
    if name == "long-context":
        assert records["input_tokens"].between(2800, 5200).all()
        assert records["output_tokens"].between(40, 90).all()


def test_two_upstreams_split_three_to_one(start_mock, tmp_path):
    a, b = start_mock("--ttft-ms", "2", "--itl-ms", "0"), start_mock("--ttft-ms", "2", "--itl-ms", "0")
    result = run("chat_stream.py", None, "--scenario", str(SCENARIOS / "two-upstream.yaml"), "-r", "8",
                 "--results-dir", str(tmp_path), env={"UPSTREAM_A": a.url, "UPSTREAM_B": b.url})
    assert result.returncode == 0, result.stderr[-2500:]
    records = load_records(tmp_path)
    counts = records["upstream"].value_counts().to_dict()
    assert counts == {"primary": 300, "secondary": 100}  # smooth weighted round robin: exact
    assert chat_requests_seen(a) == 300 and chat_requests_seen(b) == 100
    assert "/v1/chat/completions [primary]" in result.stdout + result.stderr  # Locust's table
    assert "by upstream:\n  primary: 300 requests" in result.stdout  # the end-of-run report


def test_tool_agent_conversations(start_mock, tmp_path):
    log = tmp_path / "mock-requests.jsonl"
    mock = start_mock("--config", "deterministic", "--ttft-ms", "5", "--itl-ms", "1", "--log-requests", str(log))
    result = run("tool_agent.py", mock.url, "--scenario", str(SCENARIOS / "tool-agent.yaml"), "-u", "3", "-r", "3",
                 "--total-requests", "24", "--results-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-2500:]
    conversations = [line.split(",") for line in (tmp_path / "run" / "conversations-local.csv").read_text()
                     .splitlines()[1:]]
    finished = [c for c in conversations if c[7] != "quota"]
    assert finished and all(c[7] == "text" and 2 <= int(c[5]) <= 4 and int(c[6]) >= 1 for c in finished)
    records = load_records(tmp_path / "run")
    assert len(records) == 24 and (records["status"] == "ok").all()
    # what the agent sent back is what the model streamed: every assistant tool call in a
    # follow-up request matches, by id, the call the mock generated and logged
    generated, sent_back = {}, []
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        for call in entry["tool_calls"]:
            generated[call["id"]] = (call["name"], call["arguments"])
        for message in entry["body"]["messages"]:
            for call in message.get("tool_calls") or []:
                sent_back.append((call["id"], call["function"]["name"], call["function"]["arguments"]))
    assert sent_back
    for call_id, name, arguments in sent_back:
        assert generated[call_id] == (name, arguments)
        json.loads(arguments)


def test_templates_fill_every_placeholder_and_rows_cycle(start_mock, tmp_path):
    log = tmp_path / "mock-requests.jsonl"
    mock = start_mock("--ttft-ms", "1", "--itl-ms", "0", "--output-tokens", "3", "--log-requests", str(log))
    scenario = tmp_path / "s.yaml"
    scenario.write_text((SCENARIOS / "csv-driven.yaml").read_text().replace("shuffle: true", "shuffle: false"))
    result = run("chat_stream.py", mock.url, "--scenario", str(scenario), "-u", "1", "-r", "1",
                 "--total-requests", "28", "--results-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-2500:]
    sent = [json.loads(line)["body"]["messages"][0]["content"] for line in log.read_text().splitlines()]
    with open(ROOT / "data" / "prompts.csv", encoding="utf-8", newline="") as f:
        prompts = [row["prompt"] for row in csv.DictReader(f)]
    assert len(sent) == 28 and all("{{" not in s for s in sent)
    assert sent[:14] == sent[14:]  # 14 rows, 28 requests: every row twice, in file order
    assert [s.split("] ", 1)[1] for s in sent[:14]] == prompts
    assert sent[8].startswith("[zh] ")


@pytest.mark.parametrize(("change", "needle"), [
    ({"column: prompt": "column: question"}, "data: data/prompts.csv: no column 'question'"),
    ({"{{language}}": "{{lang}}"}, "body uses {{lang}}, which the data does not provide"),
    ({"Bearer ${OPENAI_API_KEY}": "Bearer ${NOT_SET_ANYWHERE}"},
     "headers.Authorization needs the environment variable NOT_SET_ANYWHERE, which is not set"),
    ({"encoding: utf-8": "encoding: ascii"}, "not readable as ascii"),
    ({"users: 8": "users: 8\nsurprise: 1"}, "surprise: Extra inputs are not permitted"),
    ({"max_tokens: 96": "max_tokens: 96\n  stream: true\n bad-indent"}, "not valid YAML"),
])
def test_bad_scenarios_fail_in_one_line_before_any_request(shared_mock, tmp_path, change, needle):
    text = (SCENARIOS / "csv-driven.yaml").read_text()
    for old, new in change.items():
        assert old in text
        text = text.replace(old, new)
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(text)
    before = chat_requests_seen(shared_mock)
    result = run("chat_stream.py", shared_mock.url, "--scenario", str(scenario), "-u", "1",
                 "--total-requests", "2", "--results-dir", str(tmp_path / "run"), timeout=60)
    assert result.returncode == 2, result.stdout[-500:] + result.stderr[-1500:]
    assert needle in result.stderr and f"scenario {scenario}" in result.stderr
    assert "Traceback" not in result.stderr
    assert chat_requests_seen(shared_mock) == before


def test_undecodable_data_file(shared_mock, tmp_path):
    data = tmp_path / "latin1.csv"
    data.write_bytes("prompt\ncaf\xe9 cr\xe8me\n".encode("latin-1"))
    scenario = tmp_path / "s.yaml"
    scenario.write_text((SCENARIOS / "csv-driven.yaml").read_text()
                        .replace("file: data/prompts.csv", f"file: {data}")
                        .replace("[{{language}}] ", ""))
    result = run("chat_stream.py", shared_mock.url, "--scenario", str(scenario), "-u", "1", "--total-requests", "1",
                 "--results-dir", str(tmp_path / "run"), timeout=60)
    assert result.returncode == 2 and f"{data}: not readable as utf-8" in result.stderr


def test_synthetic_prompts_have_the_requested_length():
    source = Synthetic(1000, 100, 200, 20, seed=5)
    rows = [source.next() for _ in range(1500)]
    measured = [count_tokens(r["prompt"]) for r in rows]
    assert measured == [r["input_tokens"] for r in rows]  # each prompt is exactly its drawn length
    assert abs(statistics.mean(measured) - 1000) < 50 and abs(statistics.stdev(measured) - 100) < 5
    outputs = [r["max_tokens"] for r in rows]
    assert abs(statistics.mean(outputs) - 200) < 10 and abs(statistics.stdev(outputs) - 20) < 1


def test_anthropic_format_failures_are_classified(start_mock):
    from tokenstorm.client.httpclient import Connection, Target
    from tokenstorm.client.stream import Timeouts, stream_request
    from tokenstorm.core.formats import AnthropicMessages
    from tokenstorm.core.records import Record

    mock = start_mock("--ttft-ms", "5", "--itl-ms", "1", "--config", "tests/data/mock-fast-stall.yaml")
    body = json.dumps({"model": "mock-llm", "max_tokens": 20, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    for fault, error_type in (("error_event", "sse_error"), ("truncate", "truncated"), ("http_429", "http_status")):
        conn = Connection(Target.parse(mock.url), 5)
        record = stream_request(conn, "/v1/messages", body, [("x-api-key", "mock-key"), ("X-Mock-Fault", fault)],
                                AnthropicMessages(), Timeouts(), Record())
        conn.close()
        assert record.error_type == error_type, (fault, record.error)
    error = sse_probe.request(mock.port, {"model": "mock-llm", "messages": []}, path="/v1/messages")
    assert json.loads(error.body)["type"] == "error"


@pytest.mark.parametrize(("scenario", "auth"), [("csv-driven", "Authorization"), ("anthropic", "x-api-key")])
def test_scenario_headers_without_a_key_header_still_send_the_key(start_mock, tmp_path, scenario, auth):
    """A scenario whose headers only add, say, a trace id must not drop the key from the environment."""
    mock = start_mock("--ttft-ms", "2", "--itl-ms", "0")
    text = (SCENARIOS / f"{scenario}.yaml").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().lower().startswith(auth.lower() + ":")]
    (tmp_path / "s.yaml").write_text("\n".join(lines).replace("headers:", "headers:\n  X-Trace-Id: load-test", 1))
    key_env = "OPENAI_API_KEY" if auth == "Authorization" else "ANTHROPIC_API_KEY"
    result = run("chat_stream.py", mock.url, "--scenario", str(tmp_path / "s.yaml"), "-u", "1", "--total-requests",
                 "3", "--api-key-env", key_env, "--results-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-1500:]
    records = load_records(tmp_path / "run")
    assert len(records) == 3 and (records["status"] == "ok").all(), records["error"].tolist()
