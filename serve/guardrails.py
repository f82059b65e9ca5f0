"""The safety layer around a request: input is screened before it reaches the engine, retrieved
text before it enters the prompt, output as it is generated (streams hold back only what could
still turn into a PII span). Everything the request log sees has been through here.

Harm classifications of all concurrent requests go through a ``MicroBatcher`` per direction
(inputs and retrieved chunks; stream checks), both on one worker thread: the classifier runs
batched, never on the event loop and never on several threads competing with the engine for
the CPU.
"""

import asyncio
import functools
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmloop.serve.batcher import MicroBatcher
from llmloop.serve.metrics import ServerMetrics

if TYPE_CHECKING:  # the safety package (and torch) load with the guardrails, not on import
    from llmloop.safety.guard import Guard, Redaction, StreamGuard, Verdict
    from llmloop.safety.harm import Classification
    from llmloop.safety.redact import Redactor

RETRIEVED_CACHE_SIZE = 8192
"""Retrieved chunks whose harm classification a server keeps (a few MB)."""
REFUSAL = "I can't help with that request."
CONTENT_FILTER = "content_filter"
"""The finish_reason of a refused request or a blocked answer, as OpenAI's."""


@dataclass(frozen=True)
class Blocked:
    """The request or its answer was refused; ``categories`` says why."""

    categories: list[str]


