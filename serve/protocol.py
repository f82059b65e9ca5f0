"""OpenAI request and response models. Request fields follow OpenAI's docs order; vLLM's
extensions and llmloop's own sit in marked blocks. Each request builds its own engine options
(``to_sampling_options``): request value > server default > OpenAI default."""

import json
import time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from llmloop.serve.engine_api import SamplingOptions, StructuredOutputs
from llmloop.serve.protocol_base import OpenAIModel, Refused, refuse_unsupported
from llmloop.serve.protocol_tools import (
    MAX_GRAMMAR_COST,
    MAX_TOOL_CALLS,
    MAX_TOOLS,
    MAX_TOOLS_CHARS,
    ChatCompletionTool,
    DeltaToolCall,
    ResponseFormat,
    StructuredOutputsOptions,
    ToolCall,
    ToolChoice,
    schema_cost,
    too_costly,
)

_INT64 = 2**63

# Size caps: the work one request may ask for is bounded before anything is tokenized. Lists carry
# ``max_length`` so pydantic stops at the first item past the cap instead of validating a
# million-item list (an 8 MiB body holds 4M token ids: 4.5 s of validation uncapped).
MAX_TEXT_CHARS = 1 << 20
"""Per message (all its content parts) or per prompt: 1,048,576, OpenAI's cap on a message."""
MAX_REQUEST_CHARS = 1 << 21
"""All messages or prompts of one request: 4× what a 128k-token context holds at ~4 chars a
token; tokenizing it takes about a second on one core."""
MAX_MESSAGES = 2048
"""Messages per chat request, and content parts per message."""
MAX_PROMPTS = 2048
"""Prompts per completions request (OpenAI's documented maximum for a list of embedding inputs)."""
MAX_PROMPT_TOKEN_IDS = 1 << 18
"""Token ids per token prompt: twice a 128k context; longer never fits any model we serve."""
MAX_N = 64
"""Choices per prompt (OpenAI allows 128; 64 is vLLM's default max_num_seqs on CPU: one batch)."""
MAX_CHOICES = 2048
"""``n`` × prompts: engine requests one completions request may start."""
MAX_BEAM_WIDTH = 10
"""``n`` with ``use_beam_search``: vLLM asks for 2 × width logprobs per step, and its
``max_logprobs`` default is 20."""
MAX_TOKEN_ID_LIST = 1024
"""Entries in ``logit_bias``, ``allowed_token_ids``, ``stop_token_ids`` and ``bad_words``
(OpenAI caps ``logit_bias`` at 300)."""

# Sampling fields a server may default (from the model's generation_config.json or config).
DEFAULTABLE_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
_OPENAI_DEFAULTS = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": None,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
}


_STRUCTURED_OUTPUTS = "use structured_outputs or response_format"


REFUSED: dict[str, Refused] = {
    # Parameters of OpenAI's and vLLM's chat and completions APIs that we refuse (a 400 naming
    # the parameter). Other unknown fields are ignored, as vLLM's server does.
    # --- OpenAI ---
    "audio": Refused("audio output"),
    "modalities": Refused('output modalities other than ["text"]', ["text"]),
    "prediction": Refused("predicted outputs"),
    "web_search_options": Refused("web search"),
    "reasoning_effort": Refused("reasoning effort (the models served do not reason)"),
    "verbosity": Refused("verbosity"),
    "functions": Refused("the deprecated functions parameter; use tools"),
    "function_call": Refused("the deprecated function_call parameter; use tool_choice"),
    "service_tier": Refused('service tiers other than "auto" or "default"', "auto", "default"),
    "metadata": Refused("metadata on stored completions"),
    "prompt_cache_key": Refused("prompt cache keys (prefix caching is automatic)"),
    "safety_identifier": Refused("safety_identifier; use user"),
    # --- vLLM ---
    "guided_json": Refused(f"the removed guided_json; {_STRUCTURED_OUTPUTS}"),
    "guided_regex": Refused(f"the removed guided_regex; {_STRUCTURED_OUTPUTS}"),
    "guided_choice": Refused(f"the removed guided_choice; {_STRUCTURED_OUTPUTS}"),
    "guided_grammar": Refused(f"the removed guided_grammar; {_STRUCTURED_OUTPUTS}"),
    "guided_decoding_backend": Refused("choosing the structured-output backend"),
    "chat_template": Refused("a chat template sent by the client"),
    "chat_template_kwargs": Refused("chat template arguments"),
    "add_generation_prompt": Refused("add_generation_prompt"),
    "continue_final_message": Refused("continue_final_message", False),  # vllm-router sends false
    "documents": Refused("documents; use the rag field"),
    "mm_processor_kwargs": Refused("multimodal inputs"),
    "priority": Refused("request priority"),
    "request_id": Refused("client-chosen request ids"),
    "return_tokens_as_token_ids": Refused("return_tokens_as_token_ids"),
    "return_token_ids": Refused("return_token_ids"),
    "cache_salt": Refused("cache_salt"),
    "kv_transfer_params": Refused("disaggregated prefill"),
    "vllm_xargs": Refused("vllm_xargs"),
    "logits_processors": Refused("custom logits processors"),
    "truncate_prompt_tokens": Refused("prompt truncation"),
    "spaces_between_special_tokens": Refused("spaces_between_special_tokens"),
    "thinking_token_budget": Refused("thinking budgets (the models served do not reason)"),
}


