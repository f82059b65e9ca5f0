"""``POST /v1/completions``: text or token prompts (one or many) → engine → OpenAI completion.

``echo`` + ``logprobs`` returns a logprob for every prompt token (the first is null), the way
lm-evaluation-harness's ``local-completions`` scores log-likelihoods. Prompts and outputs pass
the safety layer as in chat (``serve/pipeline.py``); the request log gets the redacted texts."""

from dataclasses import dataclass, field

from fastapi import APIRouter, Depends, Request

from llmloop.serve.auth.deps import limit_infer
from llmloop.serve.deps import EngineDep
from llmloop.serve.engine_api import Engine, TokenLogprob
from llmloop.serve.errors import BadRequestError
from llmloop.serve.generation import off_loop, resolve_max_tokens
from llmloop.serve.guardrails import CONTENT_FILTER, REFUSAL
from llmloop.serve.logprobs import SentLogprob, prompt_logprobs_of
from llmloop.serve.pipeline import Choice, ServeContext
from llmloop.serve.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    UsageInfo,
)
from llmloop.serve.streaming import sse
from llmloop.serve.tools import structured_outputs

router = APIRouter(dependencies=[Depends(limit_infer)])  # scope: infer, rate-limited


@router.post("/v1/completions", response_model=CompletionResponse)
async def create_completion(body: CompletionRequest, request: Request, engine: EngineDep):
    completion = CompletionContext(request, body, engine)
    # Tokenized first (off the event loop): a prompt that cannot fit costs no classifier time.
    prompt_ids, texts = await off_loop(request, _tokenize_all, engine, body.prompts())
    completion.prompt_ids = prompt_ids
    resolve_max_tokens(
        body.max_tokens, max(map(len, prompt_ids)), engine.max_model_len, "max_tokens"
    )
    completion.texts, refused = await completion.screen_prompt(texts)
    completion.prompt = "\n\n".join(completion.texts)
    if refused:
        return completion.refuse()
    completion.prompt_ids = await off_loop(  # re-tokenized where redaction changed the text
        request,
        lambda: [
            p if screened == text else engine.tokenizer.encode(screened)
            for p, screened, text in zip(prompt_ids, completion.texts, texts, strict=True)
        ],
    )
    max_tokens = resolve_max_tokens(
        body.max_tokens, max(map(len, completion.prompt_ids)), engine.max_model_len, "max_tokens"
    )
    echoed = body.logprobs if body.echo and body.logprobs is not None else None
    asked = [k for k in (echoed, body.prompt_logprobs) if k is not None]
    prompt_logprobs = max(asked) if asked else None
    options = body.to_sampling_options(
        max_tokens,
        request.app.state.sampling_defaults,
        body.logprobs,
        prompt_logprobs,
        structured_outputs(body),
    )
    return await completion.generate(options)


def _tokenize_all(
    engine: Engine, prompts: list[str | list[int]]
) -> tuple[list[list[int]], list[str]]:
    """(token ids, text) of each prompt."""
    prompt_ids = [_tokenize(engine, p) for p in prompts]
    return prompt_ids, [engine.tokenizer.decode(p) for p in prompt_ids]


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


@dataclass
class CompletionContext(ServeContext):
    """A completion request's response shape, ``text_completion``, whole or streamed (the
    echoed prompts first, with ``echo``)."""

    endpoint = "completions"
    id_prefix = "cmpl"
    body: CompletionRequest
    texts: list[str] = field(default_factory=list)
    """The prompts as text, after redaction: what ``echo`` repeats."""

    def response(self, choices: list[Choice], usage: UsageInfo) -> CompletionResponse:
        return self._response([self._choice(c) for c in choices], usage)

    def refusal(self) -> CompletionResponse:
        refusal = CompletionChoice(index=0, text=REFUSAL, finish_reason=CONTENT_FILTER)
        return self._response([refusal], UsageInfo.of(0, 0))

    def stream_start(self) -> list[str]:
        if not self.body.echo:
            return []
        n = self.body.n
        echoes = [
            CompletionChoice(index=p * n + i, text=text)
            for p, text in enumerate(self.texts)
            for i in range(n)
        ]
        return [sse(self._response(echoes))]

    def chunk(self, choice: Choice) -> str:
        streamed = CompletionChoice(
            index=choice.index,
            text=choice.text,
            logprobs=None if choice.is_refused else self._logprobs_of(choice),
            finish_reason=choice.finish_reason,
        )
        return sse(self._response([streamed]))

    def stream_end(self, usage: UsageInfo) -> str | None:
        if not (self.body.stream_options and self.body.stream_options.include_usage):
            return None
        return sse(self._response([], usage))

    def refusal_events(self) -> list[str]:
        return [sse(self.refusal())]

    def _response(
        self, choices: list[CompletionChoice], usage: UsageInfo | None = None
    ) -> CompletionResponse:
        return CompletionResponse(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )

    def _choice(self, choice: Choice) -> CompletionChoice:
        """A whole answer's choice: the prompt first with ``echo``; a refusal replaces both."""
        if choice.is_refused:
            return CompletionChoice(index=choice.index, text=REFUSAL, finish_reason=CONTENT_FILTER)
        text, logprobs = choice.text, self._logprobs_of(choice)
        if self.body.echo:
            prompt_ids = self.prompt_ids[choice.prompt_index]
            text = self.engine.tokenizer.decode(prompt_ids) + text
            if logprobs is not None:
                logprobs = _prepend_prompt(
                    self.engine, prompt_ids, choice.prompt_logprobs, self.body.logprobs, logprobs
                )
        prompt_logprobs = None
        if self.body.prompt_logprobs is not None:
            prompt_logprobs = prompt_logprobs_of(choice.prompt_logprobs, self.body.prompt_logprobs)
        return CompletionChoice(
            index=choice.index, text=text, logprobs=logprobs, finish_reason=choice.finish_reason,
            prompt_logprobs=prompt_logprobs,
        )  # fmt: skip

    def _logprobs_of(self, choice: Choice) -> CompletionLogprobs | None:
        if self.body.logprobs is None or choice.logprobs is None:
            return None
        return _logprobs(choice.logprobs, self.body.logprobs)


def _logprobs(logprobs: list[SentLogprob], top_k: int) -> CompletionLogprobs:
    result = CompletionLogprobs()
    for sent in logprobs:
        result.text_offset.append(sent.text_offset)
        result.tokens.append(sent.logprob.token)
        result.token_logprobs.append(sent.logprob.logprob)
        result.top_logprobs.append(_top(sent.logprob, top_k))
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
