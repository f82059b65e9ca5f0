"""``POST /v1/chat/completions``.

The request flows one way: input safety → retrieval (RAG) → chat template → engine → output
safety (as it streams) → response, then the request log. This module builds the prompt and
shapes the response; ``serve/pipeline.py`` does the rest, as for text completions. Every text
the log sees is redacted."""

import dataclasses

from fastapi import APIRouter, Depends, Request

from llmloop.serve.auth.deps import limit_infer
from llmloop.serve.deps import EngineDep
from llmloop.serve.engine_api import Tokenizer
from llmloop.serve.errors import BadRequestError
from llmloop.serve.generation import off_loop, resolve_max_tokens
from llmloop.serve.guardrails import CONTENT_FILTER, REFUSAL
from llmloop.serve.logprobs import SentLogprob
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
from llmloop.serve.retrieval import last_user_text, with_sources
from llmloop.serve.streaming import sse

router = APIRouter(dependencies=[Depends(limit_infer)])  # scope: infer, rate-limited
_DEFAULT_OUTPUT_RESERVE = 512
"""Tokens kept free for the answer when sources are added and the request sets no max_tokens."""


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def create_chat_completion(body: ChatCompletionRequest, request: Request, engine: EngineDep):
    chat = ChatContext(request, body, engine)
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    # Templated first (off the event loop): a prompt that cannot fit costs no classifier time.
    prompt_ids = await off_loop(request, render_chat, engine.tokenizer, messages)
    resolve_max_tokens(
        body.requested_max_tokens(), len(prompt_ids), engine.max_model_len, "max_tokens"
    )
    texts, refused = await chat.screen_prompt([m["content"] for m in messages])
    chat.messages = [m | {"content": t} for m, t in zip(messages, texts, strict=True)]
    if refused:
        return chat.refuse()
    await _add_sources(chat)
    if chat.messages != messages:  # redacted, or sources added
        prompt_ids = await off_loop(request, render_chat, engine.tokenizer, chat.messages)
    chat.prompt_ids = [prompt_ids]
    max_tokens = resolve_max_tokens(
        body.requested_max_tokens(), chat.num_prompt_tokens, engine.max_model_len, "max_tokens"
    )
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    options = body.to_sampling_options(
        max_tokens, request.app.state.sampling_defaults, logprobs, None
    )
    return await chat.generate(options)


def render_chat(tokenizer: Tokenizer, messages: list[dict]) -> list[int]:
    """The model's chat template with the generation prompt, tokenized as vLLM's server does."""
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except ValueError as e:  # no template, or the template rejects the roles/order
        raise BadRequestError(
            f"cannot apply the model's chat template: {e}", param="messages"
        ) from e
    return tokenizer.encode(text, add_special_tokens=False)


async def _add_sources(chat: "ChatContext") -> None:
    """Numbered sources for the last user turn, if the request (or the server) names an index;
    retrieved text passes the safety layer before it enters the prompt."""
    retrieval = chat.request.app.state.retrieval
    rag = chat.body.rag
    index = (rag.index if rag else None) or retrieval.default_index
    query = last_user_text(chat.messages)
    if index is None or not query:
        return
    hits = await retrieval.search(index, query, rag.top_k if rag else 4)
    texts = await chat.screen_retrieved([hit.text for hit in hits])
    hits = [
        dataclasses.replace(hit, text=text)
        for hit, text in zip(hits, texts, strict=True)
        if text is not None
    ]
    tokenizer, max_model_len = chat.engine.tokenizer, chat.engine.max_model_len
    reserve = chat.body.requested_max_tokens() or min(_DEFAULT_OUTPUT_RESERVE, max_model_len // 4)
    prompt_ids = await off_loop(chat.request, render_chat, tokenizer, chat.messages)
    budget = max_model_len - len(prompt_ids) - reserve
    chat.messages, chat.citations = with_sources(
        chat.messages,
        hits,
        lambda text: len(tokenizer.encode(text, add_special_tokens=False)),
        budget,
    )


class ChatContext(ServeContext):
    """A chat request's response shapes: ``chat.completion`` whole, ``chat.completion.chunk``
    streamed (the role first, then the deltas, then usage and citations)."""

    endpoint = "chat.completions"
    id_prefix = "chatcmpl"
    body: ChatCompletionRequest

    def response(self, choices: list[Choice], usage: UsageInfo) -> ChatCompletionResponse:
        return ChatCompletionResponse(
            id=self.id, created=self.created, model=self.body.model, usage=usage,
            choices=[self._choice(c) for c in choices], citations=_citations(self.citations),
        )  # fmt: skip

    def refusal(self) -> ChatCompletionResponse:
        message = ChatResponseMessage(content=REFUSAL, refusal=REFUSAL)
        refused = ChatCompletionChoice(index=0, message=message, finish_reason=CONTENT_FILTER)
        return ChatCompletionResponse(
            id=self.id, created=self.created, model=self.body.model, usage=UsageInfo.of(0, 0),
            choices=[refused],
        )  # fmt: skip

    def stream_start(self) -> list[str]:
        return [self._chunk([_role(i) for i in range(self.body.n)])]

    def chunk(self, choice: Choice) -> str:
        streamed = ChatChunkChoice(
            index=choice.index,
            delta=ChatDelta(content=choice.text, refusal=_refusal(choice)),
            logprobs=self._logprobs_of(choice),
            finish_reason=choice.finish_reason,
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

    def _include_usage(self) -> bool:
        return bool(self.body.stream_options and self.body.stream_options.include_usage)

    def _chunk(
        self, choices: list[ChatChunkChoice], usage: UsageInfo | None = None, citations=None
    ) -> str:
        return sse(
            ChatCompletionChunk(
                id=self.id, created=self.created, model=self.body.model, choices=choices,
                usage=usage, citations=_citations(citations),
            )
        )  # fmt: skip

    def _choice(self, choice: Choice) -> ChatCompletionChoice:
        return ChatCompletionChoice(
            index=choice.index,
            message=ChatResponseMessage(content=choice.text, refusal=_refusal(choice)),
            logprobs=self._logprobs_of(choice),
            finish_reason=choice.finish_reason,
        )

    def _logprobs_of(self, choice: Choice) -> ChoiceLogprobs | None:
        if not self.body.logprobs or choice.logprobs is None:
            return None
        return _logprobs(choice.logprobs, self.body.top_logprobs or 0)


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
