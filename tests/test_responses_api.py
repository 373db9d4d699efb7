"""OpenAI's Responses API: the official openai SDK against the real mock, then tokenstorm's load
client (a real `tokenstorm run`) against it: timings, usage, in-band errors and cut streams."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import openai
import pytest

from tokenstorm.client.scenario import prompt_tokens
from tokenstorm.core.tokenizer import count_tokens

ROOT = Path(__file__).resolve().parent.parent
WEATHER = {
    "type": "function", "name": "get_weather", "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
        },
        "required": ["city", "unit", "days", "tags"],
    },
}
INPUT = [{"role": "user", "content": "Tell me something."}]


@pytest.fixture(scope="module")
def client(shared_mock):
    return openai.OpenAI(base_url=shared_mock.base_url, api_key="mock-key", max_retries=0, timeout=30)


# -- the official SDK ------------------------------------------------------------------------
def test_stream_helper_text_sequence_and_final_usage(client):
    with client.responses.stream(model="mock-llm", input=INPUT) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert len(deltas) == 24 and kinds.count("response.output_text.delta") == 24
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(d.delta for d in deltas)
    assert deltas[-1].snapshot == text == final.output_text
    assert {d.item_id for d in deltas} == {final.output[0].id}
    assert final.id == events[0].response.id and final.id.startswith("resp_")
    assert final.status == "completed"
    assert final.usage.output_tokens == count_tokens(text) == 24
    assert final.usage.input_tokens == prompt_tokens({"input": INPUT})  # counted as the client counts
    assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens


def test_create_stream_true_raw_events_and_string_input(client):
    events = list(client.responses.create(model="mock-llm", input="Tell me something.", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage.input_tokens == prompt_tokens({"input": "Tell me something."}) \
        == prompt_tokens({"input": INPUT})


@pytest.mark.parametrize("summary", [None, "auto"])
def test_reasoning_items_come_first_and_count_in_usage(client, summary):
    reasoning = {"effort": "low", **({"summary": summary} if summary else {})}
    with client.responses.stream(model="mock-reasoner", input=INPUT, reasoning=reasoning) as stream:
        events = list(stream)
        final = stream.get_final_response()
    delta_kind = "response.reasoning_summary_text.delta" if summary else "response.reasoning_text.delta"
    reasoning_deltas = [e.delta for e in events if e.type == delta_kind]
    text_deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(reasoning_deltas) == 64 and len(text_deltas) == 24
    kinds = [e.type for e in events]
    assert kinds.index(delta_kind) < kinds.index("response.output_item.done") < kinds.index(
        "response.output_text.delta")
    assert [item.type for item in final.output] == ["reasoning", "message"]
    item = final.output[0]
    part = item.summary[0] if summary else item.content[0]
    assert part.text == "".join(reasoning_deltas)
    assert final.usage.output_tokens_details.reasoning_tokens == 64
    assert final.usage.output_tokens == 64 + 24 == count_tokens("".join(reasoning_deltas)) + count_tokens(
        "".join(text_deltas))


def test_function_call_arguments_parse_and_match_the_schema(client):
    with client.responses.stream(model="mock-llm", input=INPUT, tools=[WEATHER], tool_choice="required") as stream:
        events = list(stream)
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id.startswith("call_")
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert "".join(pieces) == calls[0].arguments and len(pieces) > 3
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER["parameters"])
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done[0].arguments == calls[0].arguments
    # the agent loop's next turn: the function's output, then the model answers in text
    follow = client.responses.create(model="mock-llm", tools=[WEATHER], input=INPUT + [
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"temp": 21}'}])
    assert follow.output_text and [item.type for item in follow.output] == ["message"]


def test_non_streaming_create_and_max_output_tokens_incomplete(client):
    full = client.responses.create(model="mock-llm", input=INPUT, extra_body={"seed": 7})
    events = client.responses.create(model="mock-llm", input=INPUT, extra_body={"seed": 7}, stream=True)
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert full.object == "response" and full.status == "completed" and full.output_text == streamed
    assert full.usage.output_tokens == count_tokens(streamed)
    capped = client.responses.create(model="mock-llm", input=INPUT, max_output_tokens=5)
    assert capped.status == "incomplete" and capped.incomplete_details.reason == "max_output_tokens"
    assert capped.usage.output_tokens == 5 == count_tokens(capped.output_text)
    events = list(client.responses.create(model="mock-llm", input=INPUT, max_output_tokens=5, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert sum(e.type == "response.output_text.delta" for e in events) == 5


def test_bad_requests_are_bad_request_errors_with_one_line_messages(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="mock-llm", input=[{"role": "user"}])
    assert "input.0" in info.value.message and "`role` and `content`" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="mock-llm", input="x", max_output_tokens="5")  # type: ignore[arg-type]
    assert "max_output_tokens" in info.value.message and "\n" not in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="mock-llm", input="x", tools=[{"type": "web_search"}])  # type: ignore[list-item]
    assert "tools.0.type" in info.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="x")


def test_mid_stream_error_fault_is_an_error_event_then_response_failed(client):
    events = list(client.responses.create(model="mock-llm", input=INPUT, stream=True, extra_headers={
        "X-Mock-Fault": "error_event", "X-Mock-Fault-After": "3"}))
    kinds = [e.type for e in events]
    assert kinds.count("response.output_text.delta") == 3
    assert kinds[-2:] == ["error", "response.failed"]
    assert "injected by the mock" in events[-2].message
    assert events[-1].response.status == "failed" and events[-1].response.error.code == "server_error"
