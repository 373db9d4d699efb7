"""Response formats: turn one decoded SSE event into output, finish, usage or error facts.

A format never times anything: it tells the StreamAccount what an event carried and the
account stamps it with the event's arrival time. Adding a wire format (Anthropic, raw text
streams...) means adding a small class here, not another accounting.
"""

from __future__ import annotations

import json
from typing import Protocol


class Account(Protocol):
    def output(self, t: float, text: str, visible: bool) -> None: ...
    def finish(self, reason: str) -> None: ...
    def usage(self, prompt_tokens: int | None, completion_tokens: int | None,
              reasoning_tokens: int | None = None) -> None: ...
    def fail(self, error_type: str, message: str) -> None: ...
    def done(self) -> None: ...


class Format(Protocol):
    name: str

    def handle(self, event: str, data: bytes, t: float, account: Account) -> None: ...


def _error_message(error: object) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or error)
    return str(error)


def _usage(obj: dict, account: Account) -> None:
    usage = obj.get("usage")
    if isinstance(usage, dict):
        details = usage.get("completion_tokens_details") or {}
        account.usage(usage.get("prompt_tokens"), usage.get("completion_tokens"),
                      details.get("reasoning_tokens") if isinstance(details, dict) else None)


def _decode(event: str, data: bytes, account: Account) -> dict | None:
    """The event's JSON object, or None after reporting [DONE], an error or a malformed chunk."""
    if data == b"[DONE]":
        account.done()
        return None
    try:
        obj = json.loads(data)
    except ValueError:
        account.fail("malformed", f"chunk is not valid JSON: {data[:80]!r}")
        return None
    if not isinstance(obj, dict):
        account.fail("malformed", f"chunk is not a JSON object: {data[:80]!r}")
        return None
    if event == "error" or obj.get("error"):
        account.fail("sse_error", _error_message(obj.get("error", obj)))
        return None
    return obj


class OpenAIChat:
    """`chat.completion.chunk` events: content, reasoning_content/reasoning, tool_calls, function_call."""

    name = "openai-chat"

    def handle(self, event: str, data: bytes, t: float, account: Account) -> None:
        obj = _decode(event, data, account)
        if obj is None:
            return
        choices = obj.get("choices")
        if choices:
            visible, hidden = [], []
            for choice in choices:
                delta = choice.get("delta") or {}
                content = delta.get("content")
                if content:
                    visible.append(content)
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if reasoning:
                    hidden.append(reasoning)
                for call in delta.get("tool_calls") or ():
                    function = call.get("function") or {}
                    hidden.append((function.get("name") or "") + (function.get("arguments") or ""))
                call = delta.get("function_call")
                if call:
                    hidden.append((call.get("name") or "") + (call.get("arguments") or ""))
                reason = choice.get("finish_reason")
                if reason:
                    account.finish(reason)
            if visible:
                account.output(t, "".join(visible + hidden), True)
            elif any(hidden):
                account.output(t, "".join(hidden), False)
        _usage(obj, account)


class OpenAICompletions:
    """Legacy `text_completion` events: choices[].text."""

    name = "openai-completions"

    def handle(self, event: str, data: bytes, t: float, account: Account) -> None:
        obj = _decode(event, data, account)
        if obj is None:
            return
        texts = []
        for choice in obj.get("choices") or ():
            if choice.get("text"):
                texts.append(choice["text"])
            if choice.get("finish_reason"):
                account.finish(choice["finish_reason"])
        if texts:
            account.output(t, "".join(texts), True)
        _usage(obj, account)


FORMATS: dict[str, type] = {OpenAIChat.name: OpenAIChat, OpenAICompletions.name: OpenAICompletions}
