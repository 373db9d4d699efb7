"""OpenAI Responses API wire format (`POST /v1/responses`): typed SSE events and Response objects.

A streamed response is a sequence of typed events, each with a `sequence_number` counting from 0:
response.created, response.in_progress, then per output item (reasoning, the message, function
calls) its output_item.added, its part's added event, the deltas (one per token), the done
events, and at the end response.completed (response.incomplete when max_output_tokens cut it)
with the usage. There is no [DONE]. The stream builder has the interface of wire.Chunks.
"""

from __future__ import annotations

import json

from .schema import ResponsesNamedTool, ResponsesRequest


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def usage(chat_usage: dict) -> dict:
    """A chat usage dict (wire.usage_dict) in the Responses API's shape."""
    details = chat_usage.get("completion_tokens_details") or {}
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return {"input_tokens": chat_usage["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": chat_usage["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": details.get("reasoning_tokens", 0)},
            "total_tokens": chat_usage["total_tokens"]}


def response_object(request: ResponsesRequest, response_id: str, created: int) -> dict:
    """The Response object without output or usage (status in_progress)."""
    choice = request.tool_choice
    reasoning = request.reasoning
    return {
        "id": response_id, "object": "response", "created_at": created, "status": "in_progress",
        "background": False, "error": None, "incomplete_details": None, "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens, "model": request.model, "output": [],
        "parallel_tool_calls": request.parallel_tool_calls is not False, "previous_response_id": None,
        "reasoning": {"effort": reasoning.effort if reasoning else None,
                      "summary": reasoning.summary if reasoning else None},
        "store": False, "temperature": 1.0 if request.temperature is None else request.temperature,
        "text": {"format": {"type": "text"}},
        "tool_choice": choice.model_dump() if isinstance(choice, ResponsesNamedTool) else (choice or "auto"),
        "tools": [t.model_dump(exclude_none=True) | {"strict": t.strict if t.strict is not None else True}
                  for t in request.tools or []],
        "top_p": 1.0 if request.top_p is None else request.top_p, "truncation": "disabled", "usage": None,
        "metadata": {},
    }


def finished(response: dict, finish_reason: str, output: list[dict], usage_: dict) -> dict:
    """The Response object at its end: completed, or incomplete when max_output_tokens cut it."""
    done = dict(response, output=output, usage=usage_)
    if finish_reason == "length":
        done["status"], done["incomplete_details"] = "incomplete", {"reason": "max_output_tokens"}
    else:
        done["status"] = "completed"
    return done


def message_item(item_id: str, text: str, status: str = "completed") -> dict:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def reasoning_item(item_id: str, text: str, summary: bool) -> dict:
    if summary:
        return {"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": text}]}
    return {"id": item_id, "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": text}]}


def function_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict:
    return {"id": item_id, "type": "function_call", "status": status, "arguments": arguments, "call_id": call_id,
            "name": name}


def item_ids(response_id: str) -> tuple[str, str, str]:
    """Ids of the reasoning, message and function-call items (fc_ ids get an index appended)."""
    suffix = response_id.removeprefix("resp_")
    return "rs_" + suffix, "msg_" + suffix, "fc_" + suffix


