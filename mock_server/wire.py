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
    """Bytes of every SSE event of one streamed response (chat or legacy completion)."""

    def __init__(self, response_id: str, created: int, model: str, include_usage: bool, chat: bool):
        self.chat = chat
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

    def role(self) -> bytes:
        return self._choice({"index": 0, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None})

    def content(self, delta_json: bytes) -> bytes:
        return self._content + delta_json + self._delta_end

    def reasoning(self, delta_json: bytes) -> bytes:
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

    def malformed(self) -> bytes:
        """A data event whose JSON is cut off: what a broken proxy or server emits."""
        return self._head + b'{"index":0,"delta":{"content":"unterminated\n\n'


def error_event(message: str, type_: str = "server_error", code: str | None = "internal_error") -> bytes:
    return b"data: " + error_body(message, type_, code) + b"\n\n"


def usage_dict(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int) -> dict:
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    if reasoning_tokens:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return usage
