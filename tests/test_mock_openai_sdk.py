"""The official openai SDK against a real mock process: the mock speaks the wire format."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tokenstorm.core.tokenizer import count_tokens

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "details": {"type": "object", "properties": {"wind": {"type": "boolean"}},
                            "required": ["wind"]},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
            },
            "required": ["city", "unit", "days", "details", "tags"],
        },
    },
}
SEARCH = {"type": "function", "function": {"name": "search_docs", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "number"}},
    "required": ["query"]}}}
MESSAGES = [{"role": "user", "content": "Tell me something."}]


@pytest.fixture(scope="module")
def client(shared_mock):
    return openai.OpenAI(base_url=shared_mock.base_url, api_key="mock-key", max_retries=0, timeout=30)


def test_streamed_content_and_usage_match_the_tokenizer(client):
    stream = client.chat.completions.create(model="mock-llm", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True}, max_tokens=50)
    chunks = list(stream)
    ids = {c.id for c in chunks}
    created = {c.created for c in chunks}
    assert len(ids) == 1 and len(created) == 1
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    text = "".join(c.choices[0].delta.content for c in content_chunks)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    assert all(c.usage is None for c in chunks[:-1])
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage.completion_tokens == count_tokens(text) == len(content_chunks) == 24
    assert usage.prompt_tokens > 0 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_non_stream_answer_matches_the_stream_for_the_same_seed(client):
    kwargs = dict(model="mock-llm", messages=MESSAGES, seed=42, max_tokens=200)
    full = client.chat.completions.create(**kwargs)
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       client.chat.completions.create(stream=True, **kwargs) if c.choices)
    assert full.object == "chat.completion"
    assert full.choices[0].message.content == streamed
    assert full.usage.completion_tokens == count_tokens(streamed)
    again = client.chat.completions.create(**kwargs)
    assert again.choices[0].message.content == full.choices[0].message.content
    other = client.chat.completions.create(**{**kwargs, "seed": 43})
    assert other.choices[0].message.content != full.choices[0].message.content


def test_max_tokens_caps_output_and_ignore_eos_fills_it(client):
    capped = client.chat.completions.create(model="mock-llm", messages=MESSAGES, max_tokens=5)
    assert capped.choices[0].finish_reason == "length"
    assert capped.usage.completion_tokens == 5 == count_tokens(capped.choices[0].message.content)
    filled = client.chat.completions.create(model="mock-llm", messages=MESSAGES, max_tokens=300,
                                            extra_body={"ignore_eos": True})
    assert filled.choices[0].finish_reason == "length"
    assert filled.usage.completion_tokens == 300 == count_tokens(filled.choices[0].message.content)


def test_stream_helper_accumulates_tool_calls_with_schema_valid_arguments(client):
    with client.chat.completions.stream(model="mock-llm", messages=MESSAGES, tools=[WEATHER],
                                        tool_choice="required", stream_options={"include_usage": True}) as s:
        for _ in s:
            pass
        final = s.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function" and call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    expected = count_tokens("get_weather") + count_tokens(call.function.arguments)
    assert final.usage.completion_tokens == expected


def test_parallel_tool_calls_use_distinct_indexes_and_never_repeat_ids(start_mock):
    mock = start_mock("--config", "deterministic")
    raw = openai.OpenAI(base_url=mock.base_url, api_key="mock-key", max_retries=0)
    seen_many = False
    for seed in range(12):
        chunks = list(raw.chat.completions.create(model="mock-llm", messages=MESSAGES, tools=[WEATHER, SEARCH],
                                                  tool_choice="required", stream=True, seed=seed))
        fragments = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        firsts = [f for f in fragments if f.id]
        assert [f.index for f in firsts] == list(range(len(firsts)))
        assert all(f.function.name for f in firsts)
        assert all(f.id is None and f.function.name is None for f in fragments if f not in firsts)
        seen_many |= len(firsts) > 1
        for index in range(len(firsts)):
            args = "".join(f.function.arguments or "" for f in fragments if f.index == index)
            json.loads(args)
    assert seen_many, "the deterministic profile allows parallel calls; none were made in 12 tries"


def test_named_tool_choice_and_agent_loop_ending_in_text(client):
    first = client.chat.completions.create(
        model="mock-llm", messages=MESSAGES, tools=[WEATHER, SEARCH],
        tool_choice={"type": "function", "function": {"name": "search_docs"}})
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "search_docs"
    follow_up = [*MESSAGES, first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "three results"}]
    second = client.chat.completions.create(model="mock-llm", messages=follow_up, tools=[WEATHER, SEARCH])
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content
    none = client.chat.completions.create(model="mock-llm", messages=MESSAGES, tools=[WEATHER], tool_choice="none")
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason == "stop"


def test_legacy_function_call(client):
    stream = client.chat.completions.create(model="mock-llm", messages=MESSAGES, stream=True,
                                            functions=[WEATHER["function"]], function_call={"name": "get_weather"})
    chunks = list(stream)
    parts = [c.choices[0].delta.function_call for c in chunks if c.choices and c.choices[0].delta.function_call]
    assert parts[0].name == "get_weather" and all(p.name is None for p in parts[1:])
    jsonschema.validate(json.loads("".join(p.arguments for p in parts)), WEATHER["function"]["parameters"])
    assert chunks[-1].choices[0].finish_reason == "function_call"


def test_reasoning_model_streams_reasoning_content_first(client):
    chunks = list(client.chat.completions.create(model="mock-reasoner", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True}))
    kinds = []
    for c in chunks:
        if c.choices:
            extra = c.choices[0].delta.model_extra or {}
            if extra.get("reasoning_content"):
                kinds.append("r")
            elif c.choices[0].delta.content:
                kinds.append("c")
    assert kinds == ["r"] * 64 + ["c"] * 24
    usage = chunks[-1].usage
    assert usage.completion_tokens == 88 and usage.completion_tokens_details.reasoning_tokens == 64


def test_legacy_completions_stream_and_non_stream(client):
    full = client.completions.create(model="mock-llm", prompt="Once upon a time", max_tokens=10)
    assert full.object == "text_completion" and full.choices[0].finish_reason == "length"
    assert full.usage.completion_tokens == 10 == count_tokens(full.choices[0].text)
    assert full.usage.prompt_tokens == count_tokens("Once upon a time")
    chunks = list(client.completions.create(model="mock-llm", prompt="Hi", max_tokens=10, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert count_tokens(text) == chunks[-1].usage.completion_tokens == 10


def test_models_list_and_retrieve(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["mock-llm", "mock-reasoner"]
    assert client.models.retrieve("mock-llm").id == "mock-llm"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-nonexistent")


def test_chinese_output_holds_back_split_characters(start_mock):
    mock = start_mock("--language", "zh", "--itl-ms", "0", "--ttft-ms", "0", "--output-tokens", "400")
    c = openai.OpenAI(base_url=mock.base_url, api_key="mock-key", max_retries=0)
    chunks = list(c.chat.completions.create(model="mock-llm", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True}))
    deltas = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert all("\ufffd" not in d for d in deltas)
    text = "".join(deltas)
    assert count_tokens(text) == chunks[-1].usage.completion_tokens == 400
    assert len(deltas) < 400  # some tokens carry part of a character: sent with the next token


@pytest.mark.parametrize(("fault", "exc_class", "status"), [
    ("http_429", openai.RateLimitError, 429),
    ("http_500", openai.InternalServerError, 500),
    ("http_503", openai.InternalServerError, 503),
])
def test_injected_http_errors_map_to_sdk_exceptions(client, fault, exc_class, status):
    with pytest.raises(exc_class) as info:
        client.chat.completions.create(model="mock-llm", messages=MESSAGES, stream=True,
                                       extra_headers={"X-Mock-Fault": fault})
    assert info.value.status_code == status
    assert info.value.body["message"]
    if status == 429:
        assert int(info.value.response.headers["retry-after-ms"]) >= 1
        assert int(info.value.response.headers["retry-after"]) >= 1


def test_auth_bad_request_and_unknown_model_errors(shared_mock, client):
    bad_key = openai.OpenAI(base_url=shared_mock.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad_key.chat.completions.create(model="mock-llm", messages=MESSAGES)
    assert info.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="mock-llm", messages=[])
    assert info.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="mock-llm", messages=MESSAGES, temperature=7)
    assert "temperature" in info.value.message
