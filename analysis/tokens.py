"""`python -m analysis tokens FILE`: token accounting of API-gateway logs.

One JSON object per line, as gateways such as Kong's http-log plugin write them:
`request.body` holds the chat request as a JSON string, `response.body` the raw SSE text of a
streamed answer (events separated by blank lines, CRLF or LF) or a plain JSON completion.
Prompt tokens are counted with tiktoken cl100k_base (or `--tokenizer PATH`, a local
tokenizer.json) the way OpenAI counts chat messages; completion
tokens from the streamed or returned output (content, reasoning, tool calls). The server's own
`usage`, when the log has it, is reported beside the count. Malformed entries are reported
with their line number and skipped.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass

from tokenstorm.core import tokenizer
from tokenstorm.core.formats import OpenAIChat, OpenAICompletions
from tokenstorm.core.sse import SSEDecoder


class EntryError(ValueError):
    """An entry that cannot be counted; the message says why."""


@dataclass
class EntryTokens:
    line: int
    route: str
    model: str
    streamed: bool
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None


class _Collect:
    """An Account (tokenstorm.core.formats) that only keeps the output text and usage."""

    def __init__(self):
        self.texts: list[str] = []
        self.prompt = self.completion = None
        self.error = ""

    def output(self, t, text, visible):
        self.texts.append(text)

    def tool_call(self, index, call_id, name, arguments):
        pass  # their text is counted through output()

    def finish(self, reason):
        pass

    def usage(self, prompt_tokens, completion_tokens, reasoning_tokens=None, cached_tokens=None):
        self.prompt, self.completion = prompt_tokens, completion_tokens

    def fail(self, error_type, message):
        self.error = self.error or f"{error_type}: {message}"

    def done(self):
        pass


def _json(value, what: str):
    if isinstance(value, (dict, list)):
        return value
    if not isinstance(value, str):
        raise EntryError(f"{what} is missing")
    try:
        return json.loads(value)
    except ValueError as exc:
        raise EntryError(f"{what} is not valid JSON ({exc.msg})") from None


def _completion_from_json(obj: dict) -> tuple[str, dict | None]:
    texts = []
    for choice in obj.get("choices") or []:
        message = choice.get("message") or {}
        texts.append(tokenizer.message_text(message.get("content")) if message else choice.get("text") or "")
        texts.append(message.get("reasoning_content") or "")
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            texts.append((function.get("name") or "") + (function.get("arguments") or ""))
        call = message.get("function_call")
        if call:
            texts.append((call.get("name") or "") + (call.get("arguments") or ""))
    return "".join(texts), obj.get("usage")


def count_entry(entry: dict, line: int = 0) -> EntryTokens:
    if not isinstance(entry, dict):
        raise EntryError("the entry is not a JSON object")
    request = entry.get("request") or {}
    response = entry.get("response") or {}
    body = _json(request.get("body"), "request.body")
    if not isinstance(body, dict):
        raise EntryError("request.body is not a JSON object")
    route = (entry.get("route") or {}).get("name") or request.get("uri") or request.get("url") or ""
    model = str(body.get("model") or "")
    if "messages" in body:
        if not isinstance(body["messages"], list):
            raise EntryError("request.body.messages is not a list")
        prompt = tokenizer.count_chat_prompt([m for m in body["messages"] if isinstance(m, dict)])
        fmt = OpenAIChat()
    elif "prompt" in body:
        value = body["prompt"]
        prompt = tokenizer.count_tokens(value if isinstance(value, str) else "".join(map(str, value)))
        fmt = OpenAICompletions()
    else:
        raise EntryError("request.body has neither messages nor prompt")
    raw = response.get("body")
    if not isinstance(raw, str):
        raise EntryError("response.body is missing")
    streamed = raw.lstrip().startswith(("data:", "event:", ":"))
    usage = None
    if streamed:
        collect, decoder = _Collect(), SSEDecoder()
        for event, data in decoder.feed(raw.encode() + b"\n\n"):
            fmt.handle(event, data, 0.0, collect)
        if collect.error.startswith("malformed"):
            raise EntryError(f"response.body: {collect.error}")
        text = "".join(collect.texts)
        if collect.completion is not None:
            usage = {"prompt_tokens": collect.prompt, "completion_tokens": collect.completion}
    else:
        obj = _json(raw, "response.body")
        if not isinstance(obj, dict):
            raise EntryError("response.body is not a JSON object")
        text, usage = _completion_from_json(obj)
    completion = tokenizer.count_tokens(text)
    return EntryTokens(line, str(route), model, streamed, prompt, completion, prompt + completion,
                       (usage or {}).get("prompt_tokens"), (usage or {}).get("completion_tokens"))


def count_file(path: str) -> dict:
    entries, skipped = [], []
    totals_model: dict = defaultdict(lambda: {"entries": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                              "total_tokens": 0})
    totals_route: dict = defaultdict(lambda: {"entries": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                              "total_tokens": 0})
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                result = count_entry(json.loads(line), number)
            except json.JSONDecodeError as exc:
                skipped.append({"line": number, "error": f"not JSON ({exc.msg})"})
                continue
            except EntryError as exc:
                skipped.append({"line": number, "error": str(exc)})
                continue
            entries.append(asdict(result))
            for totals, key in ((totals_model, result.model), (totals_route, result.route)):
                t = totals[key]
                t["entries"] += 1
                t["prompt_tokens"] += result.prompt_tokens
                t["completion_tokens"] += result.completion_tokens
                t["total_tokens"] += result.total_tokens
    return {"file": path, "tokenizer": tokenizer.active().name, "entries": entries,
            "totals_by_model": dict(totals_model),
            "totals_by_route": dict(totals_route), "skipped": skipped}


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Answer POST / (one log entry as JSON) with its token counts."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            try:
                result = asdict(count_entry(json.loads(self.rfile.read(length) or b"null")))
                status = 200
            except ValueError as exc:
                result, status = {"error": str(exc)}, 400
            body = json.dumps(result).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    print(f"analysis tokens: serving on http://{host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
