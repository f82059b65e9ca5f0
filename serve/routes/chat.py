"""``POST /v1/chat/completions``.

The request flows one way: input safety → retrieval (RAG) → chat template → engine → output
safety (as it streams) → response, then the request log. Every text the log sees is redacted."""

import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import APIRouter, Request

from llmloop.serve.deps import EngineDep, resolve_lora
from llmloop.serve.engine_api import Engine, EngineOutput, Tokenizer, TokenLogprob
from llmloop.serve.errors import BadRequestError
from llmloop.serve.generation import generate_all, generate_stream, resolve_max_tokens
from llmloop.serve.guardrails import CONTENT_FILTER, REFUSAL, Blocked
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
from llmloop.serve.records import log_completion, logged_choice
from llmloop.serve.retrieval import last_user_text, with_sources
from llmloop.serve.streaming import DONE, sse, sse_response, until_disconnected

router = APIRouter()
_DEFAULT_OUTPUT_RESERVE = 512
"""Tokens kept free for the answer when sources are added and the request sets no max_tokens."""


@dataclass
class ChatTurn:
    """One chat request on its way through the server."""

    request: Request
    body: ChatCompletionRequest
    engine: Engine
    lora: str | None
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.monotonic)
    messages: list[dict] = field(default_factory=list)
    citations: list[dict] = field(default_factory=list)
    num_prompt_tokens: int = 0

    def log(self, choices: list[dict], num_completion_tokens: int) -> None:
        log_completion(
            self.request, self.body, request_id=self.id, endpoint="chat.completions", lora=self.lora,
            started=self.started, choices=choices, prompt_tokens=self.num_prompt_tokens,
            completion_tokens=num_completion_tokens, messages=self.messages, citations=self.citations,
        )  # fmt: skip


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def create_chat_completion(body: ChatCompletionRequest, request: Request, engine: EngineDep):
    turn = ChatTurn(request, body, engine, resolve_lora(engine, body.model))
    guardrails = request.app.state.guardrails
    redactor = guardrails.redactor() if guardrails else None
    turn.messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    if guardrails:
        texts, blocked = await guardrails.screen_input(
            [m["content"] for m in turn.messages], redactor
        )
        turn.messages = [m | {"content": t} for m, t in zip(turn.messages, texts, strict=True)]
        if blocked:
            turn.log([logged_choice(0, REFUSAL, CONTENT_FILTER)], 0)
            return _refusal_stream(turn) if body.stream else _refusal(turn)
    await _retrieve(turn, redactor)
    prompt_ids = render_chat(engine.tokenizer, turn.messages)
    turn.num_prompt_tokens = len(prompt_ids)
    max_tokens = resolve_max_tokens(
        body.requested_max_tokens(), len(prompt_ids), engine.max_model_len, "max_tokens"
    )
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    options = body.to_sampling_options(
        max_tokens, request.app.state.sampling_defaults, logprobs, None
    )
    if body.stream:
        return sse_response(_stream(turn, prompt_ids, options, redactor))
    work = generate_all(engine, [prompt_ids], options, turn.id, turn.lora)
    (output,) = await until_disconnected(request, work)
    return await _response(turn, output, redactor)


def render_chat(tokenizer: Tokenizer, messages: list[dict]) -> list[int]:
    """The model's chat template with the generation prompt, tokenized as vLLM's server does."""
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except ValueError as e:  # no template, or the template rejects the roles/order
        raise BadRequestError(
            f"cannot apply the model's chat template: {e}", param="messages"
        ) from e
    return tokenizer.encode(text, add_special_tokens=False)


async def _retrieve(turn: ChatTurn, redactor) -> None:
    """Add numbered sources for the last user turn, if the request (or the server) names an index."""
    retrieval = turn.request.app.state.retrieval
    rag = turn.body.rag
    index = (rag.index if rag else None) or retrieval.default_index
    query = last_user_text(turn.messages)
    if index is None or not query:
        return
    hits = await retrieval.search(index, query, rag.top_k if rag else 4)
    guardrails = turn.request.app.state.guardrails
    if guardrails and hits:
        texts = await guardrails.screen_retrieved([hit.text for hit in hits], redactor)
        hits = [
            dataclasses.replace(hit, text=text)
            for hit, text in zip(hits, texts, strict=True)
            if text is not None
        ]
    tokenizer = turn.engine.tokenizer
    reserve = turn.body.requested_max_tokens() or min(
        _DEFAULT_OUTPUT_RESERVE, turn.engine.max_model_len // 4
    )
    budget = turn.engine.max_model_len - len(render_chat(tokenizer, turn.messages)) - reserve
    turn.messages, turn.citations = with_sources(
        turn.messages,
        hits,
        lambda text: len(tokenizer.encode(text, add_special_tokens=False)),
        budget,
    )


