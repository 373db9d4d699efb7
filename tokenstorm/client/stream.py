"""Stream accounting: send one streaming request, time it to the chunk, classify how it ended.

Every request ends as exactly one Record, ok or an error of one class, and a failed stream
keeps the timings it reached. The metric definitions are the README's (docs/ARCHITECTURE.md points there).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from gevent import GreenletExit

from ..core import tokenizer
from ..core.formats import Format
from ..core.records import Record
from ..core.sse import SSEDecoder, SSEError
from .httpclient import Connection, ConnectionLost, HTTPError


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 10.0
    first_token_s: float = 120.0  # request sent -> first output chunk (prefill and queueing)
    stall_s: float = 30.0  # longest silence between output chunks
    total_s: float = 600.0  # request sent -> end of stream


def _is_count(value) -> bool:
    return type(value) is int and value >= 0


@dataclass
class StreamAccount:
    """Instants (time.monotonic) and values of one stream, filled as its events arrive."""

    t_sent: float = 0.0
    t_headers: float | None = None
    t_first: float | None = None  # first output (content, reasoning, tool call)
    t_first_visible: float | None = None
    t_last: float | None = None
    chunks: int = 0
    gap_sum: float = 0.0
    gap_max: float = 0.0
    texts: list[str] = field(default_factory=list)
    finish_reason: str = ""
    usage_prompt: int | None = None
    usage_completion: int | None = None
    usage_reasoning: int | None = None
    usage_cached: int | None = None
    saw_done: bool = False
    tool_calls: dict[int, dict] = field(default_factory=dict)
    error_type: str = ""
    error: str = ""

    def output(self, t: float, text: str, visible: bool) -> None:
        last = self.t_last
        if last is None:
            self.t_first = t
        else:
            gap = t - last
            self.gap_sum += gap
            if gap > self.gap_max:
                self.gap_max = gap
        if visible and self.t_first_visible is None:
            self.t_first_visible = t
        self.t_last = t
        self.chunks += 1
        self.texts.append(text)

    def tool_call(self, index: int, call_id: str | None, name: str | None, arguments: str | None) -> None:
        """Assemble streamed tool calls (OpenAI deltas: id and name on the first fragment only)."""
        call = self.tool_calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
        if call_id:
            call["id"] = call_id
        if name:
            call["name"] += name
        if arguments:
            call["arguments"] += arguments

    def finish(self, reason: str) -> None:
        self.finish_reason = reason

    def usage(self, prompt_tokens, completion_tokens, reasoning_tokens=None, cached_tokens=None) -> None:
        """Token counts the server reported; anything but a count (true, -1, "12", 1.5) is ignored."""
        if _is_count(prompt_tokens):
            self.usage_prompt = prompt_tokens
        if _is_count(completion_tokens):
            self.usage_completion = completion_tokens
        if _is_count(reasoning_tokens):
            self.usage_reasoning = reasoning_tokens
        if _is_count(cached_tokens):
            self.usage_cached = cached_tokens

    def fail(self, error_type: str, message: str) -> None:
        if not self.error_type:  # the first failure is the one that counts
            self.error_type, self.error = error_type, message

    def done(self) -> None:
        self.saw_done = True


def _ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round((b - a) * 1000, 3)


def _http_error_message(status: int, reason: str, body: bytes) -> str:
    try:
        obj = json.loads(body)
        error = obj.get("error", obj) if isinstance(obj, dict) else obj
        message = error.get("message") if isinstance(error, dict) else str(error)
    except ValueError:
        message = body.decode("utf-8", "replace").strip()[:200]
    return f"HTTP {status} {reason}: {message}".strip().rstrip(":") if message else f"HTTP {status} {reason}"


def _refused_stream(response, fmt: Format) -> str | None:
    """Why a 1xx-3xx answer is not a stream tokenstorm can time, or None when it is one."""
    if 300 <= response.status < 400:
        response.read_all(64 * 1024)  # to its end: the connection is then reused or closed as it says
        location = response.headers.get("location")
        where = f" to {location}" if location else ""
        return (f"HTTP {response.status} {response.reason}: a redirect{where}; tokenstorm does not follow "
                "redirects (point --host at the final URL)")
    encoding = response.headers.get("content-encoding", "identity").lower()
    if encoding not in ("", "identity"):
        return (f"the server sent a {encoding}-encoded stream (Content-Encoding: {encoding}) although the "
                "request asked for identity")
    if fmt.sse and response.headers.get("content-type", "").lower().startswith("application/json"):
        body = response.read_all(64 * 1024)
        detail = _http_error_message(response.status, response.reason, body).split(": ", 1)
        said = f" ({detail[1]})" if len(detail) > 1 else ""
        return (f"the server answered {response.status} application/json, not an event stream{said}: "
                "did it ignore stream: true?")
    return None


def stream_request(conn: Connection, path: str, body: bytes, headers: list[tuple[str, str]], fmt: Format,
                   timeouts: Timeouts, record: Record, prompt_tokens: int | None = None,
                   account: StreamAccount | None = None) -> Record:
    """Send a streaming POST on `conn`; fill `record` with what happened and return it.

    Whatever the server sends, the record is one outcome: ok only when the stream ended as a
    success, else one error class with a message. Pass an `account` to keep what the stream
    carried (text, tool calls) beyond the record."""
    account = StreamAccount() if account is None else account
    record.t_start = time.time()
    t_end = None
    try:
        conn.deadline = time.monotonic() + min(timeouts.first_token_s, timeouts.total_s)
        response, account.t_sent = conn.request("POST", path, headers, body, timeout_kind="timeout_first_token")
        record.t_start = time.time() - (time.monotonic() - account.t_sent)
        record.connect_ms = None if conn.connect_s is None else round(conn.connect_s * 1000, 3)
        account.t_headers = response.t_headers
        record.http_status = response.status
        total_deadline = account.t_sent + timeouts.total_s
        if response.status >= 400:
            conn.deadline = total_deadline
            message = _http_error_message(response.status, response.reason, response.read_all(64 * 1024))
            account.fail("http_status", message)
        elif (refused := _refused_stream(response, fmt)) is not None:
            account.fail("http_status" if response.status >= 300 else "protocol", refused)
        else:
            _read_events(conn, response, fmt, account, timeouts, total_deadline)
        t_end = time.monotonic()
    except HTTPError as exc:
        kind = exc.kind
        if kind.startswith("timeout") or kind == "stall":
            limit = {"timeout_first_token": timeouts.first_token_s, "stall": timeouts.stall_s,
                     "timeout_total": timeouts.total_s}.get(kind, 0)
            what = {"timeout_first_token": "no output token", "stall": "no output chunk",
                    "timeout_total": "stream not finished"}.get(kind, kind)
            account.fail(kind, f"{what} within {limit:g} s")
        else:
            account.fail(kind, str(exc))
        conn.close()
    except ConnectionLost as exc:
        after = f" after {account.chunks} output chunks" if account.t_headers is not None else ""
        account.fail("truncated", f"{exc}{after}")
        conn.close()
    except SSEError as exc:
        account.fail("protocol", str(exc))
        conn.close()
    except GreenletExit:  # the run is stopping: keep what this stream reached, the caller re-raises
        account.fail("cancelled", "the run stopped before the stream ended")
        conn.close()
    except Exception as exc:  # a bug of ours or a case nobody foresaw: a failed record, never an ok one
        account.fail("client_error", f"{type(exc).__name__}: {exc}")
        conn.close()
    finally:
        conn.disarm()
    if not account.error_type and not (account.saw_done or account.finish_reason):
        end = getattr(fmt, "end_event", "finish_reason or [DONE]")
        account.fail("truncated", f"stream ended without {end} after {account.chunks} output chunks")
    if account.error_type and account.error_type not in ("http_status",):
        conn.close()  # the connection's state is unknown after a failed stream
    return _finish_record(record, account, t_end, prompt_tokens)


def _read_events(conn: Connection, response, fmt: Format, account: StreamAccount, timeouts: Timeouts,
                 total_deadline: float) -> None:
    decoder = SSEDecoder() if fmt.sse else None
    stall, first_deadline = timeouts.stall_s, account.t_sent + timeouts.first_token_s
    handle = fmt.handle
    for data, t in response.read_body():
        if decoder is not None:
            for event, payload in decoder.feed(data):
                try:
                    handle(event, payload, t, account)
                except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
                    # a field of an unexpected type (content a number, choices ["x"], delta a string)
                    account.fail("malformed", f"unexpected event shape ({type(exc).__name__}: {exc}): "
                                 f"{payload[:80]!r}")
        else:
            fmt.feed(data, t, account)
        if account.error_type:
            return
        # the next read's deadline: the first token, then the stall limit, never past the total
        if account.t_last is None:
            deadline, kind = first_deadline, "timeout_first_token"
        else:
            deadline, kind = account.t_last + stall, "stall"
        if total_deadline < deadline:
            deadline, kind = total_deadline, "timeout_total"
        conn.deadline, conn.timeout_kind = deadline, kind
    fmt.end(account, response.complete)


def _finish_record(record: Record, account: StreamAccount, t_end: float | None,
                   prompt_tokens: int | None) -> Record:
    t0 = account.t_sent
    record.ttfb_ms = _ms(t0, account.t_headers) if t0 else None
    record.ttft_ms = _ms(t0, account.t_first) if t0 else None
    record.ttfvt_ms = _ms(t0, account.t_first_visible) if t0 else None
    record.e2e_ms = _ms(t0, account.t_last) if t0 else None
    record.total_ms = _ms(t0, t_end) if t0 and t_end else None
    record.chunks = account.chunks
    record.finish_reason = account.finish_reason
    record.output_tokens_usage = account.usage_completion
    record.reasoning_tokens = account.usage_reasoning
    record.cached_tokens = account.usage_cached
    record.input_tokens = account.usage_prompt if account.usage_prompt is not None else prompt_tokens
    if account.texts:
        text = "".join(account.texts)
        counter = tokenizer.count_tokens_offloaded if len(text) >= tokenizer.OFFLOAD_CHARS else tokenizer.count_tokens
        record.output_tokens_tokenizer = counter(text)
        record.tokenizer = tokenizer.active().name
    elif account.chunks == 0 and account.t_headers is not None:
        record.output_tokens_tokenizer = 0
    if account.usage_completion is not None:
        record.output_tokens, record.output_tokens_source = account.usage_completion, "usage"
    elif record.output_tokens_tokenizer is not None:
        record.output_tokens, record.output_tokens_source = record.output_tokens_tokenizer, "tokenizer"
    else:
        record.output_tokens, record.output_tokens_source = account.chunks, "chunks"
    if account.chunks > 1:
        record.itl_mean_ms = round(account.gap_sum / (account.chunks - 1) * 1000, 3)
        record.itl_max_ms = round(account.gap_max * 1000, 3)
    n = record.output_tokens or 0
    if record.ttft_ms is not None and record.e2e_ms is not None and n > 1:
        record.tpot_ms = round((record.e2e_ms - record.ttft_ms) / (n - 1), 4)
    if record.e2e_ms and n:
        record.tokens_per_s = round(n / (record.e2e_ms / 1000), 3)
    if account.error_type:
        record.status, record.error_type, record.error = "error", account.error_type, account.error
    else:
        record.status = "ok"
    return record
