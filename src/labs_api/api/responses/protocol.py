"""Request schema of ``POST /v1/responses`` (OpenAI's ``CreateResponse``).

Every field of OpenAI's schema is either honoured, refused with a 422 naming it, or (where
agent clients always send it and it cannot change our answer) accepted and ignored; see the
README's "Responses" section. Unknown fields are refused like everywhere else.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from labs_api.api.request_model import RequestModel

#: OpenAI's bounds on ``metadata``.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512

#: Tools OpenAI runs itself. Agent clients send them whatever the server; we accept them and
#: do not offer them to the model (forcing one with ``tool_choice`` is a 422).
HOSTED_TOOL_TYPES = (
    "web_search", "web_search_preview", "web_search_2025_08_26",
    "web_search_preview_2025_03_11", "file_search", "code_interpreter", "image_generation",
    "computer_use_preview", "computer", "mcp", "local_shell", "shell", "tool_search",
    # Not hosted, but grouped client functions (Codex's sub-agents): not offered either.
    "namespace",
)
#: ``include`` values that concern only hosted tools, images or reasoning: nothing to include.
IGNORED_INCLUDES = (
    "reasoning.encrypted_content", "file_search_call.results", "web_search_call.results",
    "web_search_call.action.sources", "message.input_image.image_url",
    "computer_call_output.output.image_url", "code_interpreter_call.outputs",
)


class InputText(RequestModel):
    type: Literal["input_text"]
    text: str


class OutputText(RequestModel):
    """An earlier answer's text, as clients send previous output back."""

    type: Literal["output_text"]
    text: str
    annotations: list[Any] | None = Field(None, max_length=0)
    logprobs: list[Any] | None = None


class Refusal(RequestModel):
    type: Literal["refusal"]
    refusal: str


def _part_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("input_text", "output_text", "refusal") else None


ContentPart = Annotated[
    Annotated[InputText, Tag("input_text")] | Annotated[OutputText, Tag("output_text")]
    | Annotated[Refusal, Tag("refusal")],
    Discriminator(_part_tag, custom_error_type="unsupported_content",
                  custom_error_message="only input_text parts are supported (and output_text "
                  "or refusal in assistant messages); image, file and audio inputs are not"),
]


def _text_or_list(value: Any) -> str:
    return "text" if isinstance(value, str) else "list"


def text_or(items: Any) -> Any:
    """A string or a list of ``items``; a refusal names only the branch the value took."""
    return Annotated[Annotated[str, Tag("text")] | Annotated[list[items], Tag("list")],
                     Discriminator(_text_or_list)]


class MessageItem(RequestModel):
    """A message: OpenAI's EasyInputMessage (``type`` optional) and InputMessage."""

    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: text_or(ContentPart)  # type: ignore[valid-type]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None
    phase: Literal["commentary", "final_answer"] | None = None

    @model_validator(mode="after")
    def _parts_fit_role(self) -> MessageItem:
        if isinstance(self.content, list):
            for part in self.content:
                if self.role != "assistant" and part.type != "input_text":
                    raise ValueError(f"a {self.role} message holds input_text parts, not "
                                     f"{part.type}")
                if self.role == "assistant" and part.type == "input_text":
                    raise ValueError("an assistant message holds output_text or refusal parts")
        return self

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.refusal if isinstance(p, Refusal) else p.text for p in self.content)


class FunctionCallItem(RequestModel):
    """A call the model made earlier (sent back with its output)."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=64)
    arguments: str
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None
    namespace: str | None = None


class FunctionCallOutputItem(RequestModel):
    """What the client's function returned."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=256)
    output: str | list[InputText]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None

    def text(self) -> str:
        if isinstance(self.output, str):
            return self.output
        return "".join(p.text for p in self.output)


def _item_tag(value: Any) -> str | None:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(
        value, "type", None)
    return kind if kind in ("message", "function_call", "function_call_output") else None


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")] | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(_item_tag, custom_error_type="unsupported_item",
                  custom_error_message="supported input items are message, function_call and "
                  "function_call_output (reasoning, item_reference, hosted tool calls and the "
                  "other kinds are not)"),
]


