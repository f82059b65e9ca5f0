"""``POST /v1/completions``: text or token prompts (one or many) → engine → OpenAI completion.

``echo`` + ``logprobs`` returns a logprob for every prompt token (the first is null), the way
lm-evaluation-harness's ``local-completions`` scores log-likelihoods."""

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request

from serve.deps import EngineDep, resolve_lora
from serve.engine_api import Engine, EngineOutput, SequenceOutput, TokenLogprob
from serve.errors import BadRequestError
from serve.generation import generate_all, generate_stream, resolve_max_tokens
from serve.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    UsageInfo,
)
from serve.streaming import DONE, sse, sse_response, until_disconnected

router = APIRouter()


@router.post("/v1/completions", response_model=CompletionResponse)
async def create_completion(body: CompletionRequest, request: Request, engine: EngineDep):
    lora = resolve_lora(engine, body.model)
    prompts = [_tokenize(engine, p) for p in body.prompts()]
    longest = max(len(p) for p in prompts)
    max_tokens = resolve_max_tokens(body.max_tokens, longest, engine.max_model_len, "max_tokens")
    prompt_logprobs = body.logprobs if body.echo and body.logprobs is not None else None
    options = body.to_sampling_options(
        max_tokens, request.app.state.sampling_defaults, body.logprobs, prompt_logprobs
    )
    request_id = f"cmpl-{uuid.uuid4().hex}"
    if body.stream:
        return sse_response(_stream(engine, body, prompts, options, request_id, lora))
    outputs = await until_disconnected(
        request, generate_all(engine, prompts, options, request_id, lora)
    )
    choices = [
        _choice(engine, body, prompt_idx, prompt, output, seq)
        for prompt_idx, (prompt, output) in enumerate(zip(prompts, outputs, strict=True))
        for seq in sorted(output.outputs, key=lambda s: s.index)
    ]
    num_prompt_tokens = sum(len(p) for p in prompts)
    num_completion_tokens = sum(len(seq.token_ids) for output in outputs for seq in output.outputs)
    return CompletionResponse(
        id=request_id,
        model=body.model,
        choices=choices,
        usage=UsageInfo(
            prompt_tokens=num_prompt_tokens,
            completion_tokens=num_completion_tokens,
            total_tokens=num_prompt_tokens + num_completion_tokens,
        ),
    )


def _tokenize(engine: Engine, prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, str):
        token_ids = engine.tokenizer.encode(prompt)
        if not token_ids:
            raise BadRequestError("prompt: must not be empty", param="prompt")
        return token_ids
    bad = [t for t in prompt if not 0 <= t < engine.vocab_size]
    if bad:
        raise BadRequestError(
            f"prompt: token ids must be in [0, {engine.vocab_size}); got {bad[:5]}", param="prompt"
        )
    return prompt


def _choice(
    engine, body, prompt_idx, prompt_ids, output: EngineOutput, seq: SequenceOutput
) -> CompletionChoice:
    text = seq.text
    logprobs = None
    if body.logprobs is not None:
        logprobs = _logprobs(seq.logprobs, body.logprobs)
    if body.echo:
        prompt_text = engine.tokenizer.decode(prompt_ids)
        text = prompt_text + text
        if logprobs is not None:
            logprobs = _prepend_prompt(
                engine, prompt_ids, output.prompt_logprobs, body.logprobs, logprobs
            )
    return CompletionChoice(
        index=prompt_idx * body.n + seq.index,
        text=text,
        logprobs=logprobs,
        finish_reason=seq.finish_reason,
    )


def _logprobs(
    logprobs: list[TokenLogprob | None] | None, top_k: int, offset: int = 0
) -> CompletionLogprobs:
    result = CompletionLogprobs()
    for lp in logprobs or ():
        result.text_offset.append(offset)
        result.tokens.append(lp.token)
        result.token_logprobs.append(lp.logprob)
        # As vLLM: the chosen token plus the top-k alternatives.
        result.top_logprobs.append({lp.token: lp.logprob} | dict(lp.top_logprobs[:top_k]))
        offset += len(lp.token)
    return result


def _prepend_prompt(
    engine, prompt_ids, prompt_logprobs, top_k, generated: CompletionLogprobs
) -> CompletionLogprobs:
    """Echo: the prompt tokens' logprobs (first is null) before the generated ones."""
    result = CompletionLogprobs()
    offset = 0
    for token_id, lp in zip(prompt_ids, prompt_logprobs or [None] * len(prompt_ids), strict=True):
        token = lp.token if lp is not None else engine.tokenizer.decode([token_id])
        result.text_offset.append(offset)
        result.tokens.append(token)
        result.token_logprobs.append(lp.logprob if lp is not None else None)
        result.top_logprobs.append(
            ({lp.token: lp.logprob} | dict(lp.top_logprobs[:top_k])) if lp else None
        )
        offset += len(token)
    result.text_offset += [offset + o for o in generated.text_offset]
    result.tokens += generated.tokens
    result.token_logprobs += generated.token_logprobs
    result.top_logprobs += generated.top_logprobs
    return result


async def _stream(engine, body, prompts, options, request_id, lora) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(choices: list[CompletionChoice], usage: UsageInfo | None = None) -> str:
        return sse(
            CompletionResponse(
                id=request_id, created=created, model=body.model, choices=choices, usage=usage
            )
        )

    if body.echo:
        yield chunk(
            [
                CompletionChoice(index=p * body.n + i, text=engine.tokenizer.decode(ids))
                for p, ids in enumerate(prompts)
                for i in range(body.n)
            ]
        )
    num_completion_tokens = 0
    async for prompt_idx, output in generate_stream(engine, prompts, options, request_id, lora):
        for seq in output.outputs:
            num_completion_tokens += len(seq.token_ids)
            if seq.text or seq.finish_reason:
                logprobs = (
                    _logprobs(seq.logprobs, body.logprobs) if body.logprobs is not None else None
                )
                yield chunk(
                    [
                        CompletionChoice(
                            index=prompt_idx * body.n + seq.index,
                            text=seq.text,
                            logprobs=logprobs,
                            finish_reason=seq.finish_reason,
                        )
                    ]
                )
    if body.stream_options and body.stream_options.include_usage:
        num_prompt_tokens = sum(len(p) for p in prompts)
        usage = UsageInfo(
            prompt_tokens=num_prompt_tokens,
            completion_tokens=num_completion_tokens,
            total_tokens=num_prompt_tokens + num_completion_tokens,
        )
        yield chunk([], usage)
    yield DONE
