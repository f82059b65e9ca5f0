"""What chat and text completions do per choice, written once (vLLM splits the same work between
``serving_engine.py`` and ``serving_chat.py`` / ``serving_completion.py``).

A ``ServeContext`` is one request on its way through the server. This half is shared: screen
the prompt, run the engine, screen every choice's output (whole, or delta by delta as it
streams), count usage, hand the redacted result to the request log. The endpoint's half is a
subclass in ``routes/``: it builds the prompt (``prompt_ids``) and shapes the response
(``response`` and ``refusal`` whole; ``stream_start``, ``chunk``, ``stream_end`` and
``refusal_events`` streamed)."""

import contextlib
import dataclasses
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from opentelemetry.trace import Span
from pydantic import BaseModel

from llmloop.serve.batch.dispatch import BATCH_PRIORITY, batch_line_of
from llmloop.serve.deps import resolve_target
from llmloop.serve.engine_api import Engine, SamplingOptions, SequenceOutput, TokenLogprob
from llmloop.serve.generation import check_token_ids, generate_all, generate_stream
from llmloop.serve.guardrails import CONTENT_FILTER, REFUSAL, Blocked, Guardrails
from llmloop.serve.logprobs import LogprobGate, SentLogprob
from llmloop.serve.protocol import SamplingRequest, UsageInfo
from llmloop.serve.records import log_completion, logged_choice
from llmloop.serve.routing.table import Target
from llmloop.serve.streaming import DONE, sse_response, until_disconnected
from llmloop.serve.tracing import Tracing

if TYPE_CHECKING:  # the safety package loads with the guardrails, not on import
    from llmloop.safety.guard import Redaction, StreamGuard
    from llmloop.safety.redact import Redactor


@dataclass
class Choice:
    """One choice after the safety layer: its whole output, or one streamed delta of it."""

    index: int
    """In the response: ``prompt_index * n + seq.index``."""
    prompt_index: int
    seq: SequenceOutput
    """As the engine produced it (``token_ids``, ``logprobs``); its ``text`` is unscreened."""
    text: str
    finish_reason: str | None
    prompt_logprobs: list[TokenLogprob | None] | None = None
    """The prompt's, on whole answers (completions' ``echo``)."""
    logprobs: list[SentLogprob] | None = None
    """The generated tokens' that ``text`` may show (``serve/logprobs.py``); None when refused
    or not asked for."""

    @property
    def is_refused(self) -> bool:
        return self.finish_reason == CONTENT_FILTER


