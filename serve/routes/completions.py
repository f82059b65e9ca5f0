"""``POST /v1/completions``: text or token prompts (one or many) → engine → OpenAI completion.

``echo`` + ``logprobs`` returns a logprob for every prompt token (the first is null), the way
lm-evaluation-harness's ``local-completions`` scores log-likelihoods. Prompts and outputs pass
the safety layer as in chat; the request log gets the redacted texts."""

import contextlib
import functools
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request

from llmloop.serve.deps import EngineDep, resolve_lora
from llmloop.serve.engine_api import Engine, EngineOutput, SequenceOutput, TokenLogprob
from llmloop.serve.errors import BadRequestError
from llmloop.serve.generation import generate_all, generate_stream, resolve_max_tokens
from llmloop.serve.guardrails import CONTENT_FILTER, REFUSAL, Blocked
from llmloop.serve.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    UsageInfo,
)
from llmloop.serve.records import log_completion, logged_choice
from llmloop.serve.streaming import DONE, sse, sse_response, until_disconnected

router = APIRouter()


@router.post("/v1/completions", response_model=CompletionResponse)
async def create_completion(body: CompletionRequest, request: Request, engine: EngineDep):
    started = time.monotonic()
    lora = resolve_lora(engine, body.model)
    request_id = f"cmpl-{uuid.uuid4().hex}"
    guardrails = request.app.state.guardrails
    redactor = guardrails.redactor() if guardrails else None
    prompts = [_tokenize(engine, p) for p in body.prompts()]
    texts = [engine.tokenizer.decode(p) for p in prompts]
    log = functools.partial(
        log_completion, request, body, request_id=request_id, endpoint="completions", lora=lora,
        started=started, prompt="\n\n".join(texts), prompt_tokens=sum(map(len, prompts)),
    )  # fmt: skip
    if guardrails:
        screened, blocked = await guardrails.screen_input(texts, redactor)
        log = functools.partial(log, prompt="\n\n".join(screened))
        if blocked:
            log(
                choices=[logged_choice(0, REFUSAL, CONTENT_FILTER)],
                completion_tokens=0,
            )
            refusal = _refusal(body, request_id)
            return sse_response(_once(refusal)) if body.stream else refusal
        prompts = [
            p if s == t else engine.tokenizer.encode(s)
            for p, s, t in zip(prompts, screened, texts, strict=True)
        ]
        texts = screened
    max_tokens = resolve_max_tokens(
        body.max_tokens, max(map(len, prompts)), engine.max_model_len, "max_tokens"
    )
    prompt_logprobs = body.logprobs if body.echo and body.logprobs is not None else None
    options = body.to_sampling_options(
        max_tokens, request.app.state.sampling_defaults, body.logprobs, prompt_logprobs
    )
    if body.stream:
        return sse_response(
            _stream(
                engine, body, prompts, texts, options, request_id, lora, redactor, guardrails, log
            )
        )
    outputs = await until_disconnected(
        request, generate_all(engine, prompts, options, request_id, lora)
    )
    choices = []
    for prompt_idx, (prompt, output) in enumerate(zip(prompts, outputs, strict=True)):
        for seq in sorted(output.outputs, key=lambda s: s.index):
            choice = _choice(engine, body, prompt_idx, prompt, output, seq)
            if guardrails:
                screened = await guardrails.screen_output(seq.text, redactor)
                if isinstance(screened, Blocked):
                    choice.text, choice.finish_reason, choice.logprobs = (
                        REFUSAL,
                        CONTENT_FILTER,
                        None,
                    )
                else:
                    choice.text = choice.text[: len(choice.text) - len(seq.text)] + screened
            choices.append(choice)
    num_completion_tokens = sum(len(seq.token_ids) for output in outputs for seq in output.outputs)
    log(
        choices=[logged_choice(c.index, c.text, c.finish_reason) for c in choices],
        completion_tokens=num_completion_tokens,
    )
    return CompletionResponse(
        id=request_id, model=body.model, choices=choices,
        usage=UsageInfo.of(sum(map(len, prompts)), num_completion_tokens),
    )  # fmt: skip


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
    logprobs = _logprobs(seq.logprobs, body.logprobs) if body.logprobs is not None else None
    if body.echo:
        text = engine.tokenizer.decode(prompt_ids) + text
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
        result.top_logprobs.append(_top(lp, top_k))
        offset += len(lp.token)
    return result