class StreamOptions(OpenAIModel):
    include_usage: bool = False


class RagOptions(OpenAIModel):
    index: str | None = None
    """Index to retrieve from (default: the server's --rag-index)."""
    top_k: int = Field(4, ge=1, le=50)


class TextContentPart(OpenAIModel):
    type: Literal["text"]
    text: Annotated[str, Field(max_length=MAX_TEXT_CHARS)]


class ChatMessage(OpenAIModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: (
        Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
        | Annotated[list[TextContentPart], Field(max_length=MAX_MESSAGES)]
        | None
    ) = None
    name: Annotated[str, Field(max_length=256)] | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=MAX_TOOL_CALLS)] | None = None
    """An assistant turn's calls, as an earlier response returned them."""
    tool_call_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    """A tool turn: the call it answers."""

    @model_validator(mode="after")
    def _check_size(self):
        if (
            len(self.text()) + sum(len(c.function.arguments) for c in self.tool_calls or ())
            > MAX_TEXT_CHARS
        ):
            raise ValueError(f"content: at most {MAX_TEXT_CHARS} characters in all its parts")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("tool_calls: only assistant messages carry tool calls")
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("tool_call_id: a tool message must name the call it answers")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


_TokenId = Annotated[int, Field(ge=0, lt=_INT64)]
_TokenIdList = Annotated[list[_TokenId], Field(max_length=MAX_TOKEN_ID_LIST)]


def check_messages_size(messages: list[ChatMessage]) -> list[ChatMessage]:
    """A conversation within MAX_REQUEST_CHARS in all (each message is capped on its own)."""
    if sum(len(m.text()) for m in messages) > MAX_REQUEST_CHARS:
        raise ValueError(f"at most {MAX_REQUEST_CHARS} characters in all messages")
    return messages


