"""Response formats: turn one decoded SSE event into output, finish, usage or error facts.

A format never times anything: it tells the StreamAccount what an event carried and the
account stamps it with the event's arrival time. Adding a wire format (Anthropic, raw text
streams...) means adding a small class here, not another accounting.
"""

from __future__ import annotations

import codecs
import json
from typing import Protocol


class Account(Protocol):
    def output(self, t: float, text: str, visible: bool) -> None: ...
    def tool_call(self, index: int, call_id: str | None, name: str | None, arguments: str | None) -> None: ...
    def finish(self, reason: str) -> None: ...
    def usage(self, prompt_tokens: int | None, completion_tokens: int | None,
              reasoning_tokens: int | None = None) -> None: ...
    def fail(self, error_type: str, message: str) -> None: ...
    def done(self) -> None: ...


class Format(Protocol):
    """An SSE format (sse = True) handles decoded events; a raw one is fed the body's bytes."""

    name: str
    sse: bool

    def handle(self, event: str, data: bytes, t: float, account: Account) -> None: ...
    def feed(self, data: bytes, t: float, account: Account) -> None: ...
    def end(self, account: Account, complete: bool) -> None: ...


class _SSEFormat:
    sse = True

    def feed(self, data: bytes, t: float, account: Account) -> None:
        raise NotImplementedError("an SSE format is fed decoded events")

    def end(self, account: Account, complete: bool) -> None:
        """Whether an SSE stream ended properly is told by its own events ([DONE], finish)."""


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


def _error_event_text(data: bytes) -> str:
    """The message of an `event: error` whose data is not JSON (plain text, HTML)."""
    text = data.decode("utf-8", "replace").strip()[:200]
    return f"the server sent an error event: {text}" if text else "the server sent an empty error event"


def _decode(event: str, data: bytes, account: Account) -> dict | None:
    """The event's JSON object, or None after reporting [DONE], an error or a malformed chunk."""
    if data == b"[DONE]":
        account.done()
        return None
    try:
        obj = json.loads(data)
    except ValueError:
        if event == "error":
            account.fail("sse_error", _error_event_text(data))
        else:
            account.fail("malformed", f"chunk is not valid JSON: {data[:80]!r}")
        return None
    if not isinstance(obj, dict):
        account.fail("malformed", f"chunk is not a JSON object: {data[:80]!r}")
        return None
    if event == "error" or obj.get("error"):
        account.fail("sse_error", _error_message(obj.get("error", obj)))
        return None
    return obj


class OpenAIChat(_SSEFormat):
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
                    account.tool_call(call.get("index", 0), call.get("id"), function.get("name"),
                                      function.get("arguments"))
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


class OpenAICompletions(_SSEFormat):
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


class AnthropicMessages(_SSEFormat):
    """Anthropic Messages SSE: content_block_delta (text, thinking, tool input), message_delta usage."""

    name = "anthropic"

    def handle(self, event: str, data: bytes, t: float, account: Account) -> None:
        try:
            obj = json.loads(data)
        except ValueError:
            if event == "error":
                account.fail("sse_error", _error_event_text(data))
            else:
                account.fail("malformed", f"event is not valid JSON: {data[:80]!r}")
            return
        if not isinstance(obj, dict):
            account.fail("malformed", f"event is not a JSON object: {data[:80]!r}")
            return
        kind = obj.get("type")
        if kind == "content_block_delta":
            delta = obj.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta" and delta.get("text"):
                account.output(t, delta["text"], True)
            elif dtype == "thinking_delta" and delta.get("thinking"):
                account.output(t, delta["thinking"], False)
            elif dtype == "input_json_delta" and delta.get("partial_json"):
                account.output(t, delta["partial_json"], False)
        elif kind == "content_block_start":
            block = obj.get("content_block") or {}
            if block.get("type") == "tool_use" and block.get("name"):
                account.output(t, block["name"], False)
        elif kind == "message_start":
            usage = (obj.get("message") or {}).get("usage") or {}
            account.usage(usage.get("input_tokens"), None)
        elif kind == "message_delta":
            reason = (obj.get("delta") or {}).get("stop_reason")
            if reason:
                account.finish(reason)
            account.usage(None, (obj.get("usage") or {}).get("output_tokens"))
        elif kind == "message_stop":
            account.done()
        elif kind == "error" or event == "error":
            account.fail("sse_error", _error_message(obj.get("error", obj)))
        elif kind is None:
            account.fail("malformed", f"event without a type: {data[:80]!r}")


class RawText:
    """A plain streaming text body (no SSE): every read with text is an output chunk; the stream
    is complete when the HTTP body ends as its framing says."""

    name = "raw"
    sse = False

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def handle(self, event: str, data: bytes, t: float, account: Account) -> None:
        raise NotImplementedError("a raw format is fed bytes")

    def feed(self, data: bytes, t: float, account: Account) -> None:
        try:
            text = self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            account.fail("malformed", f"the stream is not valid UTF-8 ({exc.reason})")
            return
        if text:
            account.output(t, text, True)

    def end(self, account: Account, complete: bool) -> None:
        if complete:
            account.finish("stop")
            account.done()


FORMATS: dict[str, type] = {f.name: f for f in (OpenAIChat, OpenAICompletions, AnthropicMessages, RawText)}