class Guardrails:
    def __init__(self, guard: "Guard", metrics: ServerMetrics):
        self.guard = guard
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmloop-safety")
        self._retrieved: OrderedDict[str, Classification] = OrderedDict()
        """Harm classifications of retrieved chunks by text, least recently used first."""
        self.batchers: dict[str, MicroBatcher[str, Classification]] = {
            direction: MicroBatcher(
                functools.partial(self._classify, direction),
                self._executor,
                on_batch=metrics.safety_batch_duration.labels(direction).observe,
            )
            for direction in ("input", "output")
        }
        for direction, batcher in self.batchers.items():  # read at scrape time
            depth = metrics.safety_queue_depth.labels(direction)
            depth.set_function(lambda batcher=batcher: batcher.num_pending)

    def _classify(self, direction: str, texts: list[str]) -> list["Classification"]:
        """On the worker thread. The classifier loads on first use: a policy that allows every
        category never loads it."""
        return self.guard.classifier_for(direction).classify(texts)

    @classmethod
    def load(cls, policy_path: str | None, metrics: ServerMetrics) -> "Guardrails":
        """Blocking (loads the classifier): call it from a worker thread at start-up."""
        from llmloop.safety.guard import Guard
        from llmloop.safety.policy import load_policy

        guard = Guard(load_policy(policy_path))
        for direction in ("input", "output"):  # load the classifiers, pay one-time costs now
            if guard.policy.direction(direction).needs_classifier:
                guard.classifier_for(direction).classify(["warm-up", "준비 운동"])  # en, ko
        return cls(guard, metrics)

    async def classify(self, texts: list[str]) -> list["Classification"]:
        """Classify with the input classifier, batched with the requests' checks (moderation)."""
        return await self.batchers["input"].submit(texts)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def redactor(self) -> "Redactor":
        """One per request, so placeholders (<EMAIL_1>) stay stable across its messages."""
        from llmloop.safety.redact import Redactor

        return Redactor(self.guard.policy.operator)

    async def screen_input(
        self, texts: list[str], redactor: "Redactor"
    ) -> tuple[list[str], Blocked | None]:
        """(the texts with PII handled per policy, ``Blocked`` if the request must be refused)."""
        verdicts = await self._check_all(texts, "input", redactor)
        if any(v.action == "block" for v in verdicts):
            categories = [c for v in verdicts for c in v.blocked_categories]
            return [v.text for v in verdicts], Blocked(categories or ["pii"])
        return [v.text for v in verdicts], None

    async def screen_retrieved(self, texts: list[str], redactor: "Redactor") -> list[str | None]:
        """Retrieved chunks, redacted; ``None`` for a chunk that may not enter the prompt.

        The harm classifier's output for a chunk is kept by the chunk's text (the last
        ``RETRIEVED_CACHE_SIZE`` texts): the same chunks come back question after question, and
        classifying four new ~1,000-character chunks took longer than a whole chat without
        retrieval on a 2-core CPU (docs/rag.md, "RAG chat latency"). A classification is a pure
        function of the text and this server's classifier; the policy's decision (harm
        categories, block list, PII) is still made on every request from it, so a chunk that is
        blocked once is blocked every time and never reaches a prompt."""
        from llmloop.safety.guard import needs_classification

        rules = self.guard.policy.direction("input")
        needed = [needs_classification(text, rules) for text in texts]
        classifications: dict[str, Classification] = {}
        for text in dict.fromkeys(t for t, need in zip(texts, needed, strict=True) if need):
            if (cached := self._retrieved.get(text)) is not None:
                self._retrieved.move_to_end(text)
                classifications[text] = cached
        missing = [t for t, need in zip(texts, needed, strict=True) if need]
        missing = [t for t in dict.fromkeys(missing) if t not in classifications]
        for text, classification in zip(
            missing, await self.batchers["input"].submit(missing), strict=True
        ):
            classifications[text] = self._retrieved[text] = classification
        while len(self._retrieved) > RETRIEVED_CACHE_SIZE:
            self._retrieved.popitem(last=False)
        per_text = [
            classifications[t] if need else None for t, need in zip(texts, needed, strict=True)
        ]
        verdicts = await asyncio.to_thread(
            self.guard.judge_messages, texts, "input", redactor, per_text
        )
        for verdict in verdicts:
            self._count("input", verdict)
        return [None if v.action == "block" else v.text for v in verdicts]

    async def screen_output(
        self, text: str, redactor: "Redactor"
    ) -> tuple[str, list["Redaction"]] | Blocked:
        """(the whole answer with PII handled per policy, the spans it replaced), or ``Blocked``."""
        (verdict,) = await self._check_all([text], "output", redactor)
        if verdict.action == "block":
            return Blocked(verdict.blocked_categories or ["pii"])
        return verdict.text, verdict.redactions

    def stream(self, redactor: "Redactor") -> "StreamGuard":
        return self.guard.stream("output", redactor)

    async def screen_delta(
        self, stream: "StreamGuard", text: str, finish_reason: str | None
    ) -> tuple[str, str | None]:
        """One streamed delta through ``stream``: (text safe to send, finish_reason). Once the
        output is blocked (on a delta or by the last check at the end), the choice ends with
        the refusal and ``content_filter``."""
        final = finish_reason is not None
        stream.push(text)
        if (window := stream.harm_window(final)) is not None:
            (classification,) = await self.batchers["output"].submit([window])
            stream.apply(classification)
        text = stream.release(final)
        if stream.blocked:
            for category in stream.blocked_categories:
                self.metrics.safety_actions.labels("output", category, "block").inc()
            return REFUSAL, CONTENT_FILTER
        return text, finish_reason

    async def _check_all(
        self, texts: list[str], direction: str, redactor: "Redactor"
    ) -> list["Verdict"]:
        from llmloop.safety.guard import needs_classification

        rules = self.guard.policy.direction(direction)
        needed = [needs_classification(text, rules) for text in texts]
        to_classify = [text for text, need in zip(texts, needed, strict=True) if need]
        classified = iter(await self.batchers[direction].submit(to_classify))
        classifications = [next(classified) if need else None for need in needed]
        # PII detection off the event loop; the texts are one conversation's messages (or one
        # request's prompts, or its retrieved chunks): a value split across two is found too
        verdicts = await asyncio.to_thread(
            self.guard.judge_messages, texts, direction, redactor, classifications
        )
        for verdict in verdicts:
            self._count(direction, verdict)
        return verdicts

    def _count(self, direction: str, verdict: "Verdict") -> None:
        for finding in verdict.findings:
            self.metrics.safety_actions.labels(direction, finding.type, verdict.action).inc()
        for category in verdict.blocked_categories:
            self.metrics.safety_actions.labels(direction, category, "block").inc()