class SamplingRequest(OpenAIModel):
    """Fields chat and text completions share."""

    _refuse = model_validator(mode="before")(refuse_unsupported(REFUSED))

    model: str
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: (
        Annotated[
            dict[
                Annotated[str, Field(pattern=r"^[0-9]{1,10}$")],
                Annotated[float, Field(ge=-100, le=100)],
            ],
            Field(max_length=MAX_TOKEN_ID_LIST),
        ]
        | None
    ) = None
    """Token id (as a string) → a bias from -100 to 100 added to its logit."""
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=MAX_N)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    seed: int | None = Field(None, ge=-_INT64, lt=_INT64)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    user: str | None = None
    response_format: ResponseFormat | None = None
    """``json_object`` or ``json_schema``: the output is guaranteed to parse (and to match)."""

    # --- vLLM extensions (names as vLLM's OpenAI server) ---
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=2.0)
    use_beam_search: bool = False
    length_penalty: float = 1.0
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    stop_token_ids: _TokenIdList | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    allowed_token_ids: _TokenIdList | None = None
    bad_words: (
        Annotated[
            list[Annotated[str, Field(min_length=1, max_length=256)]],
            Field(max_length=128),  # vLLM's VLLM_MAX_NUM_BAD_WORDS
        ]
        | None
    ) = None
    prompt_logprobs: int | None = Field(None, ge=0, le=20)
    """The top log-probabilities of each prompt token (vLLM's field); the response carries them
    in ``prompt_logprobs``."""
    structured_outputs: StructuredOutputsOptions | None = None
    """One of json (a schema), regex, choice, grammar (EBNF) or json_object."""

    # --- llmloop extensions ---
    store: bool | None = None
    """False: do not log this request (OpenAI's field)."""

    @model_validator(mode="after")
    def _check_stop(self):
        if isinstance(self.stop, list) and len(self.stop) > 16:
            raise ValueError("stop: at most 16 sequences")
        if self.use_beam_search and self.stream:
            raise ValueError("use_beam_search: streaming is not supported with beam search")
        if self.response_format and self.response_format.type != "text" and self.structured_outputs:
            raise ValueError("structured_outputs: give either it or response_format, not both")
        if self.prompt_logprobs is not None and self.stream:
            raise ValueError("prompt_logprobs: not returned on streams; ask without stream")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError("min_tokens: must not exceed max_tokens")
        return self

    @field_validator("use_beam_search")
    @classmethod
    def _check_beam_width(cls, use_beam_search: bool, info: ValidationInfo) -> bool:
        if use_beam_search and info.data.get("n", 1) > MAX_BEAM_WIDTH:
            raise ValueError(f"n (the beam width) must be at most {MAX_BEAM_WIDTH}")
        return use_beam_search

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return tuple(s for s in stops if s)

    def to_sampling_options(
        self,
        max_tokens: int,
        defaults: dict[str, Any],
        logprobs: int | None,
        prompt_logprobs: int | None,
        structured_outputs: StructuredOutputs | None,
    ) -> SamplingOptions:
        def pick(name: str):
            value = getattr(self, name)
            if value is not None:
                return value
            return defaults.get(name, _OPENAI_DEFAULTS[name])

        top_k = pick("top_k")
        return SamplingOptions(
            n=self.n,
            max_tokens=max_tokens,
            temperature=pick("temperature"),
            top_p=pick("top_p"),
            top_k=top_k if top_k and top_k > 0 else None,
            min_p=pick("min_p"),
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            repetition_penalty=pick("repetition_penalty"),
            seed=self.seed,
            stop=self.stop_sequences(),
            ignore_eos=self.ignore_eos,
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
            use_beam_search=self.use_beam_search,
            length_penalty=self.length_penalty,
            stream=self.stream,
            min_tokens=self.min_tokens,
            stop_token_ids=tuple(self.stop_token_ids or ()),
            include_stop_str_in_output=self.include_stop_str_in_output,
            skip_special_tokens=self.skip_special_tokens,
            logit_bias={int(k): v for k, v in (self.logit_bias or {}).items()},
            allowed_token_ids=tuple(self.allowed_token_ids) if self.allowed_token_ids else None,
            bad_words=tuple(self.bad_words or ()),
            structured_outputs=structured_outputs,
        )

    def sampling_record(self) -> dict:
        """The sampling fields as sent, for the request log."""
        fields = SamplingRequest.model_fields.keys() - {"model", "stream_options", "user", "store"}
        return self.model_dump(include=fields, exclude_none=True, by_alias=True)


