"""OpenAI wire format: SSE chunks, response bodies and error bodies, as bytes.

Streaming a token is the hot path: each Chunks object precomputes the bytes around the
delta once per request, so a content chunk is three byte strings joined.
"""

from __future__ import annotations

import json
import os

DONE = b"data: [DONE]\n\n"
SYSTEM_FINGERPRINT = "fp_tokenstorm_mock"


def new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class Chunks:
    """Bytes of every SSE event of one OpenAI streamed response (chat or legacy completion).

    Every stream builder has the same interface: opening() (sent with the headers), content(),
    reasoning(), the tool-call pieces, tail(finish_reason, usage), error(), malformed().
    """

    def __init__(self, response_id: str, created: int, model: str, include_usage: bool, chat: bool):
        self.chat = chat
        self.include_usage = include_usage
        obj = "chat.completion.chunk" if chat else "text_completion"
        head = (f'{{"id":"{response_id}","object":"{obj}","created":{created},'
                f'"model":{json.dumps(model)},"system_fingerprint":"{SYSTEM_FINGERPRINT}","choices":[')
        tail = ',"usage":null}' if include_usage else "}"
        self._head = b"data: " + head.encode()
        self._tail = tail.encode() + b"\n\n"
        self._usage_head = b"data: " + head.encode() + b'],"usage":'
        if chat:
            self._content = self._head + b'{"index":0,"delta":{"content":'
            self._reasoning = self._head + b'{"index":0,"delta":{"reasoning_content":'
            self._delta_end = b'},"logprobs":null,"finish_reason":null}]' + self._tail
        else:
            self._content = self._head + b'{"index":0,"text":'
            self._delta_end = b',"logprobs":null,"finish_reason":null}]' + self._tail

    def _choice(self, choice: dict) -> bytes:
        return self._head + _dumps(choice) + b"]" + self._tail

    def opening(self) -> bytes:
        """The role-only first chunk (chat); legacy completions have none."""
        if not self.chat:
            return b""
        return self._choice({"index": 0, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None})

    def content(self, delta_json: bytes) -> bytes:
        return self._content + delta_json + self._delta_end

    def reasoning(self, delta_json: bytes) -> bytes:
        if not self.chat:
            return self.content(delta_json)
        return self._reasoning + delta_json + self._delta_end

    def tool_call_start(self, index: int, call_id: str, name: str) -> bytes:
        call = {"index": index, "id": call_id, "type": "function",
                "function": {"name": name, "arguments": ""}}
        return self._choice({"index": 0, "delta": {"tool_calls": [call]}, "logprobs": None,
                             "finish_reason": None})

    def tool_call_arguments(self, index: int, piece: str) -> bytes:
        call = {"index": index, "function": {"arguments": piece}}
        return self._choice({"index": 0, "delta": {"tool_calls": [call]}, "logprobs": None,
                             "finish_reason": None})

    def function_call_start(self, name: str) -> bytes:
        return self._choice({"index": 0, "delta": {"function_call": {"name": name, "arguments": ""}},
                             "logprobs": None, "finish_reason": None})

    def function_call_arguments(self, piece: str) -> bytes:
        return self._choice({"index": 0, "delta": {"function_call": {"arguments": piece}},
                             "logprobs": None, "finish_reason": None})

    def finish(self, reason: str) -> bytes:
        if self.chat:
            return self._choice({"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason})
        return self._choice({"index": 0, "text": "", "logprobs": None, "finish_reason": reason})

    def usage(self, usage: dict) -> bytes:
        return self._usage_head + _dumps(usage) + b"}\n\n"

    def tail(self, reason: str, usage: dict, stop_sequence: str | None = None) -> bytes:
        """finish_reason, the usage chunk when asked for, [DONE]."""
        return self.finish(reason) + (self.usage(usage) if self.include_usage else b"") + DONE

    @staticmethod
    def error(message: str) -> bytes:
        return b"data: " + error_body(message, "server_error", "internal_error") + b"\n\n"

    def malformed(self) -> bytes:
        """A data event whose JSON is cut off: what a broken proxy or server emits."""
        return self._head + b'{"index":0,"delta":{"content":"unterminated\n\n'


def usage_dict(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int,
               cached_tokens: int | None = None) -> dict:
    """OpenAI's usage; with the prefix cache on, prompt_tokens_details.cached_tokens (as OpenAI and vLLM)."""
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    if cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    if reasoning_tokens:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return usage


STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use"}


def anthropic_stop_reason(finish_reason: str, stop_sequence: str | None) -> str:
    """Anthropic's stop_reason: `stop_sequence` when one of the request's stop_sequences ended it."""
    return "stop_sequence" if stop_sequence is not None else STOP_REASONS.get(finish_reason, finish_reason)


def anthropic_error_body(message: str, type_: str) -> bytes:
    anthropic_type = {"invalid_request_error": "invalid_request_error", "server_error": "api_error",
                      "requests": "rate_limit_error", "rate_limit_error": "rate_limit_error"}.get(type_, type_)
    if "overloaded" in message.lower():
        anthropic_type = "overloaded_error"
    return json.dumps({"type": "error", "error": {"type": anthropic_type, "message": message}}).encode()


def anthropic_tool_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


def anthropic_input_usage(prompt_tokens: int, cached_tokens: int | None) -> dict:
    """Anthropic's input counts: input_tokens are the tokens not read from the cache, so the prompt is
    input_tokens + cache_read_input_tokens + cache_creation_input_tokens. The mock's cache is automatic
    (no cache_control writes are billed), so cache_creation_input_tokens is 0."""
    if cached_tokens is None:
        return {"input_tokens": prompt_tokens}
    return {"input_tokens": prompt_tokens - cached_tokens, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached_tokens}


class AnthropicChunks:
    """Anthropic Messages SSE: message_start, content blocks (thinking, text), message_delta, message_stop."""

    def __init__(self, response_id: str, model: str, input_tokens: int, cached_tokens: int | None = None):
        self._id, self._model, self._input = response_id, model, input_tokens
        self._cached = cached_tokens
        self._block = -1
        self._kind = ""

    @staticmethod
    def _event(name: str, payload: bytes) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"

    def opening(self) -> bytes:
        message = {"id": self._id, "type": "message", "role": "assistant", "content": [], "model": self._model,
                   "stop_reason": None, "stop_sequence": None,
                   "usage": {**anthropic_input_usage(self._input, self._cached), "output_tokens": 1}}
        return self._event("message_start", _dumps({"type": "message_start", "message": message}))

    def _switch(self, kind: str) -> bytes:
        if kind == self._kind:
            return b""
        out = self._stop_block()
        self._block += 1
        self._kind = kind
        block = {"type": "thinking", "thinking": ""} if kind == "thinking" else {"type": "text", "text": ""}
        return out + self._event("content_block_start", _dumps({"type": "content_block_start",
                                                                "index": self._block, "content_block": block}))

    def _stop_block(self) -> bytes:
        if self._block < 0:
            return b""
        return self._event("content_block_stop", b'{"type":"content_block_stop","index":%d}' % self._block)

    def _delta(self, kind: str, field: str, delta_json: bytes) -> bytes:
        return self._switch("thinking" if kind == "thinking_delta" else "text") + self._event(
            "content_block_delta", b'{"type":"content_block_delta","index":%d,"delta":{"type":"%s","%s":%s}}'
            % (self._block, kind.encode(), field.encode(), delta_json))

    def content(self, delta_json: bytes) -> bytes:
        return self._delta("text_delta", "text", delta_json)

    def reasoning(self, delta_json: bytes) -> bytes:
        return self._delta("thinking_delta", "thinking", delta_json)

    def tool_call_start(self, index: int, call_id: str, name: str) -> bytes:
        """A tool_use content block; its input follows as input_json_delta pieces."""
        out = self._stop_block()
        self._block += 1
        self._kind = f"tool_use:{index}"
        block = {"type": "tool_use", "id": anthropic_tool_id(call_id), "name": name, "input": {}}
        return out + self._event("content_block_start", _dumps({"type": "content_block_start",
                                                                "index": self._block, "content_block": block}))

    def tool_call_arguments(self, index: int, piece: str) -> bytes:
        return self._event("content_block_delta", _dumps({"type": "content_block_delta", "index": self._block,
                                                          "delta": {"type": "input_json_delta",
                                                                    "partial_json": piece}}))

    def tail(self, reason: str, usage: dict, stop_sequence: str | None = None) -> bytes:
        out = self._switch("text") if self._block < 0 else b""  # an empty answer still has a text block
        delta = {"type": "message_delta", "delta": {"stop_reason": anthropic_stop_reason(reason, stop_sequence),
                                                    "stop_sequence": stop_sequence},
                 "usage": {"output_tokens": usage["completion_tokens"]}}
        return (out + self._stop_block() + self._event("message_delta", _dumps(delta))
                + self._event("message_stop", b'{"type":"message_stop"}'))

    def error(self, message: str) -> bytes:
        return self._event("error", anthropic_error_body(message, "server_error"))

    def malformed(self) -> bytes:
        return self._event("content_block_delta", b'{"type":"content_block_delta","delta":{"text":"unterminated')


class RawChunks:
    """A plain chunked text stream: each token's text, nothing else (no SSE, no usage)."""

    @staticmethod
    def opening() -> bytes:
        return b""

    @staticmethod
    def content(delta_json: bytes) -> bytes:
        return json.loads(delta_json).encode()

    reasoning = content

    @staticmethod
    def tail(reason: str, usage: dict, stop_sequence: str | None = None) -> bytes:
        return b""

    @staticmethod
    def error(message: str) -> bytes:
        return b""

    @staticmethod
    def malformed() -> bytes:
        return b"\xff\xfe"  # not UTF-8
