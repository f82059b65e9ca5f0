"""The small engine interface the server talks to.

``serve/engine.py`` implements it with vLLM's ``AsyncLLM`` (the only module that imports vllm);
tests implement it with an in-process fake. Field names follow ``vllm.SamplingParams`` and
``vllm.RequestOutput`` so the mapping stays obvious.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol


class EngineRequestError(ValueError):
    """The engine rejected a request's parameters; the message says which (rendered as a 400)."""


class EngineOverloadedError(RuntimeError):
    """The engine's queue bound was reached (rendered as a 503 with Retry-After)."""


@dataclass(frozen=True)
class StructuredOutputs:
    """A constraint on what the engine may generate; exactly one field set. Names as vLLM's
    ``StructuredOutputsParams`` (decoded by xgrammar)."""

    json: dict | str | None = None
    """A JSON schema (a dict, or its text)."""
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    grammar: str | None = None
    """EBNF (GBNF) or Lark."""
    json_object: bool | None = None
    """Any JSON object."""
    structural_tag: str | None = None
    """xgrammar's structural tag, as JSON text (tool calls: ``ToolCalling.constraint``)."""


@dataclass(frozen=True)
class SamplingOptions:
    """What one request asks the engine to do; names and defaults as ``vllm.SamplingParams``."""

    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    """``None`` disables top-k."""
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None
    """Top log-probabilities to return per generated token (0: only the sampled token's)."""
    prompt_logprobs: int | None = None
    """Top log-probabilities to return per prompt token (``echo`` + ``logprobs``)."""
    use_beam_search: bool = False
    """Beam search with beam width ``n``."""
    length_penalty: float = 1.0
    stream: bool = False
    """Deliver outputs as deltas (streaming) instead of once at the end."""
    min_tokens: int = 0
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    logit_bias: dict[int, float] = field(default_factory=dict)
    allowed_token_ids: tuple[int, ...] | None = None
    bad_words: tuple[str, ...] = ()
    structured_outputs: StructuredOutputs | None = None
    priority: int = 0
    """vLLM's request priority: lower runs first when sequences wait for a place in the
    running batch (batch lines run at 1, below interactive requests)."""
    trace_headers: dict[str, str] | None = None
    """W3C ``traceparent`` of the request's engine span, so vLLM's spans join its trace
    (``serve/tracing.py``); None when tracing is off."""


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top_logprobs: tuple[tuple[str, float], ...] = ()
    """The most likely tokens at this position, best first, as (token, logprob)."""
    token_id: int | None = None
    rank: int | None = None
    """The token's rank in the vocabulary at this position (1: the most likely)."""
    top_token_ids: tuple[int, ...] = ()
    """The ids of ``top_logprobs``, in the same order."""


@dataclass
class SequenceOutput:
    """One of the ``n`` sequences of a request; with ``stream`` only what is new since last time."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    """"stop" | "length" | "abort" once finished, else None."""


@dataclass
class EngineOutput:
    request_id: str
    outputs: list[SequenceOutput]
    finished: bool
    num_prompt_tokens: int
    prompt_logprobs: list[TokenLogprob | None] | None = None
    """One entry per prompt token; the first is None (nothing precedes it)."""
    num_cached_tokens: int = 0


@dataclass
class LoadedAdapter:
    name: str
    path: str
    created: int = 0
    """Unix seconds when it was loaded."""


@dataclass(frozen=True)
class ParsedToolCall:
    name: str
    arguments: str
    """JSON text."""


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of the ``index``-th call of a stream: its name once, then its arguments' text."""

    index: int
    name: str | None = None
    arguments: str = ""


class ToolCallParser(Protocol):
    """One choice's output split into text and tool calls, in the format of the model's chat
    template (vLLM's ``ToolParser``). Stateful while streaming: one per choice."""

    def parse(self, text: str) -> tuple[str | None, list[ParsedToolCall]]:
        """The whole output → (the text outside any call, the calls)."""
        ...

    def parse_delta(
        self, delta_text: str, final: bool = False
    ) -> tuple[str | None, list[ToolCallDelta]]:
        """The next piece of a streamed output → (new text to show, new pieces of calls); holds
        back what could still become a call until ``final``."""
        ...


class ToolCalling(Protocol):
    """How the served model writes tool calls: the grammar that forces one, and the parser."""

    name: str
    """vLLM's name for the format (``--tool-call-parser``), e.g. "hermes"."""

    def constraint(
        self, tools: list[dict], tool_choice: str | dict, parallel_tool_calls: bool
    ) -> StructuredOutputs | None:
        """What the engine must follow for ``tool_choice`` ("required" or a named function:
        a call to one of ``tools`` with arguments that match its schema; "auto": only the
        arguments of strict tools); None when nothing is forced."""
        ...

    def parser(self) -> ToolCallParser: ...


class Tokenizer(Protocol):
    """The subset of a Hugging Face tokenizer the server uses."""

    eos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...

    def apply_chat_template(self, conversation: list[dict], **kwargs) -> str | list[int]: ...


class Engine(Protocol):
    model_name: str
    """The base model's served name."""
    max_model_len: int
    """Prompt + generated tokens one sequence may hold."""
    vocab_size: int
    max_num_seqs: int
    """Sequences run at once; the engine queues the rest first come, first served."""
    tokenizer: Tokenizer
    tool_calling: ToolCalling

    def generate(
        self,
        prompt_token_ids: list[int],
        options: SamplingOptions,
        request_id: str,
        lora_name: str | None = None,
    ) -> AsyncIterator[EngineOutput]:
        """Outputs for one prompt until ``finished``; closing the iterator aborts the request.

        Raises ``EngineRequestError`` for parameters the engine rejects and
        ``EngineOverloadedError`` when its queue is full."""
        ...

    async def add_lora(self, name: str, path: str) -> LoadedAdapter: ...

    async def remove_lora(self, name: str) -> None: ...

    def list_loras(self) -> list[LoadedAdapter]: ...

    async def check_health(self) -> None: ...

    def shutdown(self) -> None: ...