class ChatCompletionRequest(SamplingRequest):
    messages: Annotated[
        list[ChatMessage],
        Field(min_length=1, max_length=MAX_MESSAGES),
        AfterValidator(check_messages_size),
    ]
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    max_completion_tokens: int | None = Field(None, ge=1)

    tools: Annotated[list[ChatCompletionTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    """Default: "auto" with tools, "none" without (OpenAI's)."""
    parallel_tool_calls: bool = True

    # --- llmloop extensions ---
    rag: RagOptions | None = None
    """Retrieve context for the last user turn from an index; the response carries citations."""

    @model_validator(mode="after")
    def _check_logprobs(self):
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs: requires logprobs to be true")
        return self

    @model_validator(mode="after")
    def _check_tools(self):
        names = [t.function.name for t in self.tools or ()]
        if len(set(names)) != len(names):
            raise ValueError("tools: function names must be unique")
        schemas = [t.function.parameters for t in self.tools or () if t.function.parameters]
        if len(json.dumps(schemas)) > MAX_TOOLS_CHARS:
            raise ValueError(f"tools: at most {MAX_TOOLS_CHARS} characters in all parameters")
        if sum(map(schema_cost, schemas)) > MAX_GRAMMAR_COST:
            raise ValueError(f"tools: {too_costly('their parameters together')}")
        choice = self.tool_choice
        if choice not in (None, "none", "auto") and not names:
            raise ValueError("tool_choice: needs tools")
        if not isinstance(choice, str | None) and choice.function.name not in names:
            raise ValueError(f"tool_choice: {choice.function.name!r} is not one of the tools")
        if self.forces_tool_call() and self.response_format and self.response_format.type != "text":
            raise ValueError("response_format: cannot be combined with a forced tool call")
        if self.calls_tools() and self.use_beam_search:
            raise ValueError("use_beam_search: cannot be combined with tools")
        return self

    def effective_tool_choice(self) -> "ToolChoice":
        if self.tool_choice is not None:
            return self.tool_choice
        return "auto" if self.tools else "none"

    def calls_tools(self) -> bool:
        """The model may (or must) call a tool: its output is parsed for tool calls."""
        return bool(self.tools) and self.effective_tool_choice() != "none"

    def forces_tool_call(self) -> bool:
        return self.calls_tools() and self.effective_tool_choice() != "auto"

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


_TokenIds = Annotated[list[int], Field(min_length=1, max_length=MAX_PROMPT_TOKEN_IDS)]


class CompletionRequest(SamplingRequest):
    prompt: (
        Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
        | Annotated[
            list[Annotated[str, Field(max_length=MAX_TEXT_CHARS)]],
            Field(min_length=1, max_length=MAX_PROMPTS),
        ]
        | _TokenIds
        | Annotated[list[_TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)]
    )
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's completions default

    @field_validator("prompt", mode="before")
    @classmethod
    def _check_prompt_list(cls, prompt):
        """Before the union tries each of its types on a list, which would report every item of
        every type it does not match (2 s for 200k strings): one clear error, in linear time."""
        if not isinstance(prompt, list) or not prompt:
            return prompt
        kind = type(prompt[0])
        if kind is int and len(prompt) > MAX_PROMPT_TOKEN_IDS:
            raise ValueError(f"at most {MAX_PROMPT_TOKEN_IDS} token ids")
        if kind is not int and len(prompt) > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts")
        if kind not in (str, int, list) or not all(type(p) is kind for p in prompt):
            raise ValueError("a string, a list of strings, of token ids, or of token-id lists")
        return prompt

    @field_validator("prompt")
    @classmethod
    def _check_size(cls, prompt, info: ValidationInfo):
        prompts = _as_list(prompt)
        if len(prompts) * info.data.get("n", 1) > MAX_CHOICES:
            raise ValueError(f"n × the number of prompts must be at most {MAX_CHOICES}")
        if sum(len(p) for p in prompts if isinstance(p, str)) > MAX_REQUEST_CHARS:
            raise ValueError(f"at most {MAX_REQUEST_CHARS} characters in all prompts")
        return prompt

    def prompts(self) -> list[str | list[int]]:
        """The prompt as a list of text or token-id prompts."""
        return _as_list(self.prompt)


def _as_list(prompt) -> list[str | list[int]]:
    if isinstance(prompt, str) or isinstance(prompt[0], int):
        return [prompt]
    return list(prompt)


# --- responses ---


class UsageInfo(OpenAIModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> "UsageInfo":
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class Citation(OpenAIModel):
    source: str
    chunk_id: str
    score: float
    text: str


class TopLogprob(OpenAIModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class PromptLogprob(OpenAIModel):
    """vLLM's ``Logprob``, as its server sends ``prompt_logprobs``."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


PromptLogprobs = list[dict[str, PromptLogprob] | None]
"""Per prompt token (the first: null), token id → its logprob, the chosen one and the top-k."""


class ChoiceLogprobs(OpenAIModel):
    content: list[ChatTokenLogprob] | None = None


class ChatResponseMessage(OpenAIModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)


class ChatCompletionChoice(OpenAIModel):
    index: int
    message: ChatResponseMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionResponse(OpenAIModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatCompletionChoice]
    usage: UsageInfo
    system_fingerprint: str | None = None
    citations: list[Citation] | None = None
    prompt_logprobs: PromptLogprobs | None = None


class ChatDelta(OpenAIModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChatChunkChoice(OpenAIModel):
    index: int
    delta: ChatDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(OpenAIModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: UsageInfo | None = None
    citations: list[Citation] | None = None


class CompletionLogprobs(OpenAIModel):
    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class CompletionChoice(OpenAIModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    prompt_logprobs: PromptLogprobs | None = None


class CompletionResponse(OpenAIModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


class ModelCard(OpenAIModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llmloop"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None


class ModelList(OpenAIModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


_NO_NUL = r"^[^\x00]*$"  # a NUL in a path is an OS error, not a 400, further in


class LoadLoRAAdapterRequest(OpenAIModel):
    lora_name: Annotated[str, Field(min_length=1, max_length=256, pattern=_NO_NUL)]
    lora_path: Annotated[str, Field(min_length=1, max_length=4096, pattern=_NO_NUL)]
    """A registered adapter (``NAME`` or ``NAME@VERSION``) or a directory in the artifact store."""
    load_inplace: bool = False
    """Replace an adapter already served under ``lora_name`` (vLLM's name for it)."""


class UnloadLoRAAdapterRequest(OpenAIModel):
    lora_name: Annotated[str, Field(min_length=1)]


class EmbeddingRequest(OpenAIModel):
    input: str | Annotated[list[str], Field(min_length=1, max_length=2048)]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Embedding(OpenAIModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(OpenAIModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: UsageInfo


class ModerationRequest(OpenAIModel):
    input: str | Annotated[list[str], Field(min_length=1, max_length=256)]
    model: str | None = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class ModerationResult(OpenAIModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]


class ModerationResponse(OpenAIModel):
    id: str
    model: str
    results: list[ModerationResult]
