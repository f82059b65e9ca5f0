"""``POST /v1/chat/completions``: chat template → engine → OpenAI chat response or SSE chunks."""

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request

from serve.deps import EngineDep, resolve_lora
from serve.engine_api import EngineOutput, SequenceOutput, Tokenizer, TokenLogprob
from serve.errors import BadRequestError
from serve.generation import generate_all, generate_stream, resolve_max_tokens
from serve.protocol import (
    ChatChunkChoice,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatResponseMessage,
    ChatTokenLogprob,
    ChoiceLogprobs,
    TopLogprob,
    UsageInfo,
)
from serve.streaming import DONE, sse, sse_response, until_disconnected

router = APIRouter()


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def create_chat_completion(body: ChatCompletionRequest, request: Request, engine: EngineDep):
    lora = resolve_lora(engine, body.model)
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    prompt_ids = render_chat(engine.tokenizer, messages)
    max_tokens = resolve_max_tokens(
        body.requested_max_tokens(), len(prompt_ids), engine.max_model_len, "max_tokens"
    )
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    options = body.to_sampling_options(
        max_tokens, request.app.state.sampling_defaults, logprobs, None
    )
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    if body.stream:
        return sse_response(_stream(engine, body, prompt_ids, options, request_id, lora))
    (output,) = await until_disconnected(
        request, generate_all(engine, [prompt_ids], options, request_id, lora)
    )
    return _response(body, output, request_id)


def render_chat(tokenizer: Tokenizer, messages: list[dict]) -> list[int]:
    """The model's chat template with the generation prompt, tokenized as vLLM's server does."""
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except ValueError as e:  # no template, or the template rejects the roles/order
        raise BadRequestError(
            f"cannot apply the model's chat template: {e}", param="messages"
        ) from e
    return tokenizer.encode(text, add_special_tokens=False)


def _response(
    body: ChatCompletionRequest, output: EngineOutput, request_id: str
) -> ChatCompletionResponse:
    choices = [
        ChatCompletionChoice(
            index=seq.index,
            message=ChatResponseMessage(content=seq.text),
            logprobs=_logprobs(seq.logprobs, body.top_logprobs or 0) if body.logprobs else None,
            finish_reason=seq.finish_reason,
        )
        for seq in sorted(output.outputs, key=lambda s: s.index)
    ]
    num_completion_tokens = sum(len(seq.token_ids) for seq in output.outputs)
    return ChatCompletionResponse(
        id=request_id,
        model=body.model,
        choices=choices,
        usage=UsageInfo(
            prompt_tokens=output.num_prompt_tokens,
            completion_tokens=num_completion_tokens,
            total_tokens=output.num_prompt_tokens + num_completion_tokens,
        ),
    )


async def _stream(engine, body, prompt_ids, options, request_id, lora) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(choices: list[ChatChunkChoice], usage: UsageInfo | None = None) -> str:
        return sse(
            ChatCompletionChunk(
                id=request_id, created=created, model=body.model, choices=choices, usage=usage
            )
        )

    # OpenAI's first chunk of each choice carries the role.
    yield chunk(
        [
            ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content=""))
            for i in range(body.n)
        ]
    )
    num_completion_tokens = 0
    async for _, output in generate_stream(engine, [prompt_ids], options, request_id, lora):
        for seq in output.outputs:
            num_completion_tokens += len(seq.token_ids)
            if seq.text or seq.finish_reason:
                yield chunk([_chunk_choice(body, seq)])
    if body.stream_options and body.stream_options.include_usage:
        usage = UsageInfo(
            prompt_tokens=len(prompt_ids),
            completion_tokens=num_completion_tokens,
            total_tokens=len(prompt_ids) + num_completion_tokens,
        )
        yield chunk([], usage)
    yield DONE


def _chunk_choice(body: ChatCompletionRequest, seq: SequenceOutput) -> ChatChunkChoice:
    return ChatChunkChoice(
        index=seq.index,
        delta=ChatDelta(content=seq.text),
        logprobs=_logprobs(seq.logprobs, body.top_logprobs or 0) if body.logprobs else None,
        finish_reason=seq.finish_reason,
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
