"""``POST /v1/chat/completions``.

The request flows one way: input safety → retrieval (RAG) → chat template → engine → output
safety (as it streams) → response, then the request log. This module builds the prompt and
shapes the response; ``serve/pipeline.py`` does the rest, as for text completions. Every text
the log sees is redacted."""

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import jinja2
from fastapi import APIRouter, Depends, Request

from llmloop.serve.auth.deps import limit_infer
from llmloop.serve.deps import EngineDep
from llmloop.serve.engine_api import EngineRequestError, ParsedToolCall, Tokenizer, ToolCallParser
from llmloop.serve.errors import BadRequestError
from llmloop.serve.generation import off_loop, resolve_max_tokens
from llmloop.serve.guardrails import CONTENT_FILTER, REFUSAL
from llmloop.serve.logprobs import SentLogprob, prompt_logprobs_of
from llmloop.serve.pipeline import Choice, ServeContext
from llmloop.serve.protocol import (
    ChatChunkChoice,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatResponseMessage,
    ChatTokenLogprob,
    ChoiceLogprobs,
    Citation,
    TopLogprob,
    UsageInfo,
)
from llmloop.serve.protocol_tools import DeltaFunctionCall, DeltaToolCall, FunctionCall, ToolCall
from llmloop.serve.records import logged_choice
from llmloop.serve.retrieval import retrieval_query, with_sources
from llmloop.serve.streaming import sse
from llmloop.serve.tools import (
    message_texts,
    offered_tools,
    request_messages,
    structured_outputs,
    template_inputs,
    tool_texts,
    with_texts,
    with_tool_texts,
)

router = APIRouter(dependencies=[Depends(limit_infer)])  # scope: infer, rate-limited
_DEFAULT_OUTPUT_RESERVE = 512
"""Tokens kept free for the answer when sources are added and the request sets no max_tokens."""


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def create_chat_completion(body: ChatCompletionRequest, request: Request, engine: EngineDep):
    chat = ChatContext(request, body, engine)
    messages, tools = request_messages(body.messages), offered_tools(body)
    chat.tools = tools
    # Templated first (off the event loop): a prompt that cannot fit costs no classifier time.
    prompt_ids = await off_loop(request, chat.render, messages)
    resolve_max_tokens(
        body.requested_max_tokens(), len(prompt_ids), engine.max_model_len, "max_tokens"
    )
    constraint = await off_loop(request, _constraint, body, engine)
    conversation = message_texts(messages)  # tool descriptions are screened as prompt text too
    texts, refused = await chat.screen_prompt(conversation + tool_texts(tools))
    chat.messages = with_texts(messages, texts[: len(conversation)])
    chat.tools = with_tool_texts(tools, texts[len(conversation) :])
    if refused:
        return chat.refuse()
    await _add_sources(chat)
    if chat.messages != messages or chat.tools != tools:  # redacted, or sources added
        prompt_ids = await off_loop(request, chat.render, chat.messages)
    chat.prompt_ids = [prompt_ids]
    max_tokens = resolve_max_tokens(
        body.requested_max_tokens(), chat.num_prompt_tokens, engine.max_model_len, "max_tokens"
    )
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    options = body.to_sampling_options(
        max_tokens, request.app.state.sampling_defaults, logprobs, body.prompt_logprobs, constraint
    )
    return await chat.generate(options)


def _constraint(body: ChatCompletionRequest, engine: EngineDep):
    try:
        return structured_outputs(body, engine.tool_calling)
    except EngineRequestError as e:
        raise BadRequestError(str(e), param="tool_choice") from e


def render_chat(tokenizer: Tokenizer, messages: list[dict], **template_kwargs) -> list[int]:
    """The model's chat template with the generation prompt, tokenized as vLLM's server does."""
    try:
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **template_kwargs
        )
    except (ValueError, TypeError, jinja2.TemplateError) as e:  # it rejects roles, order, ...
        raise BadRequestError(
            f"cannot apply the model's chat template: {e}", param="messages"
        ) from e
    return tokenizer.encode(text, add_special_tokens=False)


