"""Request bodies the mock accepts, validated strictly (a string where a number belongs is a 400)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tokenstorm.core.tokenizer import responses_messages

from . import prompts


class _Body(BaseModel):
    # Clients send many fields the mock does not use; accept them, check the ones it does.
    model_config = ConfigDict(extra="allow", strict=True)


class StreamOptions(_Body):
    include_usage: bool = False


class ContentPart(_Body):
    type: str
    text: str | None = None


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if self.content:
            return "".join(part.text or "" for part in self.content)
        return ""


class FunctionDef(_Body):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: NamedFunction


class _Generation(_Body):
    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int = Field(1, ge=1, le=1, description="the mock answers one choice per request")
    seed: int | None = None
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    stop: str | list[str] | None = Field(None, description="the output ends before the first of these")

    @field_validator("stream", "n", mode="before")
    @classmethod
    def _null_is_the_default(cls, value: Any, info) -> Any:
        """`"stream": null` and `"n": null` (the SDKs send them) mean the default."""
        if value is None:
            return cls.model_fields[info.field_name].default
        return value

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> _Generation:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self


class ChatRequest(_Generation):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDef] | None = None
    function_call: Literal["none", "auto"] | NamedFunction | None = None

    @model_validator(mode="after")
    def _named_choices_exist(self) -> ChatRequest:
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {t.function.name for t in self.tools or []}
            if self.tool_choice.function.name not in names:
                raise ValueError(f"tool_choice names function {self.tool_choice.function.name!r}, "
                                 "which is not in tools")
        if self.tool_choice in ("required",) and not self.tools:
            raise ValueError("tool_choice 'required' needs tools")
        if isinstance(self.function_call, NamedFunction):
            names = {f.name for f in self.functions or []}
            if self.function_call.name not in names:
                raise ValueError(f"function_call names {self.function_call.name!r}, which is not in functions")
        return self

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def _prompt(self) -> tuple[list[dict], list[dict]]:
        tools = [t.model_dump(exclude_none=True) for t in self.tools or []]
        tools += [{"type": "function", "function": f.model_dump(exclude_none=True)} for f in self.functions or []]
        return [m.model_dump(include={"role", "content", "name"}, exclude_none=True) for m in self.messages], tools

    def prompt_tokens(self) -> int:
        return prompts.chat_prompt(*self._prompt())

    def prompt_ids(self) -> bytes:
        return prompts.chat_prompt_ids(*self._prompt())


class CompletionRequest(_Generation):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)  # the legacy endpoint's documented default

    def token_limit(self) -> int | None:
        return self.max_tokens

    def prompt_tokens(self) -> int:
        prompt = self.prompt
        if isinstance(prompt, str):
            return prompts.count(prompt)
        if prompt and isinstance(prompt[0], int):
            return len(prompt)
        if prompt and isinstance(prompt[0], list):
            return sum(len(p) for p in prompt)
        return sum(prompts.count(p) for p in prompt)

    def prompt_ids(self) -> bytes:
        """Several prompts (a list) are one batch in the mock: their ids in order."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return prompts.ids(prompt)
        if prompt and isinstance(prompt[0], int):
            return prompts.id_list(prompt)
        if prompt and isinstance(prompt[0], list):
            return b"".join(prompts.id_list(p) for p in prompt)
        return b"".join(prompts.ids(p) for p in prompt)


class AnthropicBlock(_Body):
    type: str
    text: str | None = None


class AnthropicMessage(_Body):
    role: Literal["user", "assistant"]
    content: str | list[AnthropicBlock]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(block.text or "" for block in self.content)


class AnthropicTool(_Body):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    input_schema: dict[str, Any] | None = None

    @property
    def parameters(self) -> dict[str, Any] | None:
        return self.input_schema


class AnthropicToolChoice(_Body):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None


class AnthropicRequest(_Body):
    """Anthropic Messages (`POST /v1/messages`): text, thinking and tool_use answers."""

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[AnthropicBlock] | None = None
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=1)
    seed: int | None = None  # not Anthropic's; lets tests make answers repeatable
    ignore_eos: bool = False
    min_tokens: int = 0
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    stop_sequences: list[str] | None = Field(None, description="the output ends before the first of these")

    @property
    def stop(self) -> list[str] | None:
        return self.stop_sequences

    @model_validator(mode="after")
    def _named_tool_exists(self) -> AnthropicRequest:
        choice = self.tool_choice
        if choice is not None and choice.type == "tool" and choice.name not in {t.name for t in self.tools or []}:
            raise ValueError(f"tool_choice names tool {choice.name!r}, which is not in tools")
        if choice is not None and choice.type == "any" and not self.tools:
            raise ValueError("tool_choice 'any' needs tools")
        return self

    @property
    def include_usage(self) -> bool:
        return True

    def has_tool_result(self) -> bool:
        """The last user turn carries a tool_result: the agent loop has had its answer."""
        content = self.messages[-1].content
        return isinstance(content, list) and any(block.type == "tool_result" for block in content)

    def token_limit(self) -> int:
        return self.max_tokens

    def _prompt(self) -> tuple[list[dict], list[dict]]:
        system = self.system if isinstance(self.system, str) else "".join(b.text or "" for b in self.system or [])
        messages = [{"role": m.role, "content": m.text()} for m in self.messages]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        return messages, [t.model_dump(exclude_none=True) for t in self.tools or []]

    def prompt_tokens(self) -> int:
        return prompts.chat_prompt(*self._prompt())

    def prompt_ids(self) -> bytes:
        return prompts.chat_prompt_ids(*self._prompt())