@dataclass
class ServeContext(ABC):
    """One chat or text completion request: the shared pipeline, and what it needs to log."""

    request: Request
    body: SamplingRequest
    engine: Engine
    endpoint: ClassVar[str]
    """The request log's name for it: "chat.completions" | "completions"."""
    id_prefix: ClassVar[str]
    target: Target = field(init=False)
    """What answers: a route's version, the base model or an adapter."""
    id: str = field(init=False)
    created: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` when the request arrived: the log's latency starts here."""
    guardrails: Guardrails | None = field(init=False)
    redactor: "Redactor | None" = field(init=False)
    """One per request, so placeholders (<EMAIL_1>) stay stable across its texts."""
    prompt_ids: list[list[int]] = field(default_factory=list)
    """One token list per prompt (chat: one), as the engine gets them."""
    messages: list[dict] | None = None
    """For the log (chat): the messages after redaction, with any sources."""
    prompt: str | None = None
    """For the log (completions): the prompts after redaction."""
    citations: list[dict] = field(default_factory=list)
    tools: list[dict] = field(default_factory=list)
    """For the prompt and the log (chat): the tools the model is shown, after redaction."""
    options: SamplingOptions | None = None
    """What the engine ran, once it did (a shadow run repeats it)."""

    def __post_init__(self) -> None:
        self.target = resolve_target(self.request, self.body.model, self.body.user)
        self.id = f"{self.id_prefix}-{uuid.uuid4().hex}"
        self.guardrails = self.request.app.state.guardrails
        self.redactor = self.guardrails.redactor() if self.guardrails else None

    @property
    def lora(self) -> str | None:
        return self.target.lora

    @property
    def model(self) -> str:
        """The response's and the log's ``model``: the version that answered."""
        return self.target.model

    @property
    def tracing(self) -> Tracing:
        return self.request.app.state.tracing

    @property
    def num_choices(self) -> int:
        return len(self.prompt_ids) * self.body.n

    @property
    def num_prompt_tokens(self) -> int:
        return sum(map(len, self.prompt_ids))

    async def screen_prompt(self, texts: list[str]) -> tuple[list[str], bool]:
        """(``texts`` with PII handled per policy, whether the request must be refused)."""
        if self.guardrails is None:
            return texts, False
        with self.tracing.span("safety.input"):
            screened, blocked = await self.guardrails.screen_input(texts, self.redactor)
        return screened, blocked is not None

    async def screen_retrieved(self, texts: list[str]) -> list[str | None]:
        """Retrieved chunks, redacted; ``None`` for a chunk that may not enter the prompt."""
        if self.guardrails is None or not texts:
            return list(texts)
        with self.tracing.span("safety.retrieved"):
            return await self.guardrails.screen_retrieved(texts, self.redactor)

    def refuse(self) -> BaseModel | StreamingResponse:
        """The answer to a refused prompt, logged; the engine never sees the request."""
        self.log([(0, REFUSAL, CONTENT_FILTER)], num_completion_tokens=0)
        if self.body.stream:
            return sse_response(_iterate([*self.refusal_events(), DONE]))
        return self.refusal()

    async def generate(self, options: SamplingOptions) -> BaseModel | StreamingResponse:
        """Run ``prompt_ids`` through the engine: the whole answer, or an SSE stream of it."""
        check_token_ids(options, self.engine.vocab_size)
        if batch_line_of(self.request) is not None:
            options = dataclasses.replace(options, priority=BATCH_PRIORITY)
        else:  # a batch line waits its turn in the engine's queue instead
            self.request.app.state.admission.check(self.num_choices)  # 503 before a stream
        self.options = options
        if self.body.stream:
            return sse_response(self._stream(options))
        return await self._full(options)

    def log(self, choices: list[tuple[int, str, str | None]], num_completion_tokens: int) -> None:
        """Charge the key's tokens-per-minute limit, then log each (index, screened text,
        finish_reason) as the endpoint shapes it (``logged_choice``)."""
        self.request.state.num_tokens = self.num_prompt_tokens + num_completion_tokens
        logged = [self.logged_choice(*choice) for choice in choices]
        with self.tracing.span("log"):
            log_completion(self, logged, num_completion_tokens)
        if self.options is not None:  # answered by the engine (not refused on input)
            self.request.app.state.shadow.after(self, self.options)

    def _traced(self, options: SamplingOptions, span: Span) -> SamplingOptions:
        """``options`` with the trace headers that make vLLM's spans children of ``span``."""
        headers = self.tracing.trace_headers(span)
        return options if headers is None else dataclasses.replace(options, trace_headers=headers)

    def _engine_attributes(self) -> dict:
        return {
            "gen_ai.request.model": self.body.model,
            "gen_ai.response.model": self.model,
            "gen_ai.response.id": self.id,
        }

    # -- whole answers ----------------------------------------------------------------------

    async def _full(self, options: SamplingOptions) -> BaseModel:
        admission = self.request.app.state.admission
        with self.tracing.span("engine", self._engine_attributes()) as span:
            options = self._traced(options, span)
            work = generate_all(
                self.engine, self.prompt_ids, options, self.id, self.lora, admission
            )
            outputs = await until_disconnected(self.request, work)
        choices = []
        for prompt_index, output in enumerate(outputs):
            for seq in sorted(output.outputs, key=lambda s: s.index):
                text, finish_reason, redactions = await self._screen_output(seq)
                index = prompt_index * self.body.n + seq.index
                gate = LogprobGate()
                gate.add(seq.text, seq.logprobs)
                logprobs = _sent_logprobs(gate, seq, finish_reason, len(seq.text), redactions)
                choices.append(
                    Choice(
                        index, prompt_index, seq, text, finish_reason, output.prompt_logprobs,
                        logprobs,
                    )
                )  # fmt: skip
        num_completion_tokens = sum(len(s.token_ids) for o in outputs for s in o.outputs)
        self.log([(c.index, c.text, c.finish_reason) for c in choices], num_completion_tokens)
        return self.response(choices, UsageInfo.of(self.num_prompt_tokens, num_completion_tokens))

    async def _screen_output(
        self, seq: SequenceOutput
    ) -> tuple[str, str | None, list["Redaction"]]:
        """(the text to send, its finish_reason, the spans of ``seq.text`` it replaced)."""
        if self.guardrails is None:
            return seq.text, seq.finish_reason, []
        with self.tracing.span("safety.output"):
            screened = await self.guardrails.screen_output(seq.text, self.redactor)
        if isinstance(screened, Blocked):
            return REFUSAL, CONTENT_FILTER, []
        text, redactions = screened
        return text, seq.finish_reason, redactions

    # -- streams ----------------------------------------------------------------------------

    async def _stream(self, options: SamplingOptions) -> AsyncIterator[str]:
        for event in self.stream_start():
            yield event
        sent = _Sent()
        try:
            async with contextlib.aclosing(self._screened_deltas(options, sent)) as deltas:
                async for choice in deltas:
                    yield self.chunk(choice)
        finally:  # charged for what the engine made, even if the stream ends early
            self.request.state.num_tokens = self.num_prompt_tokens + sent.num_completion_tokens
        usage = UsageInfo.of(self.num_prompt_tokens, sent.num_completion_tokens)
        if (event := self.stream_end(usage)) is not None:
            yield event
        self.log(
            [
                (i, sent.texts.get(i, ""), sent.finish_reasons.get(i))
                for i in range(self.num_choices)
            ],
            sent.num_completion_tokens,
        )
        yield DONE

    async def _screened_deltas(
        self, options: SamplingOptions, sent: "_Sent"
    ) -> AsyncIterator[Choice]:
        """Each choice's deltas through its own stream guard, until every choice has finished.
        A choice refused mid-way ends there; leaving early closes ``outputs``, which aborts
        the engine requests."""
        guards = self._stream_guards()
        gates = {i: LogprobGate() for i in range(self.num_choices)}
        admission = self.request.app.state.admission
        # Not current: it stays open across the yields below, where the consumer's code runs.
        # The deltas' screening happens within it (a span per delta would be one per token).
        span = self.tracing.start_span("engine", self._engine_attributes())
        options = self._traced(options, span)
        outputs = generate_stream(
            self.engine, self.prompt_ids, options, self.id, self.lora, admission
        )
        async with contextlib.aclosing(outputs), _ending(span):
            async for prompt_index, output in outputs:
                for seq in output.outputs:
                    sent.num_completion_tokens += len(seq.token_ids)
                    index = prompt_index * self.body.n + seq.index
                    if index in sent.finish_reasons:
                        continue
                    guard = guards.get(index)
                    text, finish_reason = await self._screen_delta(guard, seq)
                    sent.add(index, text, finish_reason)
                    gates[index].add(seq.text, seq.logprobs)
                    released = guard.released if guard else len(gates[index].text)
                    redactions = guard.redactions if guard else []
                    logprobs = _sent_logprobs(
                        gates[index], seq, finish_reason, released, redactions
                    )
                    if text or finish_reason or logprobs:
                        yield Choice(index, prompt_index, seq, text, finish_reason, None, logprobs)
                if len(sent.finish_reasons) == self.num_choices:
                    break

    def _stream_guards(self) -> dict[int, "StreamGuard"]:
        """One per choice; each holds back only what could still become a PII span."""
        if self.guardrails is None:
            return {}
        return {i: self.guardrails.stream(self.redactor) for i in range(self.num_choices)}

    async def _screen_delta(
        self, guard: "StreamGuard | None", seq: SequenceOutput
    ) -> tuple[str, str | None]:
        if guard is None:
            return seq.text, seq.finish_reason
        return await self.guardrails.screen_delta(guard, seq.text, seq.finish_reason)

    # -- the endpoint's half ----------------------------------------------------------------

    def logged_choice(self, index: int, text: str, finish_reason: str | None) -> dict:
        """What the request log keeps of one choice (its screened text, whole)."""
        return logged_choice(index, text, finish_reason)

    @abstractmethod
    def response(self, choices: list[Choice], usage: UsageInfo) -> BaseModel:
        """The whole answer."""

    @abstractmethod
    def refusal(self) -> BaseModel:
        """The whole answer to a refused prompt."""

    @abstractmethod
    def stream_start(self) -> list[str]:
        """SSE events before the first delta."""

    @abstractmethod
    def chunk(self, choice: Choice) -> str:
        """The SSE event of one screened delta."""

    @abstractmethod
    def stream_end(self, usage: UsageInfo) -> str | None:
        """The SSE event after the last delta (usage, citations), if any."""

    @abstractmethod
    def refusal_events(self) -> list[str]:
        """The SSE events of a refused prompt, before ``[DONE]``."""


@dataclass
class _Sent:
    """What a stream has sent so far, by choice index."""

    texts: dict[int, str] = field(default_factory=dict)
    finish_reasons: dict[int, str] = field(default_factory=dict)
    num_completion_tokens: int = 0
    """Generated by the engine, sent or not (a refused choice's rest still counts)."""

    def add(self, index: int, text: str, finish_reason: str | None) -> None:
        self.texts[index] = self.texts.get(index, "") + text
        if finish_reason:
            self.finish_reasons[index] = finish_reason


def _sent_logprobs(
    gate: LogprobGate,
    seq: SequenceOutput,
    finish_reason: str | None,
    released: int,
    redactions: list["Redaction"],
) -> list[SentLogprob] | None:
    """What ``gate`` may send now that ``released`` characters of its text went out with
    ``redactions``; None when the choice was refused or logprobs were not asked for."""
    if seq.logprobs is None or finish_reason == CONTENT_FILTER:
        return None
    return gate.release(released, redactions, final=finish_reason is not None)


@contextlib.asynccontextmanager
async def _ending(span: Span) -> AsyncIterator[None]:
    """Ends ``span`` however the block ends: a span left open is never exported."""
    try:
        yield
    finally:
        span.end()


async def _iterate(events: Iterable[str]) -> AsyncIterator[str]:
    for event in events:
        yield event