async def _add_sources(chat: "ChatContext") -> None:
    """Numbered sources for the conversation's last user turns, if the request (or the server)
    names an index; retrieved text passes the safety layer before it enters the prompt."""
    retrieval = chat.request.app.state.retrieval
    rag = chat.body.rag
    index = (rag.index if rag else None) or retrieval.default_index
    query = retrieval_query(chat.messages)
    if index is None or not query:
        return
    with chat.tracing.span("retrieval", {"llmloop.rag.index": index}):
        hits = await retrieval.search(index, query, rag.top_k if rag else 4)
        texts = await chat.screen_retrieved([hit.text for hit in hits])
    hits = [
        dataclasses.replace(hit, text=text)
        for hit, text in zip(hits, texts, strict=True)
        if text is not None
    ]
    tokenizer, max_model_len = chat.engine.tokenizer, chat.engine.max_model_len
    reserve = chat.body.requested_max_tokens() or min(_DEFAULT_OUTPUT_RESERVE, max_model_len // 4)
    prompt_ids = await off_loop(chat.request, chat.render, chat.messages)
    budget = max_model_len - len(prompt_ids) - reserve
    chat.messages, chat.citations = await off_loop(
        chat.request,
        with_sources,
        chat.messages,
        hits,
        lambda text: len(tokenizer.encode(text, add_special_tokens=False)),
        budget,
    )


@dataclass
class ChatContext(ServeContext):
    """A chat request's response shapes: ``chat.completion`` whole, ``chat.completion.chunk``
    streamed (the role first, then the deltas, then usage and citations). With tools, each
    choice's screened text is split into content and tool calls by the engine's parser."""

    endpoint = "chat.completions"
    id_prefix = "chatcmpl"
    body: ChatCompletionRequest
    _streams: dict[int, "_ToolCallStream"] = field(default_factory=dict)

    def render(self, messages: list[dict]) -> list[int]:
        tokenizer = self.engine.tokenizer
        format_name = self.engine.tool_calling.name
        messages, kwargs = template_inputs(messages, self.tools, tokenizer, format_name)
        return render_chat(tokenizer, messages, **kwargs)

    def response(self, choices: list[Choice], usage: UsageInfo) -> ChatCompletionResponse:
        prompt_logprobs = choices[0].prompt_logprobs if choices else None
        return ChatCompletionResponse(
            id=self.id, created=self.created, model=self.model, usage=usage,
            choices=[self._choice(c) for c in choices], citations=_citations(self.citations),
            prompt_logprobs=prompt_logprobs_of(prompt_logprobs, self.body.prompt_logprobs or 0),
        )  # fmt: skip

    def refusal(self) -> ChatCompletionResponse:
        message = ChatResponseMessage(content=REFUSAL, refusal=REFUSAL)
        refused = ChatCompletionChoice(index=0, message=message, finish_reason=CONTENT_FILTER)
        return ChatCompletionResponse(
            id=self.id, created=self.created, model=self.model, usage=UsageInfo.of(0, 0),
            choices=[refused],
        )  # fmt: skip

    def stream_start(self) -> list[str]:
        return [self._chunk([_role(i) for i in range(self.body.n)])]

    def chunk(self, choice: Choice) -> str:
        delta = ChatDelta(content=choice.text, refusal=_refusal(choice))
        finish_reason = choice.finish_reason
        if self.body.calls_tools() and not choice.is_refused:
            if choice.index not in self._streams:
                parallel = self.body.parallel_tool_calls
                ids = functools.partial(call_id, self.id, choice.index)
                self._streams[choice.index] = _ToolCallStream(self._parser(), ids, parallel)
            stream = self._streams[choice.index]
            delta.content, delta.tool_calls = stream.feed(choice.text, final=bool(finish_reason))
            finish_reason = self._finish_reason(finish_reason, stream.num_calls)
            if not (delta.content or delta.tool_calls or finish_reason or choice.logprobs):
                return ""  # held back: it may be the start of a call
        streamed = ChatChunkChoice(
            index=choice.index,
            delta=delta,
            logprobs=self._logprobs_of(choice),
            finish_reason=finish_reason,
        )
        return self._chunk([streamed])

    def stream_end(self, usage: UsageInfo) -> str | None:
        if not (self._include_usage() or self.citations):
            return None
        return self._chunk([], usage if self._include_usage() else None, self.citations)

    def refusal_events(self) -> list[str]:
        refusal = ChatDelta(content=REFUSAL, refusal=REFUSAL)
        events = [
            self._chunk([_role(0)]),
            self._chunk([ChatChunkChoice(index=0, delta=refusal, finish_reason=CONTENT_FILTER)]),
        ]
        if self._include_usage():
            events.append(self._chunk([], UsageInfo.of(0, 0)))
        return events

    def logged_choice(self, index: int, text: str, finish_reason: str | None) -> dict:
        content, calls = self._split(text, finish_reason)
        return logged_choice(
            index,
            content,
            self._finish_reason(finish_reason, len(calls)),
            [self._tool_call(index, i, call).model_dump() for i, call in enumerate(calls)],
        )

    def _split(
        self, text: str, finish_reason: str | None
    ) -> tuple[str | None, list[ParsedToolCall]]:
        """(content, tool calls) of a whole screened output."""
        if not self.body.calls_tools() or finish_reason == CONTENT_FILTER:
            return text, []
        content, calls = self._parser().parse(text)
        return content, calls if self.body.parallel_tool_calls else calls[:1]

    def _tool_call(self, choice_index: int, call_index: int, call: ParsedToolCall) -> ToolCall:
        function = FunctionCall(name=call.name, arguments=call.arguments)
        return ToolCall(id=call_id(self.id, choice_index, call_index), function=function)

    def _parser(self) -> ToolCallParser:
        return self.engine.tool_calling.parser()

    def _finish_reason(self, finish_reason: str | None, num_calls: int) -> str | None:
        """OpenAI's: "tool_calls" when the model called tools, but "stop" for a named
        tool_choice (the client asked for that call)."""
        named = not isinstance(self.body.effective_tool_choice(), str)
        if num_calls and finish_reason == "stop" and not named:
            return "tool_calls"
        return finish_reason

    def _include_usage(self) -> bool:
        return bool(self.body.stream_options and self.body.stream_options.include_usage)

    def _chunk(
        self, choices: list[ChatChunkChoice], usage: UsageInfo | None = None, citations=None
    ) -> str:
        return sse(
            ChatCompletionChunk(
                id=self.id, created=self.created, model=self.model, choices=choices,
                usage=usage, citations=_citations(citations),
            )
        )  # fmt: skip

    def _choice(self, choice: Choice) -> ChatCompletionChoice:
        content, calls = self._split(choice.text, choice.finish_reason)
        message = ChatResponseMessage(
            content=content,
            refusal=_refusal(choice),
            tool_calls=[self._tool_call(choice.index, i, c) for i, c in enumerate(calls)],
        )
        return ChatCompletionChoice(
            index=choice.index,
            message=message,
            logprobs=self._logprobs_of(choice),
            finish_reason=self._finish_reason(choice.finish_reason, len(calls)),
        )

    def _logprobs_of(self, choice: Choice) -> ChoiceLogprobs | None:
        if not self.body.logprobs or choice.logprobs is None:
            return None
        return _logprobs(choice.logprobs, self.body.top_logprobs or 0)


@dataclass
class _ToolCallStream:
    """One streamed choice through the tool-call parser: content deltas and OpenAI's tool-call
    deltas (the first piece of each call carries its id, type and name)."""

    parser: ToolCallParser
    call_id: Callable[[int], str]
    """A call's id from its index in the choice."""
    parallel_tool_calls: bool
    """False: only the first call is sent, as the whole answer keeps only the first."""
    num_calls: int = 0

    def feed(self, text: str, final: bool) -> tuple[str | None, list[DeltaToolCall] | None]:
        content, pieces = self.parser.parse_delta(text, final)
        if not self.parallel_tool_calls:
            pieces = [piece for piece in pieces if piece.index == 0]
        deltas = []
        for piece in pieces:
            if piece.name is not None:
                self.num_calls += 1
                first = DeltaFunctionCall(name=piece.name, arguments=piece.arguments)
                deltas.append(
                    DeltaToolCall(
                        index=piece.index,
                        id=self.call_id(piece.index),
                        type="function",
                        function=first,
                    )
                )
            elif piece.arguments:
                more = DeltaFunctionCall(arguments=piece.arguments)
                deltas.append(DeltaToolCall(index=piece.index, function=more))
        return content or None, deltas or None


def call_id(completion_id: str, choice_index: int, call_index: int) -> str:
    """The same id in the response, the stream and the log: derived from the completion's."""
    return f"call_{completion_id.rsplit('-', 1)[-1][:24]}_{choice_index}_{call_index}"


def _role(index: int) -> ChatChunkChoice:
    return ChatChunkChoice(index=index, delta=ChatDelta(role="assistant", content=""))


def _refusal(choice: Choice) -> str | None:
    return REFUSAL if choice.is_refused else None


def _citations(citations: list[dict] | None) -> list[Citation] | None:
    return [Citation(**c) for c in citations] if citations else None


def _logprobs(logprobs: list[SentLogprob], top_k: int) -> ChoiceLogprobs:
    return ChoiceLogprobs(
        content=[
            ChatTokenLogprob(
                token=sent.logprob.token,
                logprob=sent.logprob.logprob,
                bytes=list(sent.logprob.token.encode()),
                top_logprobs=[
                    TopLogprob(token=t, logprob=v, bytes=list(t.encode()))
                    for t, v in sent.logprob.top_logprobs[:top_k]
                ],
            )
            for sent in logprobs
        ]
    )
