"""Token logprobs that say no more than the screened text (docs/safety.md, "Logprobs").

Each token of a choice covers a span of the engine's text: the offsets of its string when the
token strings spell the text. A ``LogprobGate`` sends a token's entry only once the text up to
and including the character after it was released by the safety layer, drops the entry of a
token that overlaps a redacted span, and strips the alternatives (``top_logprobs``) of a token
that touches one: alternatives could spell the value the text no longer holds. Where the token
strings stop spelling the text (a multi-byte character split across tokens, tokens of a stop
string), every later token may lie anywhere after that point: it waits for the end of the
choice and is dropped if any redaction follows.
"""

import bisect
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from llmloop.serve.engine_api import TokenLogprob

if TYPE_CHECKING:
    from llmloop.safety.guard import Redaction

UNBOUNDED = sys.maxsize


@dataclass(frozen=True)
class SentLogprob:
    text_offset: int
    """Where the token starts in the choice's screened text (all of it, streamed or not)."""
    logprob: TokenLogprob


@dataclass
class LogprobGate:
    """One choice's token logprobs on their way out: ``add`` each delta's text and entries,
    then ``release`` what the released (screened) text covers."""

    text: str = ""
    """The engine's text so far, unscreened (never send this)."""
    _pending: list[TokenLogprob] = field(default_factory=list)
    _spelled: int = 0  # text[:_spelled] is spelled by the tokens released so far
    _aligned: bool = True  # False once a token string did not spell the text
    _shift: int = 0  # screened minus original length of the redactions before _spelled
    _num_shifted: int = 0  # redactions counted in _shift

    def add(self, text: str, logprobs: Sequence[TokenLogprob] | None) -> None:
        self.text += text
        self._pending.extend(logprobs or ())

    def release(
        self, released: int, redactions: Sequence["Redaction"], final: bool
    ) -> list[SentLogprob]:
        """The entries now safe to send: ``released`` characters of ``text`` went out with
        ``redactions`` replaced; ``final``: the choice ended (everything is decided)."""
        sent = []
        while self._pending:
            token = self._pending[0]
            start, end = self._spelled, self._spelled + len(token.token)
            if self._aligned and self.text[start:end] != token.token and end <= len(self.text):
                self._aligned = False
            if not self._aligned or end > len(self.text):
                if not final:
                    break
                self._aligned, end = False, UNBOUNDED
            elif end >= released and not final:
                break  # the next character may still start a redacted span
            self._pending.pop(0)
            entry = _screened(token, start, end, redactions)
            if entry is not None:
                sent.append(SentLogprob(self._screened_offset(start, redactions), entry))
            if self._aligned:
                self._spelled = end
        return sent

    def _screened_offset(self, position: int, redactions: Sequence["Redaction"]) -> int:
        while self._num_shifted < len(redactions):
            redaction = redactions[self._num_shifted]
            if redaction.end > position:
                break
            self._shift += len(redaction.replacement) - (redaction.end - redaction.start)
            self._num_shifted += 1
        return position + self._shift


def _screened(
    token: TokenLogprob, start: int, end: int, redactions: Sequence["Redaction"]
) -> TokenLogprob | None:
    """``token`` as it may be sent: None inside a redacted span, no alternatives beside one."""
    first = bisect.bisect_left(redactions, start, key=lambda r: r.end)  # the first ending >= start
    touches = False
    for redaction in redactions[first : first + 2]:
        if redaction.start < end and start < redaction.end:
            return None
        touches |= redaction.end == start or redaction.start == end
    return replace(token, top_logprobs=()) if touches else token


def prompt_logprobs_of(
    logprobs: Sequence[TokenLogprob | None] | None, top_k: int
) -> list[dict[str, dict] | None] | None:
    """vLLM's ``prompt_logprobs``: per prompt token, token id → {logprob, rank, decoded_token}
    for the prompt's token and its ``top_k`` most likely alternatives. The prompt is the
    client's own (after redaction), so there is nothing to gate."""
    if logprobs is None:
        return None
    converted: list[dict[str, dict] | None] = []
    for lp in logprobs:
        if lp is None:
            converted.append(None)
            continue
        entry = {
            str(lp.token_id): {"logprob": lp.logprob, "rank": lp.rank, "decoded_token": lp.token}
        }
        alternatives = zip(lp.top_token_ids[:top_k], lp.top_logprobs[:top_k], strict=False)
        for rank, (token_id, (token, logprob)) in enumerate(alternatives, 1):
            entry.setdefault(
                str(token_id), {"logprob": logprob, "rank": rank, "decoded_token": token}
            )
        converted.append(entry)
    return converted