class FunctionTool(RequestModel):
    type: Literal["function"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    defer_loading: bool | None = None


class HostedTool(RequestModel):
    """A tool OpenAI runs (web search, file search, ...): accepted, never offered."""

    model_config = ConfigDict(extra="allow")
    type: Literal[HOSTED_TOOL_TYPES]  # type: ignore[valid-type]


def _tool_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if kind == "function":
        return "function"
    return "hosted" if kind in HOSTED_TOOL_TYPES else None


Tool = Annotated[
    Annotated[FunctionTool, Tag("function")] | Annotated[HostedTool, Tag("hosted")],
    Discriminator(_tool_tag, custom_error_type="unsupported_tool",
                  custom_error_message="function tools are supported, and OpenAI's hosted "
                  "tools (and namespace groups) are accepted without being offered; custom "
                  "and apply_patch tools are not"),
]


class FunctionToolChoice(RequestModel):
    type: Literal["function"]
    name: str


class TextFormatText(RequestModel):
    type: Literal["text"]


class TextFormatJsonObject(RequestModel):
    type: Literal["json_object"]


class TextFormatJsonSchema(RequestModel):
    type: Literal["json_schema"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[TextFormatText | TextFormatJsonObject | TextFormatJsonSchema,
                       Field(discriminator="type")]


class TextParam(RequestModel):
    format: TextFormat | None = None
    verbosity: Literal["medium"] | None = Field(
        None, description="Only the default (medium): there is no other length control")


class ReasoningParam(RequestModel):
    """Accepted without effect: the served models do not reason."""

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class StreamOptions(RequestModel):
    include_obfuscation: bool | None = None


class CreateResponseRequest(RequestModel):
    """OpenAI's CreateResponse, as far as a local model can honour it."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model": "SmolLM2-135M-Instruct", "input": "Say hello.", "max_output_tokens": 50}]})

    model: str = Field(min_length=1)
    input: text_or(InputItem) = Field(  # type: ignore[valid-type]
        description="A text (a user message), or message / function_call / "
        "function_call_output items")
    instructions: str | None = Field(None, description="A system message put first")
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionToolChoice | dict[str, Any] | \
        None = None
    parallel_tool_calls: bool | None = Field(None, description="Accepted; at most one call "
                                             "is made per response")
    text: TextParam | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    store: bool = Field(True, description="Keep the response for GET and "
                        "previous_response_id (as at OpenAI, the default)")
    previous_response_id: str | None = Field(None, min_length=1, max_length=128)
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: Literal["disabled", "auto"] | None = Field(
        None, description="Only disabled: a prompt that does not fit is a 400")
    include: list[str] | None = Field(None, max_length=16)
    reasoning: ReasoningParam | None = None
    background: bool | None = Field(None, description="Only false")
    top_logprobs: Literal[0] | None = None
    service_tier: Literal["auto", "default"] | None = None
    # Hints about OpenAI's own caching, accounting and clients: nothing to do here.
    prompt_cache_key: str | None = Field(None, max_length=1024)
    prompt_cache_retention: Literal["in-memory", "in_memory", "24h"] | None = None
    safety_identifier: str | None = Field(None, max_length=1024)
    max_tool_calls: int | None = Field(None, ge=1, description="Bounds hosted tool calls, "
                                       "which never run here")
    client_metadata: dict[str, Any] | None = Field(
        None, description="Codex CLI's extension field; accepted and ignored")

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) > MAX_METADATA_PAIRS:
            raise ValueError(f"at most {MAX_METADATA_PAIRS} key-value pairs")
        for key, item in value.items():
            if len(key) > MAX_METADATA_KEY:
                raise ValueError(f"keys are at most {MAX_METADATA_KEY} characters")
            if len(item) > MAX_METADATA_VALUE:
                raise ValueError(f"values are at most {MAX_METADATA_VALUE} characters")
        return value

    @field_validator("background")
    @classmethod
    def _check_background(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("background responses are not supported; send the request "
                             "without it (and stream: true to see progress)")
        return value

    @field_validator("truncation")
    @classmethod
    def _check_truncation(cls, value: str | None) -> str | None:
        if value == "auto":
            raise ValueError("only 'disabled' is supported: a conversation that does not fit "
                             "the context is a 400 context_length_exceeded")
        return value

    @field_validator("include")
    @classmethod
    def _check_include(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            if item not in IGNORED_INCLUDES:
                raise ValueError(f"'{item[:100]}' cannot be included; accepted (with nothing "
                                 f"to include): {', '.join(IGNORED_INCLUDES)}")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _check_tool_choice(cls, choice: Any) -> Any:
        if isinstance(choice, dict):
            kind = str(choice.get("type"))[:64]
            if kind in HOSTED_TOOL_TYPES:
                raise ValueError(f"forcing the hosted tool '{kind}' is not supported: this "
                                 "server does not run it")
            raise ValueError(f"a tool_choice of type '{kind}' is not supported (use none, "
                             "auto, required or {'type': 'function', 'name': ...})")
        return choice

    @model_validator(mode="after")
    def _check_tools(self) -> CreateResponseRequest:
        names = [t.name for t in self.function_tools()]
        if len(set(names)) != len(names):
            raise ValueError("tools must have distinct function names")
        choice = self.tool_choice
        if choice not in (None, "none") and not names:
            raise ValueError("tool_choice needs function tools")
        if isinstance(choice, FunctionToolChoice) and choice.name not in names:
            raise ValueError(f"tool_choice names '{choice.name}', which is not among the tools")
        return self

    def function_tools(self) -> list[FunctionTool]:
        return [t for t in self.tools or [] if isinstance(t, FunctionTool)]

    def input_items(self) -> list[MessageItem | FunctionCallItem | FunctionCallOutputItem]:
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        return list(self.input)
