"""Response-conditioned multi-turn conversations, time to second token and client-side cancellation,
with real `tokenstorm run`/Locust processes against the mock (--jitter 0) and a recording server."""

from __future__ import annotations

import itertools
import json
import socket

import pandas as pd
import pytest
from hostile_server import HostileServer, chunk, delta, sse
from locust_procs import free_port, run, start_master, start_worker, stop_all, wait_until
from mock_metrics import mock_lag_bound_ms, mock_lag_buckets, running_streams

from analysis.stats import load_records
from tokenstorm.client.scenario import ScenarioError, load_scenario
from tokenstorm.core.tokenizer import count_chat_prompt, count_tokens

HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n")


def scenario(tmp_path, conversation: str = "", cancel: str = "", max_tokens: int = 8,
             first: str = "Tell me about the sea.") -> str:
    path = tmp_path / "scenario.yaml"
    path.write_text(f"""
name: mt
headers: {{Authorization: "Bearer ${{OPENAI_API_KEY}}"}}
body:
  model: mock-llm
  stream: true
  stream_options: {{include_usage: true}}
  max_tokens: {max_tokens}
  messages: [{{role: user, content: "{first}"}}]
{conversation}
{cancel}
seed: 7
""")
    return str(path)


def by_conversation(records: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {cid: frame.sort_values("turn") for cid, frame in records.groupby("conversation_id")}


# -- the history sent is the server's actual answers ----------------------------------------
class Recorder:
    """Answers request n with the words answer-n-0 .. answer-n-3 and keeps every request body."""

    def __init__(self, server) -> None:
        self.server = server
        self.answers: list[str] = []

    def script(self, n: int):
        words = [f" answer-{n}-{i}" for i in range(4)]
        self.answers.append("".join(words))
        parts = [HEAD] + [chunk(sse(delta(w))) for w in words] + [chunk(sse(delta(finish="stop"))),
                                                                    chunk(sse(b"[DONE]")), b"0\r\n\r\n"]
        return parts


def test_each_turn_sends_back_the_servers_answers_of_the_previous_turns(tmp_path):
    srv = HostileServer()
    recorder = Recorder(srv)
    for n in range(9):
        srv.play(recorder.script(n))
    try:
        path = scenario(tmp_path, "conversation: {turns: 3, think_time_s: 0, user_turns: {texts: [again, more]}}")
        result = run("chat_stream.py", srv.url, "--scenario", path, "-u", "1", "-r", "1", "--total-requests", "6",
                     "--results-dir", str(tmp_path / "run"))
    finally:
        srv.close()
    assert result.returncode == 0, result.stderr[-2500:]
    bodies = [json.loads(b) for b in srv.bodies]
    assert len(bodies) == 6
    records = load_records(tmp_path / "run").sort_values("t_start")
    assert records["turn"].tolist() == [1, 2, 3, 1, 2, 3], records[["conversation_id", "turn"]]
    assert records["conversation_id"].nunique() == 2 and (records["status"] == "ok").all()
    for start in (0, 3):  # two conversations of three turns, one request after the other (one user)
        history = [{"role": "user", "content": "Tell me about the sea."}]
        assert bodies[start]["messages"] == history
        for k in (1, 2):
            history += [{"role": "assistant", "content": recorder.answers[start + k - 1]},
                        {"role": "user", "content": ["again", "more"][k - 1]}]  # turn k+1: texts[k-1]
            assert bodies[start + k]["messages"] == history
    rows = (tmp_path / "run" / "conversations-local.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",3,0,turns," in row for row in rows[1:]), rows


# -- against the mock: context growth, think time, TTST, ids over workers -------------------
ITL_MS, TTFT_MS, THINK_S, USER_TOKENS = 20, 40, 0.3, 12


def test_multi_turn_against_the_mock(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", str(TTFT_MS), "--itl-ms", str(ITL_MS), "--jitter", "0")
    lag_before = mock_lag_buckets(mock)
    path = scenario(tmp_path, f"conversation: {{turns: 3, think_time_s: {THINK_S}, "
                              f"user_turns: {{tokens: {USER_TOKENS}}}}}")
    result = run("chat_stream.py", mock.url, "--scenario", path, "-u", "2", "-r", "2", "--total-requests", "12",
                 "--results-dir", str(tmp_path / "run"), "--full-report")
    assert result.returncode == 0, result.stderr[-2500:]
    records = load_records(tmp_path / "run")
    assert len(records) == 12 and (records["status"] == "ok").all(), records["error"].tolist()
    # what one more turn adds to the prompt: the answer's and the user's tokens and two message overheads
    one = [{"role": "user", "content": "x"}]
    overhead = count_chat_prompt([*one, *one, *one]) - count_chat_prompt(one) - 2 * count_tokens("x")
    conversations = by_conversation(records)
    assert len(conversations) == 4
    for cid, turns in conversations.items():
        assert turns["turn"].tolist() == [1, 2, 3], cid
        rows = turns.to_dict("records")
        for prev, nxt in itertools.pairwise(rows):
            grown = nxt["input_tokens"] - prev["input_tokens"]
            assert grown == prev["output_tokens"] + USER_TOKENS + overhead, (cid, prev, nxt)
            think = nxt["t_start"] - (prev["t_start"] + prev["total_ms"] / 1000)
            assert THINK_S - 0.005 <= think <= THINK_S + 0.25, (cid, think)
    # time to second token: the mock sends it at its absolute deadline, TTFT + one ITL after the request
    # (a late first token does not move it), late by at most the mock's own measured lag
    second = records["ttst_ms"]
    assert (second > records["ttft_ms"]).all()
    late = mock_lag_bound_ms(lag_before, mock_lag_buckets(mock))
    assert TTFT_MS + ITL_MS - 1 <= second.median() <= TTFT_MS + ITL_MS + 3 + late, (second.tolist(), late)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## TTFT by turn" in report and "| TTST (ms) | 12 |" in report
    assert (tmp_path / "run" / "plots" / "by_turn.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())["summary"]
    by_turn = {r["turn"]: r for r in summary["by_turn"]}
    assert [by_turn[t]["requests"] for t in (1, 2, 3)] == [4, 4, 4]
    assert by_turn[1]["input_tokens_mean"] < by_turn[2]["input_tokens_mean"] < by_turn[3]["input_tokens_mean"]


def test_conversation_ids_are_unique_over_two_workers(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "10", "--itl-ms", "2", "--jitter", "0")
    path = scenario(tmp_path, "conversation: {turns: 3, think_time_s: 0.01, user_turns: {tokens: 5}}")
    port = free_port()
    master = start_master(mock.url, port, 2, "-u", "4", "-r", "4", "--total-requests", "36", "--scenario", path,
                          "--results-dir", str(tmp_path))
    workers = [start_worker(port) for _ in range(2)]
    try:
        _, err = master.communicate(timeout=120)
    finally:
        stop_all(master, *workers)
    assert master.returncode == 0, err[-3000:]
    records = load_records(tmp_path)
    assert len(records) == 36 and (records["status"] == "ok").all()
    assert sorted(records["worker_id"].unique()) == ["w0", "w1"]
    conversations = by_conversation(records)
    for cid, turns in conversations.items():
        assert turns["worker_id"].nunique() == 1 and cid.startswith(turns["worker_id"].iloc[0] + "-"), cid
        assert turns["turn"].tolist() == list(range(1, len(turns) + 1)), cid  # one id, one conversation
    rows = pd.concat([pd.read_csv(f) for f in tmp_path.glob("conversations-*.csv")])
    assert rows["conversation_id"].is_unique and set(rows["conversation_id"]) == set(conversations)
    assert rows["turns"].sum() == 36


def test_tool_agent_turns_carry_their_conversation(start_mock, tmp_path):
    mock = start_mock("--config", "deterministic", "--ttft-ms", "5", "--itl-ms", "1")
    from tokenstorm.core.assets import assets_dir

    result = run("tool_agent.py", mock.url, "--scenario", str(assets_dir() / "configs/scenarios/tool-agent.yaml"),
                 "-u", "2", "-r", "2", "--total-requests", "10", "--results-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-2500:]
    records = load_records(tmp_path / "run")
    rows = pd.read_csv(tmp_path / "run" / "conversations-local.csv")
    assert records["conversation_id"].notna().all() and set(records["conversation_id"]) == set(rows["conversation_id"])
    for cid, turns in by_conversation(records).items():
        assert turns["turn"].tolist() == list(range(1, len(turns) + 1)), cid
        assert rows.loc[rows["conversation_id"] == cid, "turns"].item() == len(turns)


# -- client-side cancellation ---------------------------------------------------------------
def test_cancelled_share_tokens_and_report(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "10", "--itl-ms", "2", "--jitter", "0")
    path = scenario(tmp_path, cancel="cancel: {share: 0.3, after_tokens: 3}", max_tokens=12)
    cancelled = []
    for attempt in ("a", "b"):  # the same seed cancels the same requests
        result = run("chat_stream.py", mock.url, "--scenario", path, "-u", "1", "-r", "1", "--total-requests",
                     "80", "--results-dir", str(tmp_path / attempt), "--full-report")
        assert result.returncode == 0, result.stderr[-2500:]
        records = load_records(tmp_path / attempt)
        cut = records[records["error_type"] == "client_cancelled"]
        cancelled.append(sorted(cut["request_id"]))
        # binomial(80, 0.3): mean 24, sd 4.1; +-4 sd
        assert 8 <= len(cut) <= 40, len(cut)
        assert (cut["chunks"] == 3).all() and (cut["output_tokens"] == 3).all(), cut[["chunks", "output_tokens"]]
        rest = records[records["error_type"] != "client_cancelled"]
        assert (rest["status"] == "ok").all() and (rest["output_tokens"] == 12).all()
        summary = json.loads((tmp_path / attempt / "summary.json").read_text())["summary"]
        assert summary["failed"] == 0 and summary["failure_ratio"] == 0 and summary["client_cancelled"] == len(cut)
        assert summary["metrics"]["ttft_ms"]["count"] == 80  # their first tokens count
        assert summary["metrics"]["e2e_ms"]["count"] == summary["metrics"]["tpot_ms"]["count"] == 80 - len(cut)
        report = (tmp_path / attempt / "report.md").read_text()
        assert f"{len(cut)} cancelled by the client (scenario)" in report and "0 failed" in report
        assert f"cancelled by the client (scenario) {len(cut)}" in result.stdout + result.stderr
    assert cancelled[0] == cancelled[1]


def test_the_mock_frees_the_slot_of_a_stream_the_client_cancels(start_mock, tmp_path):
    mock = start_mock("--ttft-ms", "10", "--itl-ms", "50", "--jitter", "0")  # 400 tokens: a 20 s stream
    path = scenario(tmp_path, cancel="cancel: {share: 1.0, after_tokens: 1}", max_tokens=400)
    result = run("chat_stream.py", mock.url, "--scenario", path, "-u", "2", "-r", "2", "--total-requests", "4",
                 "--results-dir", str(tmp_path / "run"), timeout=60)
    assert result.returncode == 0, result.stderr[-2500:]
    records = load_records(tmp_path / "run")
    assert (records["error_type"] == "client_cancelled").all() and (records["output_tokens"] == 1).all()
    assert (records["total_ms"] < 2000).all()
    wait_until(lambda: running_streams(mock) == 0, "the mock to free the cancelled streams' slots", timeout=5)


# -- bad scenario keys: one line, before any load --------------------------------------------
@pytest.mark.parametrize(("extra", "needle"), [
    ("conversation: {turns: 0}", "conversation.turns: Input should be greater than or equal to 1"),
    ("conversation: {turns: 2, think_time_s: -1}", "conversation.think_time_s.mean: Input should be greater"),
    ("conversation: {turns: 2, user_turns: {tokens: 3, texts: [a]}}", "give exactly one of `tokens`"),
    ("cancel: {share: 1.5}", "cancel.share: Input should be less than or equal to 1"),
    ("cancel: {share: 0.5, after_tokens: 0}", "cancel.after_tokens: Input should be greater than or equal to 1"),
    ("conversation: {turns: 2}\nagent: {max_turns: 2}", "`conversation` and `agent`"),
])
def test_bad_conversation_and_cancel_keys(tmp_path, extra, needle):
    with pytest.raises(ScenarioError) as info:
        load_scenario(scenario(tmp_path, extra), env={"OPENAI_API_KEY": "k"})
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_conversation_scenario_refuses_an_open_loop(tmp_path):
    result = run("chat_stream.py", "http://127.0.0.1:9", "--scenario", scenario(tmp_path, "conversation: {turns: 2}"),
                 "--arrival-rate", "5", "--total-requests", "2", timeout=60)
    assert result.returncode != 0 and "`conversation` runs closed loop" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_key_stops_the_run_before_any_load(tmp_path):
    with socket.socket() as listener:  # nothing may connect: the run must stop before sending
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        result = run("chat_stream.py", url, "--scenario", scenario(tmp_path, "cancel: {share: 2}"),
                     "--total-requests", "2", timeout=60)
        listener.settimeout(0.1)
        with pytest.raises(TimeoutError):
            listener.accept()
    assert result.returncode != 0 and "cancel.share" in result.stderr and "Traceback" not in result.stderr
