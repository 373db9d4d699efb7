"""The mock's application: routing, auth, validation, faults, paced streaming."""

from __future__ import annotations

import hmac
import itertools
import json
import random
import time
from collections.abc import Callable, Iterator

from pydantic import ValidationError

from tokenstorm.core import tokenizer
from tokenstorm.core.clock import sleep_until

from . import metrics, prompts, responses, wire
from .config import MockConfig
from .engine import Engine, Slot, format_reset
from .faults import FaultError, FaultPicker
from .http import AbortConnection, Request, Response
from .planner import Plan, Planner
from .prefix_cache import PrefixCache, block_hashes
from .schema import (
    AnthropicCountRequest,
    AnthropicRequest,
    ChatRequest,
    CompletionRequest,
    RawRequest,
    ResponsesRequest,
)
from .textgen import TextSource
from .toolargs import ToolSchemaError
from .watch import ClientGone, Watch

MAX_COALESCE = 32  # chunks already due are written together, up to this many per write
HTTP_FAULTS = {
    "http_429": (429, "Rate limit reached (injected by the mock).", "requests", "rate_limit_exceeded"),
    "http_500": (500, "The server had an error while processing your request (injected by the mock).",
                 "server_error", "internal_error"),
    "http_503": (503, "The server is overloaded or not ready yet (injected by the mock).",
                 "server_error", "service_unavailable"),
}


