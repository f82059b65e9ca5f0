"""The safety layer around a request: input is screened before it reaches the engine, retrieved
text before it enters the prompt, output as it is generated (streams hold back only what could
still turn into a PII span). Everything the request log sees has been through here."""

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from serve.metrics import ServerMetrics

if TYPE_CHECKING:  # the safety package (and torch) load with the guardrails, not on import
    from safety.guard import Guard, StreamGuard, Verdict
    from safety.harm import HarmClassifier
    from safety.redact import Redactor

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

    @property
    def classifier(self) -> "HarmClassifier":
        """The harm classifier the guard uses; /v1/moderations serves it too."""
        return self.guard.classifier

    @classmethod
    def load(cls, policy_path: str | None, metrics: ServerMetrics) -> "Guardrails":
        """Blocking (loads the classifier): call it from a worker thread at start-up."""
        from safety.guard import Guard
        from safety.policy import load_policy

        guard = Guard(load_policy(policy_path))
        guard.classifier.classify(["warm-up"])  # one-time costs now, not on the first request
        return cls(guard, metrics)

    def redactor(self) -> "Redactor":
        """One per request, so placeholders (<EMAIL_1>) stay stable across its messages."""
        from safety.redact import Redactor

        return Redactor(self.guard.policy.operator)

    async def screen_input(
        self, texts: list[str], redactor: "Redactor"
    ) -> tuple[list[str], Blocked | None]:
        """(the texts with PII handled per policy, ``Blocked`` if the request must be refused)."""
        verdicts = await asyncio.to_thread(self._check_all, texts, "input", redactor)
        if any(v.action == "block" for v in verdicts):
            categories = [c for v in verdicts for c in v.blocked_categories]
            return [v.text for v in verdicts], Blocked(categories or ["pii"])
        return [v.text for v in verdicts], None

    async def screen_retrieved(self, texts: list[str], redactor: "Redactor") -> list[str | None]:
        """Retrieved chunks, redacted; ``None`` for a chunk that may not enter the prompt."""
        verdicts = await asyncio.to_thread(self._check_all, texts, "input", redactor)
        return [None if v.action == "block" else v.text for v in verdicts]

    async def screen_output(self, text: str, redactor: "Redactor") -> str | Blocked:
        (verdict,) = await asyncio.to_thread(self._check_all, [text], "output", redactor)
        if verdict.action == "block":
            return Blocked(verdict.blocked_categories or ["pii"])
        return verdict.text

    def stream(self, redactor: "Redactor") -> "StreamGuard":
        return self.guard.stream("output", redactor)

    def screen_delta(
        self, stream: "StreamGuard", text: str, finish_reason: str | None
    ) -> tuple[str, str | None]:
        """One streamed delta through ``stream``: (text safe to send, finish_reason). Once the
        output is blocked (on a delta or by the last check in ``finish``), the choice ends with
        the refusal and ``content_filter``."""
        text = stream.feed(text)
        if finish_reason and not stream.blocked:
            text += stream.finish()
        if stream.blocked:
            for category in stream.blocked_categories:
                self.metrics.safety_actions.labels("output", category, "block").inc()
            return REFUSAL, CONTENT_FILTER
        return text, finish_reason

    def _check_all(self, texts: list[str], direction: str, redactor: "Redactor") -> list["Verdict"]:
        verdicts = [self.guard.check(text, direction, redactor) for text in texts]
        for verdict in verdicts:
            self._count(direction, verdict)
        return verdicts

    def _count(self, direction: str, verdict: "Verdict") -> None:
        for finding in verdict.findings:
            self.metrics.safety_actions.labels(direction, finding.type, verdict.action).inc()
        for category in verdict.blocked_categories:
            self.metrics.safety_actions.labels(direction, category, "block").inc()