def _top(lp: TokenLogprob, top_k: int) -> dict[str, float]:
    """As vLLM: the chosen token plus the top-k alternatives."""
    return {lp.token: lp.logprob} | dict(lp.top_logprobs[:top_k])


def _prepend_prompt(
    engine, prompt_ids, prompt_logprobs, top_k, generated: CompletionLogprobs
) -> CompletionLogprobs:
    """Echo: the prompt tokens' logprobs (the first is null) before the generated ones."""
    result = CompletionLogprobs()
    offset = 0
    for token_id, lp in zip(prompt_ids, prompt_logprobs or [None] * len(prompt_ids), strict=True):
        token = lp.token if lp is not None else engine.tokenizer.decode([token_id])
        result.text_offset.append(offset)
        result.tokens.append(token)
        result.token_logprobs.append(lp.logprob if lp is not None else None)
        result.top_logprobs.append(_top(lp, top_k) if lp is not None else None)
        offset += len(token)
    result.text_offset += [offset + o for o in generated.text_offset]
    result.tokens += generated.tokens
    result.token_logprobs += generated.token_logprobs
    result.top_logprobs += generated.top_logprobs
    return result


async def _stream(
    engine, body, prompts, texts, options, request_id, lora, redactor, guardrails, log
) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(choices: list[CompletionChoice], usage: UsageInfo | None = None) -> str:
        return sse(
            CompletionResponse(
                id=request_id, created=created, model=body.model, choices=choices, usage=usage
            )
        )

    num_choices = len(prompts) * body.n
    guards = {i: guardrails.stream(redactor) for i in range(num_choices)} if guardrails else {}
    emitted = {i: "" for i in range(num_choices)}
    finish_reasons: dict[int, str] = {}
    if body.echo:
        yield chunk(
            [
                CompletionChoice(index=p * body.n + i, text=texts[p])
                for p in range(len(prompts))
                for i in range(body.n)
            ]
        )
    num_completion_tokens = 0
    outputs = generate_stream(engine, prompts, options, request_id, lora)
    async with contextlib.aclosing(outputs):
        async for prompt_idx, output in outputs:
            for seq in output.outputs:
                num_completion_tokens += len(seq.token_ids)
                index = prompt_idx * body.n + seq.index
                if index in finish_reasons:
                    continue
                text, finish_reason = seq.text, seq.finish_reason
                logprobs = (
                    _logprobs(seq.logprobs, body.logprobs) if body.logprobs is not None else None
                )
                if guard := guards.get(index):
                    text, finish_reason = await guardrails.screen_delta(guard, text, finish_reason)
                    if finish_reason == CONTENT_FILTER:
                        logprobs = None
                emitted[index] += text
                if finish_reason:
                    finish_reasons[index] = finish_reason
                if text or finish_reason:
                    yield chunk(
                        [
                            CompletionChoice(
                                index=index,
                                text=text,
                                logprobs=logprobs,
                                finish_reason=finish_reason,
                            )
                        ]
                    )
            if len(finish_reasons) == num_choices:
                break
    if body.stream_options and body.stream_options.include_usage:
        yield chunk([], UsageInfo.of(sum(map(len, prompts)), num_completion_tokens))
    yield DONE
    log(
        choices=[logged_choice(i, emitted[i], finish_reasons.get(i)) for i in range(num_choices)],
        completion_tokens=num_completion_tokens,
    )


async def _once(response: CompletionResponse) -> AsyncIterator[str]:
    yield sse(response)
    yield DONE


def _refusal(body: CompletionRequest, request_id: str) -> CompletionResponse:
    return CompletionResponse(
        id=request_id, model=body.model, usage=UsageInfo.of(0, 0),
        choices=[CompletionChoice(index=0, text=REFUSAL, finish_reason=CONTENT_FILTER)],
    )  # fmt: skip