class ResponsesChunks:
    """The SSE events of one streamed response. Items open as the first token of their kind comes
    and close (their done events) when the next kind starts or the response ends."""

    def __init__(self, request: ResponsesRequest, response_id: str, created: int):
        self._response = response_object(request, response_id, created)
        self._summary = request.reasoning_summary
        self._rs_id, self._msg_id, self._fc_id = item_ids(response_id)
        self._seq = 0
        self._index = -1  # output_index of the open item
        self._kind = ""  # reasoning | message | function_call:<i>
        self._text: list[bytes] = []  # the open item's deltas, JSON string bodies (escapes kept)
        self._call: tuple[str, str, str] = ("", "", "")  # item id, call id, name of the open function call
        self._output: list[dict] = []
        self._delta_head = b""
        self._status = "completed"  # of the items closed; incomplete when max_output_tokens cut the last

    def _event(self, kind: str, payload: dict) -> bytes:
        payload["sequence_number"] = self._seq
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + _dumps({"type": kind, **payload}) + b"\n\n"

    def _delta(self, delta_json: bytes) -> bytes:
        self._text.append(delta_json[1:-1])
        seq = self._seq
        self._seq += 1
        return self._delta_head + delta_json + b',"sequence_number":%d}\n\n' % seq

    def _joined(self) -> str:
        return json.loads(b'"' + b"".join(self._text) + b'"')

    def opening(self) -> bytes:
        return (self._event("response.created", {"response": self._response})
                + self._event("response.in_progress", {"response": self._response}))

    def _close(self) -> bytes:
        """The done events of the open item."""
        kind, i = self._kind, self._index
        if not kind:
            return b""
        self._kind = ""
        if kind == "reasoning":
            text = self._joined()
            item = reasoning_item(self._rs_id, text, self._summary)
            if self._summary:
                out = self._event("response.reasoning_summary_text.done",
                                  {"item_id": self._rs_id, "output_index": i, "summary_index": 0, "text": text})
                out += self._event("response.reasoning_summary_part.done",
                                   {"item_id": self._rs_id, "output_index": i, "summary_index": 0,
                                    "part": {"type": "summary_text", "text": text}})
            else:
                out = self._event("response.reasoning_text.done",
                                  {"item_id": self._rs_id, "output_index": i, "content_index": 0, "text": text})
                out += self._event("response.content_part.done",
                                   {"item_id": self._rs_id, "output_index": i, "content_index": 0,
                                    "part": {"type": "reasoning_text", "text": text}})
        elif kind == "message":
            text = self._joined()
            item = message_item(self._msg_id, text, self._status)
            out = self._event("response.output_text.done", {"item_id": self._msg_id, "output_index": i,
                                                             "content_index": 0, "text": text, "logprobs": []})
            out += self._event("response.content_part.done", {"item_id": self._msg_id, "output_index": i,
                                                               "content_index": 0, "part": item["content"][0]})
        else:
            item_id, call_id, name = self._call
            arguments = self._joined()
            item = function_item(item_id, call_id, name, arguments, self._status)
            out = self._event("response.function_call_arguments.done",
                              {"item_id": item_id, "output_index": i, "name": name, "arguments": arguments})
        self._output.append(item)
        return out + self._event("response.output_item.done", {"output_index": i, "item": item})

    def _open(self, kind: str, item: dict) -> bytes:
        out = self._close()
        self._index += 1
        self._kind, self._text = kind, []
        out += self._event("response.output_item.added", {"output_index": self._index, "item": item})
        return out

    def _delta_prefix(self, kind: str, item_id: str, extra: str = "") -> bytes:
        return (f'event: {kind}\ndata: {{"type":"{kind}","item_id":"{item_id}","output_index":{self._index}'
                f'{extra},"delta":').encode()

    def reasoning(self, delta_json: bytes) -> bytes:
        out = b""
        if self._kind != "reasoning":
            item = {"id": self._rs_id, "type": "reasoning", "summary": []}
            if self._summary:
                out = self._open("reasoning", item)
                out += self._event("response.reasoning_summary_part.added",
                                   {"item_id": self._rs_id, "output_index": self._index, "summary_index": 0,
                                    "part": {"type": "summary_text", "text": ""}})
                self._delta_head = self._delta_prefix("response.reasoning_summary_text.delta", self._rs_id,
                                                      ',"summary_index":0')
            else:
                out = self._open("reasoning", item | {"content": []})
                out += self._event("response.content_part.added",
                                   {"item_id": self._rs_id, "output_index": self._index, "content_index": 0,
                                    "part": {"type": "reasoning_text", "text": ""}})
                self._delta_head = self._delta_prefix("response.reasoning_text.delta", self._rs_id,
                                                      ',"content_index":0')
        return out + self._delta(delta_json)

    def content(self, delta_json: bytes) -> bytes:
        out = b""
        if self._kind != "message":
            item = message_item(self._msg_id, "", "in_progress")
            item["content"] = []
            out = self._open("message", item)
            out += self._event("response.content_part.added",
                               {"item_id": self._msg_id, "output_index": self._index, "content_index": 0,
                                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})
            self._delta_head = self._delta_prefix("response.output_text.delta", self._msg_id,
                                                  ',"content_index":0,"logprobs":[]')
        return out + self._delta(delta_json)

    def tool_call_start(self, index: int, call_id: str, name: str) -> bytes:
        item_id = f"{self._fc_id}_{index}"
        out = self._open(f"function_call:{index}", function_item(item_id, call_id, name, "", "in_progress"))
        self._call = (item_id, call_id, name)
        self._delta_head = self._delta_prefix("response.function_call_arguments.delta", item_id)
        return out

    def tool_call_arguments(self, index: int, piece: str) -> bytes:
        return self._delta(json.dumps(piece).encode())

    def tail(self, reason: str, usage_: dict, stop_sequence: str | None = None) -> bytes:
        if reason == "length":
            self._status = "incomplete"
        out = self._close()
        response = finished(self._response, reason, self._output, usage(usage_))
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return out + self._event(kind, {"response": response})

    def error(self, message: str) -> bytes:
        """An `error` event, then response.failed: what the API sends when generation fails mid-stream."""
        out = self._event("error", {"code": "server_error", "message": message, "param": None})
        failed = dict(self._response, status="failed", output=self._output,
                      error={"code": "server_error", "message": message})
        return out + self._event("response.failed", {"response": failed})

    def malformed(self) -> bytes:
        return (b'event: response.output_text.delta\n'
                b'data: {"type":"response.output_text.delta","delta":"unterminated\n\n')


def body(request: ResponsesRequest, response_id: str, created: int, reasoning: str | None, content: str | None,
         calls: list, finish_reason: str, usage_: dict) -> bytes:
    """The non-streamed Response object."""
    rs_id, msg_id, fc_id = item_ids(response_id)
    output = []
    if reasoning is not None:
        output.append(reasoning_item(rs_id, reasoning, request.reasoning_summary))
    if content is not None:
        output.append(message_item(msg_id, content, "incomplete" if finish_reason == "length" else "completed"))
    for index, call in enumerate(calls):
        status = "incomplete" if finish_reason == "length" and index == len(calls) - 1 else "completed"
        output.append(function_item(f"{fc_id}_{index}", call.id, call.name, call.arguments, status))
    return json.dumps(finished(response_object(request, response_id, created), finish_reason, output,
                               usage(usage_)), ensure_ascii=False).encode()