class _Reject(Exception):
    """An error response decided while handling a request."""

    def __init__(self, status: int, message: str, type_: str, code: str | None = None,
                 param: str | None = None, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers or []


class MockApp:
    def __init__(self, config: MockConfig, worker_index: int = 0, max_num_seqs: int | None = None):
        self.config = config
        self.worker_index = worker_index
        seed = config.seed * 1000 + worker_index
        share = config.capacity.max_num_seqs if max_num_seqs is None else max_num_seqs
        self.engine = Engine(config, share, seed)
        self.faults = FaultPicker(config.faults, seed)
        tokenizer.use(config.output.tokenizer or None)  # every worker process: the same tokenizer
        self.text = TextSource(config.output.language, config.seed)
        self.planner = Planner(config, self.text)
        self.prefix_cache = PrefixCache(config.prefix_cache.capacity_tokens, config.prefix_cache.block_size)
        if self.prefix_cache.enabled:
            metrics.enable_prefix_cache()
        self._keys = [k.encode() for k in config.auth.api_keys]
        # every generation request body and the tool calls it got, as JSON lines (--log-requests)
        self.request_log = open(config.server.log_requests, "a") if config.server.log_requests else None  # noqa: SIM115
        self._counter = itertools.count()
        self.routes: dict[str, tuple[str, Callable]] = {
            "/v1/chat/completions": ("POST", self.chat_completions),
            "/v1/completions": ("POST", self.completions),
            "/v1/responses": ("POST", self.responses),
            "/v1/messages": ("POST", self.messages),
            "/v1/messages/count_tokens": ("POST", self.count_tokens),
            "/raw/stream": ("POST", self.raw_stream),
            "/v1/models": ("GET", self.list_models),
            "/health": ("GET", self.health),
            "/metrics": ("GET", self.prometheus),
        }
        self._warm_up()

    def _warm_up(self) -> None:
        """Run the per-request code paths once so the first client does not pay for lazy setup."""
        request = ChatRequest.model_validate({"model": self.config.models[0].id, "stream": True,
                                              "messages": [{"role": "user", "content": "warm up"}]})
        request.prompt_tokens()
        plan = self.planner.plan(request, random.Random(0))
        chunks = wire.Chunks("warm", 0, request.model, True, True)
        for delta in self.text.delta_json(plan.content):
            if delta is not None:
                chunks.content(delta)

    # -- plumbing ----------------------------------------------------------------------
    def __call__(self, request: Request) -> Response:
        request_id = wire.new_id("req_")
        path, method = request.path, request.method
        route = self.routes.get(path.rstrip("/") or "/")
        endpoint = path
        if route is None and path.startswith("/v1/models/"):
            route, endpoint = ("GET", self.retrieve_model), "/v1/models/{id}"
        try:
            if route is None:
                endpoint = "unknown"
                raise _Reject(404, f"Invalid URL ({method} {path})", "invalid_request_error", "unknown_url")
            allowed, handler = route
            if method != allowed:
                raise _Reject(405, f"Method {method} is not allowed on {path}; use {allowed}",
                              "invalid_request_error", "method_not_allowed", headers=[("Allow", allowed)])
            if path.startswith("/v1/"):
                self._check_auth(request)
            return handler(request, request_id)
        except _Reject as rej:
            return self._error(rej, request_id, endpoint)

    def _respond(self, status: int, body: bytes, request_id: str, endpoint: str,
                 content_type: str = "application/json", headers: list[tuple[str, str]] | None = None) -> Response:
        metrics.REQUESTS.labels(endpoint, str(status)).inc()
        return Response(status, body, [("Content-Type", content_type), ("x-request-id", request_id),
                                       *(headers or [])])

    def _error(self, rej: _Reject, request_id: str, endpoint: str) -> Response:
        if endpoint.startswith("/v1/messages"):
            body = wire.anthropic_error_body(rej.message, rej.type)
        else:
            body = wire.error_body(rej.message, rej.type, rej.code, rej.param)
        return self._respond(rej.status, body, request_id, endpoint, headers=rej.headers)

    def protocol_error(self, status: int, message: str) -> Response:
        """The answer to a request the HTTP layer could not parse (or too large a body)."""
        code = "request_too_large" if status == 413 else None
        return self._error(_Reject(status, message[:1].upper() + message[1:], "invalid_request_error", code),
                           wire.new_id("req_"), "invalid")

    def _check_auth(self, request: Request) -> None:
        if not self.config.auth.enabled:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if request.headers.get("x-api-key"):  # Anthropic's header
            scheme, key = "bearer", request.headers["x-api-key"]
        anthropic = request.path.startswith("/v1/messages")
        if scheme.lower() != "bearer" or not key.strip():
            if anthropic:  # Anthropic's answer names its own header
                raise _Reject(401, "x-api-key header is required", "authentication_error")
            raise _Reject(401, "You didn't provide an API key. Send it in the Authorization header "
                          "as 'Bearer YOUR_KEY'.", "invalid_request_error", "missing_api_key")
        given = key.strip().encode()
        ok = False
        for known in self._keys:  # compare with every key, no early exit: constant time
            ok |= hmac.compare_digest(given, known)
        if not ok:
            if anthropic:
                raise _Reject(401, "invalid x-api-key", "authentication_error")
            raise _Reject(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")

    @staticmethod
    def _read_json(request: Request) -> dict:
        raw = request.body
        if not raw:
            raise _Reject(400, "The request body is empty; send a JSON object", "invalid_request_error")
        try:
            body = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise _Reject(400, "The request body is not valid UTF-8", "invalid_request_error") from None
        except RecursionError:
            raise _Reject(400, "The JSON body of your request is nested too deeply", "invalid_request_error") from None
        except json.JSONDecodeError as exc:
            raise _Reject(400, f"We could not parse the JSON body of your request: {exc.msg} at line "
                          f"{exc.lineno} column {exc.colno}", "invalid_request_error") from None
        if not isinstance(body, dict):
            raise _Reject(400, f"The request body must be a JSON object, not {type(body).__name__}",
                          "invalid_request_error")
        return body

    def _validate(self, model_cls: type, body: dict) -> ChatRequest | CompletionRequest:
        try:
            request = model_cls.model_validate(body)
        except ValidationError as exc:
            errors = exc.errors()
            param = ".".join(str(p) for p in errors[0]["loc"]) or None
            msg = errors[0]["msg"].removeprefix("Value error, ")
            more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
            where = f"{param}: " if param else ""
            raise _Reject(400, f"Invalid request: {where}{msg}{more}", "invalid_request_error",
                          "invalid_value", param) from None
        if self.config.model_spec(request.model) is None:
            raise _Reject(404, f"The model `{request.model}` does not exist or you do not have access to it.",
                          "invalid_request_error", "model_not_found", "model")
        return request

    # -- simple endpoints --------------------------------------------------------------
    @staticmethod
    def _model_entry(model_id: str, owned_by: str) -> dict:
        return {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": owned_by}

    def list_models(self, request: Request, request_id: str) -> Response:
        data = [self._model_entry(m.id, m.owned_by) for m in self.config.models]
        return self._respond(200, json.dumps({"object": "list", "data": data}).encode(), request_id, "/v1/models")

    def retrieve_model(self, request: Request, request_id: str) -> Response:
        model_id = request.path[len("/v1/models/"):]
        spec = self.config.model_spec(model_id)
        if spec is None:
            raise _Reject(404, f"The model `{model_id}` does not exist or you do not have access to it.",
                          "invalid_request_error", "model_not_found", "model")
        return self._respond(200, json.dumps(self._model_entry(spec.id, spec.owned_by)).encode(), request_id,
                             "/v1/models/{id}")

    def health(self, request: Request, request_id: str) -> Response:
        body = json.dumps({"status": "ok", "worker": self.worker_index, "running": self.engine.running,
                           "queued": len(self.engine.waiting)}).encode()
        return self._respond(200, body, request_id, "/health")

    def prometheus(self, request: Request, request_id: str) -> Response:
        body, content_type = metrics.render()
        return self._respond(200, body, request_id, "/metrics", content_type)

    # -- generation --------------------------------------------------------------------
    def chat_completions(self, request: Request, request_id: str) -> Response:
        return self._generate(request, request_id, ChatRequest, "/v1/chat/completions")

    def completions(self, request: Request, request_id: str) -> Response:
        return self._generate(request, request_id, CompletionRequest, "/v1/completions")

    def responses(self, request: Request, request_id: str) -> Response:
        return self._generate(request, request_id, ResponsesRequest, "/v1/responses")

    def messages(self, request: Request, request_id: str) -> Response:
        return self._generate(request, request_id, AnthropicRequest, "/v1/messages")

    def count_tokens(self, request: Request, request_id: str) -> Response:
        """Anthropic's POST /v1/messages/count_tokens: the input tokens a message request would have."""
        endpoint = "/v1/messages/count_tokens"
        body = self._read_json(request)
        counted = self._validate(AnthropicCountRequest, body)
        return self._respond(200, json.dumps({"input_tokens": counted.prompt_tokens()}).encode(), request_id,
                             endpoint)

    def raw_stream(self, request: Request, request_id: str) -> Response:
        return self._generate(request, request_id, RawRequest, "/raw/stream")

    def _generate(self, http: Request, request_id: str, model_cls: type, endpoint: str) -> Response:
        body = self._read_json(http)
        if model_cls is RawRequest and not body.get("model"):
            body = {**body, "model": self.config.models[0].id}
        request = self._validate(model_cls, body)
        try:
            fault, fault_after = self.faults.pick(http.headers, self.engine.uptime_s())
        except FaultError as exc:
            raise _Reject(400, str(exc), "invalid_request_error", "invalid_fault") from None
        if fault:
            metrics.FAULTS.labels(fault).inc()
        if fault in HTTP_FAULTS:
            status, message, type_, code = HTTP_FAULTS[fault]
            headers = _retry_headers(self.config.faults.retry_after_s) if status == 429 else []
            raise _Reject(status, message, type_, code, headers=headers)
        # the prompt's token ids first: tokenizing them remembers the counts prompt_tokens() needs
        prompt_ids = request.prompt_ids() if self.prefix_cache.enabled else None
        prompt_tokens = request.prompt_tokens()
        limiter = self.engine.limiter
        headers = [("x-request-id", request_id)]
        if limiter.enabled:
            wait = limiter.take(prompt_tokens + (request.token_limit() or self.config.output.mean_tokens))
            headers += limiter.headers()
            if wait:
                metrics.REJECTED.labels("rate_limit").inc()
                raise _Reject(429, f"Rate limit reached for {request.model}; try again in {format_reset(wait)}.",
                              "requests", "rate_limit_exceeded", headers=_retry_headers(wait) + headers[1:])
        seed = request.seed if request.seed is not None else f"{self.worker_index}:{next(self._counter)}"
        # Planned before a slot is taken: a schema the mock refuses is a 400 that holds nothing.
        try:
            plan = self.planner.plan(request, random.Random(f"{self.config.seed}:{seed}"))
        except ToolSchemaError as exc:
            raise _Reject(400, f"Invalid tool parameters schema: {exc}", "invalid_request_error",
                          "invalid_tool_schema", "tools") from None
        except RecursionError:
            raise _Reject(400, "Invalid tool parameters schema: nested too deeply", "invalid_request_error",
                          "invalid_tool_schema", "tools") from None
        if self.request_log is not None:  # what was asked and the tool calls answered (for agent tests)
            calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in plan.calls]
            self.request_log.write(json.dumps({"endpoint": endpoint, "body": body, "tool_calls": calls}) + "\n")
            self.request_log.flush()
        slot = self.engine.request_slot()
        if slot is None:
            metrics.REJECTED.labels("queue_full").inc()
            wait = self.engine.estimated_wait_s()
            raise _Reject(429, f"The server's queue is full ({self.engine.max_queue} waiting); "
                          f"retry in {format_reset(wait)}.", "rate_limit_error", "queue_full",
                          headers=_retry_headers(wait))
        try:
            metrics.PROMPT_TOKENS.inc(prompt_tokens)
            cached_tokens = None  # a request refused above leaves the cache as it was
            if prompt_ids is not None:
                cached_tokens = self._cached_prefix(prompt_ids)
                metrics.PREFIX_CACHE_QUERIES.inc(prompt_tokens)
                metrics.PREFIX_CACHE_HITS.inc(cached_tokens)
            ctx = _Context(self, http, request, plan, slot, prompt_tokens, fault, fault_after, cached_tokens)
            metrics.REQUESTS.labels(endpoint, "500" if fault == "error_event" and not request.stream else "200").inc()
            if request.stream:
                content_type = "text/plain; charset=utf-8" if ctx.kind == "raw" else "text/event-stream; charset=utf-8"
                return Response(200, headers=[("Content-Type", content_type), ("Cache-Control", "no-cache"),
                                              *headers], stream=ctx.stream())
        except BaseException:
            self.engine.release(slot)  # every path that does not hand the slot to a stream gives it back
            raise
        return ctx.respond(headers)


    def _cached_prefix(self, ids: bytes) -> int:
        """Prompt tokens served from the prefix cache (and the prompt's blocks entered in it). The block
        hashes of a long prompt are computed in the thread pool, its LRU bookkeeping on the loop."""
        size = self.prefix_cache.block_size
        if len(ids) >= prompts.OFFLOAD_CHARS * 4:
            import gevent

            hashes = gevent.get_hub().threadpool.apply(block_hashes, (ids, size))
        else:
            hashes = block_hashes(ids, size)
        return self.prefix_cache.lookup(hashes)


def _retry_headers(seconds: float) -> list[tuple[str, str]]:
    return [("retry-after-ms", str(max(1, round(seconds * 1000)))),
            ("retry-after", str(max(1, round(seconds + 0.4999))))]


class _Context:
    """One generation request in flight: its plan, slot, fault and timing."""

    def __init__(self, app: MockApp, http: Request, request: ChatRequest | CompletionRequest, plan: Plan,
                 slot: Slot, prompt_tokens: int, fault: str | None, fault_after: int,
                 cached_tokens: int | None = None):
        self.app, self.engine = app, app.engine
        self.request, self.plan, self.slot = request, plan, slot
        self.t0 = http.arrival  # deadlines count from when the request reached the machine
        self.sock = http.sock
        # The probe of a client that sent a FIN (see watch.py): an SSE comment, which clients ignore.
        self.watch = Watch(http.sock, b": ping\n\n" if request.stream and not isinstance(request, RawRequest) else None)
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = cached_tokens  # None: the prefix cache is off (usage then does not mention it)
        self.fault, self.fault_after = fault, fault_after
        self.kind = {ChatRequest: "chat", CompletionRequest: "completions", AnthropicRequest: "anthropic",
                     RawRequest: "raw", ResponsesRequest: "responses"}[type(request)]
        self.chat = self.kind == "chat"
        prefix = {"chat": "chatcmpl-", "anthropic": "msg_", "responses": "resp_"}.get(self.kind, "cmpl-")
        self.response_id = wire.new_id(prefix)
        self.created = int(time.time())
        self.slot_at = self.t0
        self.tokens_sent = 0

    def _usage(self) -> dict:
        return wire.usage_dict(self.prompt_tokens, self.plan.completion_tokens, self.plan.reasoning_tokens,
                               self.cached_tokens)

    def _first_token_deadline(self) -> float:
        """Wait for a slot if queued; the first token is due a prefill after request start or slot."""
        queued = not self.slot.granted
        if queued:
            self.watch.wait(self.slot.event)  # ClientGone drops the queue place (release)
        self.engine.wait(self.slot)
        self.slot_at = time.monotonic() if queued else self.t0
        return self.slot_at + self.engine.prefill_s(self.prompt_tokens - (self.cached_tokens or 0))

    def release(self, disconnected: bool = False) -> None:
        held = time.monotonic() - self.slot_at if self.slot.granted else None
        self.engine.release(self.slot, held)
        metrics.OUTPUT_TOKENS.inc(self.tokens_sent)
        if disconnected:
            metrics.DISCONNECTS.inc()

    def _chunks(self):
        if self.kind == "anthropic":
            return wire.AnthropicChunks(self.response_id, self.request.model, self.prompt_tokens, self.cached_tokens)
        if self.kind == "raw":
            return wire.RawChunks()
        if self.kind == "responses":
            return responses.ResponsesChunks(self.request, self.response_id, self.created)
        return wire.Chunks(self.response_id, self.created, self.request.model, self.request.include_usage, self.chat)

    def _token_chunks(self, chunks) -> Iterator[bytes | None]:
        """One item per output token: the chunk to write at its deadline, or None (sent later)."""
        plan = self.plan
        if plan.reasoning:
            for delta in self.app.text.delta_json(plan.reasoning):
                yield None if delta is None else chunks.reasoning(delta)
        if plan.content:
            for delta in self.app.text.delta_json(plan.content):
                yield None if delta is None else chunks.content(delta)
        for index, call in enumerate(plan.calls):
            for _ in range(call.name_tokens - 1):
                yield None
            if plan.legacy_function:
                yield chunks.function_call_start(call.name)
                for piece in call.pieces:
                    yield chunks.function_call_arguments(piece)
            else:
                yield chunks.tool_call_start(index, call.id, call.name)
                for piece in call.pieces:
                    yield chunks.tool_call_arguments(index, piece)

    # -- streaming -----------------------------------------------------------------------
    def stream(self) -> Iterator[bytes]:
        """The SSE body; each token leaves at its absolute deadline, its lateness is recorded."""
        chunks = self._chunks()
        fault, lag = self.fault, metrics.LagCounter(self.t0)
        client_left = True  # until the stream reaches an end of its own
        try:
            # The headers go out right away (TTFB is not TTFT); the role-only chat chunk with them, or, as
            # vLLM and SGLang do, with the first token (--role-chunk).
            opening = chunks.opening() if fault != "stall" else b""
            if self.chat and self.app.config.output.role_chunk == "with-first-token":
                yield b""
            else:
                yield opening
                opening = b""
            self.watch.headers_sent = True
            if fault == "stall":  # headers, then silence
                self.watch.sleep(time.monotonic() + self.app.config.faults.stall_s)
                client_left = False
                raise AbortConnection()
            deadline = self._first_token_deadline()
            self.watch.sleep(deadline)
            slow = self.app.config.faults.slow_factor if fault == "slow" else 1.0
            step = self.engine.constant_itl_s(slow)
            midstream = fault in ("error_event", "truncate", "disconnect")
            cut = self.fault_after if midstream or fault == "malformed" else -1
            if cut == 0 and fault == "malformed":
                yield opening + chunks.malformed()
                opening = b""
            pending: list[bytes] = [opening] if opening else []
            first = True
            for chunk in self._token_chunks(chunks):
                if first:
                    first = False
                else:
                    deadline += step if step is not None else self.engine.itl_s(slow)
                if midstream and self.tokens_sent == cut:
                    break
                self.tokens_sent += 1
                if chunk is None:  # held back (partial UTF-8, multi-token name): goes with a later token
                    continue
                now = time.monotonic()
                if deadline > now:
                    if pending:
                        yield b"".join(pending)
                        pending.clear()
                    sleep_until(deadline)
                    now = time.monotonic()
                lag.add(now - deadline)
                pending.append(chunk)
                if self.tokens_sent == cut and fault == "malformed":
                    pending.append(chunks.malformed())
                if len(pending) >= MAX_COALESCE:
                    yield b"".join(pending)
                    pending.clear()
            if midstream:  # after `cut` tokens, or at the end of a shorter answer
                if fault == "error_event":
                    pending.append(chunks.error("The server had an error while generating (injected by the mock)."))
                if pending:
                    yield b"".join(pending)
                client_left = False
                if fault == "disconnect":
                    raise AbortConnection(reset=True)
                return  # error_event, truncate: the HTTP response ends without finish_reason or [DONE]
            pending.append(chunks.tail(self.plan.finish_reason, self._usage(), self.plan.stop_sequence))
            yield b"".join(pending)
            client_left = False
        finally:
            self.release(disconnected=client_left)
            lag.flush()

    # -- non-streaming -------------------------------------------------------------------
    def respond(self, headers: list[tuple[str, str]]) -> Response:
        fault = self.fault
        try:
            deadline = self._first_token_deadline()
            slow = self.app.config.faults.slow_factor if fault == "slow" else 1.0
            step = self.engine.constant_itl_s(slow)
            for _ in range(max(0, self.plan.completion_tokens - 1)):
                deadline += step if step is not None else self.engine.itl_s(slow)
            if fault == "stall":
                deadline = time.monotonic() + self.app.config.faults.stall_s
            self.watch.sleep(deadline)
        except BaseException as exc:  # the client left, the server stops, or a bug: the slot goes back
            self.release(disconnected=isinstance(exc, ClientGone))
            raise
        self.tokens_sent = self.plan.completion_tokens
        self.release()
        if fault in ("stall", "disconnect"):
            raise AbortConnection(reset=fault == "disconnect")
        json_headers = [("Content-Type", "application/json"), *headers]
        if fault == "error_event" and self.kind == "anthropic":
            return Response(500, wire.anthropic_error_body("Internal error (injected by the mock).", "server_error"),
                            json_headers)
        if fault == "error_event":
            return Response(500, wire.error_body("The server had an error while generating (injected by the "
                                                 "mock).", "server_error", "internal_error"), json_headers)
        body = self._body()
        if fault == "malformed":
            return Response(200, body[: len(body) // 2], json_headers)
        if fault == "truncate":  # promise the full length, send half, close
            return Response(200, body[: len(body) // 2], json_headers, declared_length=len(body))
        return Response(200, body, json_headers)

    def _body(self) -> bytes:
        plan, text = self.plan, self.app.text
        content = text.text(plan.content) if plan.content else None
        if self.kind == "responses":
            return responses.body(self.request, self.response_id, self.created,
                                  text.text(plan.reasoning) if plan.reasoning else None,
                                  content, plan.calls,
                                  plan.finish_reason, self._usage())
        if self.kind == "anthropic":
            blocks = []
            if plan.reasoning:
                blocks.append({"type": "thinking", "thinking": text.text(plan.reasoning)})
            if content or not plan.calls:
                blocks.append({"type": "text", "text": content or ""})
            for call in plan.calls:
                try:
                    arguments = json.loads(call.arguments)
                except ValueError:  # cut short by max_tokens
                    arguments = {}
                blocks.append({"type": "tool_use", "id": wire.anthropic_tool_id(call.id), "name": call.name,
                               "input": arguments})
            return json.dumps({"id": self.response_id, "type": "message", "role": "assistant", "content": blocks,
                               "model": self.request.model,
                               "stop_reason": wire.anthropic_stop_reason(plan.finish_reason, plan.stop_sequence),
                               "stop_sequence": plan.stop_sequence,
                               "usage": {**wire.anthropic_input_usage(self.prompt_tokens, self.cached_tokens),
                                         "output_tokens": plan.completion_tokens}},
                              ensure_ascii=False).encode()
        if self.chat:
            message: dict = {"role": "assistant", "content": content}
            if plan.reasoning:
                message["reasoning_content"] = text.text(plan.reasoning)
            if plan.calls and plan.legacy_function:
                call = plan.calls[0]
                message["function_call"] = {"name": call.name, "arguments": call.arguments}
            elif plan.calls:
                message["tool_calls"] = [{"id": c.id, "type": "function",
                                          "function": {"name": c.name, "arguments": c.arguments}}
                                         for c in plan.calls]
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": content or "", "logprobs": None, "finish_reason": plan.finish_reason}
            obj = "text_completion"
        return json.dumps({"id": self.response_id, "object": obj, "created": self.created,
                           "model": self.request.model, "system_fingerprint": wire.SYSTEM_FINGERPRINT,
                           "choices": [choice], "usage": self._usage()}, ensure_ascii=False).encode()
