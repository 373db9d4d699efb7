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
              reasoning_tokens: int | None = None, cached_tokens: int | None = None) -> None: ...
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
        prompt_details = usage.get("prompt_tokens_details")
        account.usage(usage.get("prompt_tokens"), usage.get("completion_tokens"),
                      details.get("reasoning_tokens") if isinstance(details, dict) else None,
                      prompt_details.get("cached_tokens") if isinstance(prompt_details, dict) else None)


def _anthropic_input(usage: dict, account: Account) -> None:
    """Anthropic's input_tokens exclude the prompt tokens read from or written to its cache: the prompt
    is their sum (what OpenAI's prompt_tokens is), cache_read_input_tokens its cached part."""
    counts = [usage.get(k) for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")]
    ints = [c for c in counts if type(c) is int and c >= 0]
    prompt = sum(ints) if type(counts[0]) is int and counts[0] >= 0 else None
    account.usage(prompt, None, None, counts[1])


def _error_event_text(data: bytes) -> str:
    """The message of an `event: error` whose data is not JSON (plain text, HTML)."""
    text = data.decode("utf-8", "replace").strip()[:200]
    return f"the server sent an error event: {text}" if text else "the server sent an empty error event"


def _json_object(event: str, data: bytes, account: Account, what: str) -> dict | None:
    """The event's data as a JSON object, or None after failing the stream: `sse_error` for an
    `event: error` that is not JSON, else `malformed` (`what` names the unit: chunk, event)."""
    try:
        obj = json.loads(data)
    except ValueError:
        if event == "error":
            account.fail("sse_error", _error_event_text(data))
        else:
            account.fail("malformed", f"{what} is not valid JSON: {data[:80]!r}")
        return None
    if not isinstance(obj, dict):
        account.fail("malformed", f"{what} is not a JSON object: {data[:80]!r}")
        return None
    return obj


def _decode(event: str, data: bytes, account: Account) -> dict | None:
    """The event's JSON object, or None after reporting [DONE], an error or a malformed chunk."""
    if data == b"[DONE]":
        account.done()
        return None
    obj = _json_object(event, data, account, "chunk")
    if obj is None:
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
        obj = _json_object(event, data, account, "event")
        if obj is None:
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
            usage = (obj.get("message") or {}).get("usage")
            if isinstance(usage, dict):
                _anthropic_input(usage, account)
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


class OpenAIResponses(_SSEFormat):
    """OpenAI Responses API events (`POST /v1/responses`): typed events, no [DONE].

    Output text deltas are visible output; reasoning (raw or summary) and function-call arguments
    are output that is not visible (a function call's name counts when its item is added, as a
    chat tool call's first fragment does). The stream ends as a success only at
    `response.completed` (or `response.incomplete` for max_output_tokens: finish_reason length);
    `error` and `response.failed` are in-band errors; anything else ending it is truncated."""

    name = "openai-responses"
    end_event = "response.completed"  # what a stream that ends too early lacks (the truncated message)
    HIDDEN = ("response.reasoning_text.delta", "response.reasoning_summary_text.delta",
              "response.function_call_arguments.delta")

    def handle(self, event: str, data: bytes, t: float, account: Account) -> None:
        if data == b"[DONE]":  # not part of the Responses API; some servers add it. Not an end by itself.
            return
        obj = _json_object(event, data, account, "event")
        if obj is None:
            return
        kind = obj.get("type")
        if kind == "response.output_text.delta":
            delta = obj["delta"]
            if delta:
                account.output(t, _text(delta), True)
        elif kind in self.HIDDEN:
            delta = obj["delta"]
            if delta:
                account.output(t, _text(delta), False)
                if kind == "response.function_call_arguments.delta":
                    account.tool_call(obj.get("output_index", 0), None, None, delta)
        elif kind == "response.output_item.added":
            item = obj.get("item") or {}
            if item.get("type") == "function_call":
                if item.get("name"):
                    account.output(t, _text(item["name"]), False)
                account.tool_call(obj.get("output_index", 0), item.get("call_id"), item.get("name"),
                                  item.get("arguments"))
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self._end(kind, obj.get("response"), account)
        elif kind == "error" or event == "error" or obj.get("error"):
            account.fail("sse_error", _error_message(obj.get("error") or obj))
        elif kind is None:
            account.fail("malformed", f"event without a type: {data[:80]!r}")

    @staticmethod
    def _end(kind: str, response: object, account: Account) -> None:
        if not isinstance(response, dict):
            account.fail("malformed", f"{kind} without a response object")
            return
        usage = response.get("usage")
        if isinstance(usage, dict):
            details = usage.get("output_tokens_details")
            input_details = usage.get("input_tokens_details")
            account.usage(usage.get("input_tokens"), usage.get("output_tokens"),
                          details.get("reasoning_tokens") if isinstance(details, dict) else None,
                          input_details.get("cached_tokens") if isinstance(input_details, dict) else None)
        status = response.get("status")
        if kind == "response.failed" or status == "failed":
            error = response.get("error")
            account.fail("sse_error", _error_message(error) if error else "the response failed (response.failed)")
            return
        if kind == "response.incomplete" or status == "incomplete":
            reason = (response.get("incomplete_details") or {}).get("reason")
            if reason != "max_output_tokens" and reason != "content_filter":
                account.fail("sse_error", f"the response is incomplete ({reason or 'no reason given'})")
                return
            account.finish("length" if reason == "max_output_tokens" else reason)
        else:
            account.finish("tool_calls" if any(isinstance(item, dict) and item.get("type") == "function_call"
                                               for item in response.get("output") or ()) else "stop")
        account.done()


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"a delta must be a string, not {type(value).__name__}")
    return value


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


FORMATS: dict[str, type] = {f.name: f for f in (OpenAIChat, OpenAICompletions, OpenAIResponses, AnthropicMessages,
                                                RawText)}