class AnthropicCountRequest(AnthropicRequest):
    """`POST /v1/messages/count_tokens`: a Messages request without max_tokens."""

    max_tokens: int | None = Field(None, ge=1)


class RawRequest(_Body):
    """`POST /raw/stream`: a plain streaming text API (chunked text/plain, no SSE)."""

    prompt: str
    max_tokens: int = Field(128, ge=1)
    model: str = ""
    seed: int | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    stream: bool = True

    @property
    def include_usage(self) -> bool:
        return False

    def token_limit(self) -> int:
        return self.max_tokens

    def prompt_tokens(self) -> int:
        return prompts.count(self.prompt)

    def prompt_ids(self) -> bytes:
        return prompts.ids(self.prompt)


class ResponsesInputItem(_Body):
    """One item of a Responses API `input` list: a message, or a function call and its output."""

    type: str = "message"
    role: Literal["system", "developer", "user", "assistant"] | None = None
    content: str | list[ContentPart] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[ContentPart] | None = None

    @model_validator(mode="after")
    def _complete(self) -> ResponsesInputItem:
        if self.type == "message" and (self.role is None or self.content is None):
            raise ValueError("a message input item needs `role` and `content`")
        if self.type == "function_call_output" and (self.call_id is None or self.output is None):
            raise ValueError("a function_call_output input item needs `call_id` and `output`")
        return self


class ResponsesTool(_Body):
    type: Literal["function"] = Field(description="the mock answers function tools only")
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponsesNamedTool(_Body):
    type: Literal["function"]
    name: str


class ResponsesReasoning(_Body):
    effort: str | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class ResponsesRequest(_Body):
    """OpenAI's Responses API (`POST /v1/responses`): text, reasoning items, function calls."""

    model: str = Field(min_length=1)
    input: list[ResponsesInputItem] = Field(description="a string is one user message")
    instructions: str | None = None
    stream: bool = False
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    reasoning: ResponsesReasoning | None = None
    tools: list[ResponsesTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ResponsesNamedTool | None = None
    parallel_tool_calls: bool | None = None
    seed: int | None = None  # not OpenAI's; lets tests make answers repeatable
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)

    @field_validator("stream", mode="before")
    @classmethod
    def _null_is_false(cls, value: Any) -> Any:
        return False if value is None else value

    @field_validator("input", mode="before")
    @classmethod
    def _text_is_a_user_message(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [{"role": "user", "content": value}]
        if not isinstance(value, list) or not value:
            raise ValueError("input must be a string or a non-empty list of input items")
        return value

    @model_validator(mode="after")
    def _named_tool_exists(self) -> ResponsesRequest:
        if isinstance(self.tool_choice, ResponsesNamedTool) and \
                self.tool_choice.name not in {t.name for t in self.tools or []}:
            raise ValueError(f"tool_choice names function {self.tool_choice.name!r}, which is not in tools")
        if self.tool_choice == "required" and not self.tools:
            raise ValueError("tool_choice 'required' needs tools")
        return self

    @property
    def include_usage(self) -> bool:
        return True

    @property
    def reasoning_summary(self) -> bool:
        """Reasoning streams as a summary (reasoning.summary set), else as raw reasoning text."""
        return bool(self.reasoning and self.reasoning.summary)

    def has_tool_result(self) -> bool:
        """The last input item is a function call's output: the agent loop has had its answer."""
        return self.input[-1].type == "function_call_output"

    def token_limit(self) -> int | None:
        return self.max_output_tokens

    def _prompt(self) -> tuple[list[dict], list[dict]]:
        messages = responses_messages([i.model_dump(exclude_none=True) for i in self.input], self.instructions)
        return messages, [t.model_dump(exclude_none=True) for t in self.tools or []]

    def prompt_tokens(self) -> int:
        return prompts.chat_prompt(*self._prompt())

    def prompt_ids(self) -> bytes:
        return prompts.chat_prompt_ids(*self._prompt())