async def _response(turn: ChatTurn, output: EngineOutput, redactor) -> ChatCompletionResponse:
    guardrails = turn.request.app.state.guardrails
    choices = []
    for seq in sorted(output.outputs, key=lambda s: s.index):
        text, finish_reason = seq.text, seq.finish_reason
        if guardrails:
            screened = await guardrails.screen_output(text, redactor)
            text, finish_reason = (
                (REFUSAL, CONTENT_FILTER)
                if isinstance(screened, Blocked)
                else (screened, finish_reason)
            )
        choices.append(
            ChatCompletionChoice(
                index=seq.index,
                message=ChatResponseMessage(
                    content=text, refusal=REFUSAL if finish_reason == CONTENT_FILTER else None
                ),
                logprobs=_logprobs(seq.logprobs, turn.body.top_logprobs or 0)
                if turn.body.logprobs
                else None,
                finish_reason=finish_reason,
            )
        )
    num_completion_tokens = sum(len(seq.token_ids) for seq in output.outputs)
    turn.log(
        [logged_choice(c.index, c.message.content, c.finish_reason) for c in choices],
        num_completion_tokens,
    )
    return ChatCompletionResponse(
        id=turn.id, created=turn.created, model=turn.body.model, choices=choices,
        usage=UsageInfo.of(turn.num_prompt_tokens, num_completion_tokens),
        citations=[Citation(**c) for c in turn.citations] if turn.citations else None,
    )  # fmt: skip


async def _stream(turn: ChatTurn, prompt_ids, options, redactor) -> AsyncIterator[str]:
    body, guardrails = turn.body, turn.request.app.state.guardrails
    guards = {i: guardrails.stream(redactor) for i in range(body.n)} if guardrails else {}
    texts = {i: "" for i in range(body.n)}
    finish_reasons: dict[int, str] = {}
    num_completion_tokens = 0
    yield _chunk(
        turn,
        [
            ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content=""))
            for i in range(body.n)
        ],
    )
    outputs = generate_stream(turn.engine, [prompt_ids], options, turn.id, turn.lora)
    async with contextlib.aclosing(
        outputs
    ):  # leaving early (all choices refused) aborts the request
        async for _, output in outputs:
            for seq in output.outputs:
                num_completion_tokens += len(seq.token_ids)
                if seq.index in finish_reasons:
                    continue
                text, finish_reason = seq.text, seq.finish_reason
                if guard := guards.get(seq.index):
                    text, finish_reason = await guardrails.screen_delta(guard, text, finish_reason)
                texts[seq.index] += text
                if finish_reason:
                    finish_reasons[seq.index] = finish_reason
                if text or finish_reason:
                    yield _chunk(
                        turn, [_chunk_choice(turn, seq.index, text, finish_reason, seq.logprobs)]
                    )
            if len(finish_reasons) == body.n:
                break
    include_usage = body.stream_options and body.stream_options.include_usage
    if include_usage or turn.citations:
        usage = (
            UsageInfo.of(turn.num_prompt_tokens, num_completion_tokens) if include_usage else None
        )
        yield _chunk(turn, [], usage, citations=turn.citations)
    yield DONE
    turn.log(
        [logged_choice(i, texts[i], finish_reasons.get(i)) for i in range(body.n)],
        num_completion_tokens,
    )


def _refusal(turn: ChatTurn) -> ChatCompletionResponse:
    return ChatCompletionResponse(
        id=turn.id, created=turn.created, model=turn.body.model,
        choices=[ChatCompletionChoice(
            index=0, message=ChatResponseMessage(content=REFUSAL, refusal=REFUSAL), finish_reason=CONTENT_FILTER
        )],
        usage=UsageInfo.of(0, 0),
    )  # fmt: skip


def _refusal_stream(turn: ChatTurn):
    async def events() -> AsyncIterator[str]:
        yield _chunk(
            turn, [ChatChunkChoice(index=0, delta=ChatDelta(role="assistant", content=""))]
        )
        refusal = ChatDelta(content=REFUSAL, refusal=REFUSAL)
        yield _chunk(turn, [ChatChunkChoice(index=0, delta=refusal, finish_reason=CONTENT_FILTER)])
        if turn.body.stream_options and turn.body.stream_options.include_usage:
            yield _chunk(turn, [], UsageInfo.of(0, 0))
        yield DONE

    return sse_response(events())


def _chunk(
    turn: ChatTurn, choices: list[ChatChunkChoice], usage: UsageInfo | None = None, citations=None
) -> str:
    return sse(
        ChatCompletionChunk(
            id=turn.id, created=turn.created, model=turn.body.model, choices=choices, usage=usage,
            citations=[Citation(**c) for c in citations] if citations else None,
        )
    )  # fmt: skip


def _chunk_choice(
    turn: ChatTurn, index: int, text: str, finish_reason, logprobs
) -> ChatChunkChoice:
    return ChatChunkChoice(
        index=index,
        delta=ChatDelta(content=text, refusal=REFUSAL if finish_reason == CONTENT_FILTER else None),
        logprobs=_logprobs(logprobs, turn.body.top_logprobs or 0) if turn.body.logprobs else None,
        finish_reason=finish_reason,
    )


def _logprobs(logprobs: list[TokenLogprob] | None, top_k: int) -> ChoiceLogprobs:
    return ChoiceLogprobs(
        content=[
            ChatTokenLogprob(
                token=lp.token,
                logprob=lp.logprob,
                bytes=list(lp.token.encode()),
                top_logprobs=[
                    TopLogprob(token=t, logprob=v, bytes=list(t.encode()))
                    for t, v in lp.top_logprobs[:top_k]
                ],
            )
            for lp in logprobs or ()
        ]
    )
