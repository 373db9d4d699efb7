"""What a request will answer: reasoning, content or tool calls, token counts, finish reason."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field

from tokenstorm.core import tokenizer

from .config import MockConfig
from .schema import (
    AnthropicRequest,
    ChatRequest,
    CompletionRequest,
    NamedToolChoice,
    ResponsesNamedTool,
    ResponsesRequest,
)
from .textgen import TextSource, Window
from .toolargs import call_id, make_arguments


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str
    name_tokens: int
    pieces: list[str]  # the arguments, one token per piece

    @property
    def n_tokens(self) -> int:
        return self.name_tokens + len(self.pieces)


@dataclass
class Plan:
    reasoning: Window | None = None
    content: Window | None = None
    calls: list[ToolCall] = field(default_factory=list)
    legacy_function: bool = False  # answer with delta.function_call instead of tool_calls
    finish_reason: str = "stop"
    stop_sequence: str | None = None  # the request's stop string that ended the output

    @property
    def reasoning_tokens(self) -> int:
        return self.reasoning.n_tokens if self.reasoning else 0

    @property
    def completion_tokens(self) -> int:
        content = self.content.n_tokens if self.content else 0
        return self.reasoning_tokens + content + sum(c.n_tokens for c in self.calls)


class Planner:
    def __init__(self, config: MockConfig, text: TextSource):
        self.config = config
        self.text = text

    def plan(self, request: ChatRequest | CompletionRequest, rng: random.Random) -> Plan:
        out = self.config.output
        limit = request.token_limit()
        budget = limit if limit is not None else math.inf
        plan = Plan()
        spec = self.config.model_spec(request.model)
        reasoning = out.reasoning_tokens if spec is None or spec.reasoning_tokens is None else spec.reasoning_tokens
        if reasoning:
            n = int(min(reasoning, budget))
            plan.reasoning = self.text.window(rng, n)
            budget -= n
            if budget <= 0:
                plan.finish_reason = "length"
                return plan
        if isinstance(request, ChatRequest | AnthropicRequest | ResponsesRequest):
            if isinstance(request, ChatRequest):
                calls = self._tool_calls(request, rng)
            elif isinstance(request, ResponsesRequest):
                calls = self._responses_tool_calls(request, rng)
            else:
                calls = self._anthropic_tool_calls(request, rng)
            if calls:
                plan.legacy_function = not request.tools
                plan.finish_reason = "function_call" if plan.legacy_function else "tool_calls"
                plan.calls = self._fit(calls, budget, plan)
                return plan
        natural = max(request.min_tokens, 1, round(out.mean_tokens * _lognormal(rng, out.cv)))
        if (request.ignore_eos and limit is not None) or natural >= budget:
            n, plan.finish_reason = int(budget), "length"
        else:
            n = natural
        plan.content = self.text.window(rng, n)
        stop = getattr(request, "stop", None)
        if stop:
            stops = [stop] if isinstance(stop, str) else stop
            text = self.text.text(plan.content)
            cut = self.text.cut_before(plan.content, stops)
            if cut is not None:  # the output ends before the stop string, as a server honouring it does
                plan.content, plan.finish_reason = cut, "stop"
                found = [s for s in stops if s and s in text]
                plan.stop_sequence = min(found, key=text.find) if found else None
        return plan

    def _tool_calls(self, request: ChatRequest, rng: random.Random) -> list[ToolCall]:
        if request.tools:
            choice = request.tool_choice or "auto"
            if choice == "none":
                return []
            tools = [t.function for t in request.tools]
            if isinstance(choice, NamedToolChoice):
                chosen = [next(f for f in tools if f.name == choice.function.name)]
            else:
                if choice == "auto" and not self._wants_tool(request, rng):
                    return []
                most = 1 if request.parallel_tool_calls is False else self.config.output.max_parallel_tool_calls
                chosen = rng.sample(tools, rng.randint(1, min(most, len(tools))))
        elif request.functions:
            choice = request.function_call or "auto"
            if choice == "none":
                return []
            if choice == "auto":
                if not self._wants_tool(request, rng):
                    return []
                chosen = [rng.choice(request.functions)]
            else:
                chosen = [next(f for f in request.functions if f.name == choice.name)]
        else:
            return []
        return self._calls(chosen, rng)

    @staticmethod
    def _calls(chosen: list, rng: random.Random) -> list[ToolCall]:
        calls = []
        for function in chosen:
            # ASCII JSON (non-ASCII escaped), so every token decodes on its own.
            arguments = json.dumps(make_arguments(function.parameters, rng), separators=(", ", ": "))
            pieces = [piece.decode() for piece in tokenizer.pieces(arguments)]
            calls.append(ToolCall(call_id(rng), function.name, arguments,
                                  max(1, tokenizer.count_tokens(function.name)), pieces))
        return calls

    def _anthropic_tool_calls(self, request: AnthropicRequest, rng: random.Random) -> list[ToolCall]:
        choice = request.tool_choice.type if request.tool_choice else "auto"
        if not request.tools or choice == "none":
            return []
        if choice == "tool":
            chosen = [next(t for t in request.tools if t.name == request.tool_choice.name)]
        else:
            if choice == "auto" and (request.has_tool_result()
                                     or rng.random() >= self.config.output.tool_call_probability):
                return []
            chosen = rng.sample(request.tools, rng.randint(1, min(self.config.output.max_parallel_tool_calls,
                                                                   len(request.tools))))
        return self._calls(chosen, rng)

    def _responses_tool_calls(self, request: ResponsesRequest, rng: random.Random) -> list[ToolCall]:
        choice = request.tool_choice or "auto"
        if not request.tools or choice == "none":
            return []
        if isinstance(choice, ResponsesNamedTool):
            chosen = [next(t for t in request.tools if t.name == choice.name)]
        else:
            if choice == "auto" and (request.has_tool_result()
                                     or rng.random() >= self.config.output.tool_call_probability):
                return []
            most = 1 if request.parallel_tool_calls is False else self.config.output.max_parallel_tool_calls
            chosen = rng.sample(request.tools, rng.randint(1, min(most, len(request.tools))))
        return self._calls(chosen, rng)

    def _wants_tool(self, request: ChatRequest, rng: random.Random) -> bool:
        # An agent loop ends when the model has seen a tool result: answer in text then.
        if request.messages[-1].role in ("tool", "function"):
            return False
        return rng.random() < self.config.output.tool_call_probability

    @staticmethod
    def _fit(calls: list[ToolCall], budget: float, plan: Plan) -> list[ToolCall]:
        fitted = []
        for call in calls:
            if budget < call.name_tokens:
                plan.finish_reason = "length"
                break
            budget -= call.name_tokens
            if budget < len(call.pieces):
                call.pieces = call.pieces[: int(budget)]
                call.arguments = "".join(call.pieces)
                plan.finish_reason = "length"
                fitted.append(call)
                break
            budget -= len(call.pieces)
            fitted.append(call)
        return fitted


def _lognormal(rng: random.Random, cv: float) -> float:
    if cv <= 0:
        return 1.0
    sigma = math.sqrt(math.log1p(cv * cv))
    return rng.lognormvariate(-sigma * sigma / 2, sigma)
