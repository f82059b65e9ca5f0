"""Apply a ``SafetyPolicy`` to whole texts (``Guard.check``) and to streamed output (``StreamGuard``).

``check`` detects PII, classifies harm only when the policy blocks some category, and answers
one ``Verdict``. ``StreamGuard`` receives output deltas and releases only text that can no
longer become part of a PII span, already redacted; it classifies the accumulated text at
sentence boundaries (not every token) and sets ``blocked`` when a blocked category shows up.
"""

import threading
from dataclasses import dataclass, field
from typing import Literal

from llmloop.safety.harm import HEAD_PATH, INT8_HEAD_PATH, Classification, HarmClassifier
from llmloop.safety.korean import pending_start
from llmloop.safety.messages import detect_messages
from llmloop.safety.multilingual import (
    MULTILINGUAL_HEAD_PATH,
    Classifier,
    RoutedHarmClassifier,
)
from llmloop.safety.partial import Partial, trailing_partial
from llmloop.safety.pii import MAX_PII_CHARS, Finding, detect
from llmloop.safety.policy import Direction, DirectionPolicy, SafetyPolicy
from llmloop.safety.redact import Redactor


@dataclass(frozen=True)
class Redaction:
    """One span of the original text replaced in what is released: callers that send more than
    the text (token logprobs) drop what overlaps it."""

    start: int
    end: int
    replacement: str


@dataclass(frozen=True)
class Verdict:
    action: Literal["allow", "redact", "block"]
    """What the caller should do: pass ``text`` on, pass the redacted ``text`` on, or refuse."""
    text: str
    """The text with every PII span the policy redacts or blocks replaced: safe to log."""
    findings: list[Finding]
    """Every PII span found, whatever the policy does with it."""
    blocked_categories: list[str]
    """Harm categories (and PII types) that made the verdict ``block``."""
    classification: Classification | None
    """The harm classification, or None when the policy allows every category."""
    redactions: list[Redaction] = field(default_factory=list)
    """The spans of the original text that ``text`` replaced, in order."""


class Guard:
    """A policy plus the classifiers it needs; shared by all requests of a server.

    Input is classified by ``classifier`` (fp32), output by ``output_classifier`` (the int8
    head: answers are long and checked as they stream, so they hold most of the text to
    classify). Given a ``classifier`` only, it serves both directions. Loaded on first use when
    not given: each a ``RoutedHarmClassifier`` (English to its MiniLM head, other languages to
    the multilingual e5 head, one e5 shared by both directions).
    """

    def __init__(
        self,
        policy: SafetyPolicy,
        classifier: Classifier | None = None,
        output_classifier: Classifier | None = None,
    ):
        self.policy = policy
        self._classifiers = {"input": classifier, "output": output_classifier or classifier}
        self._multilingual: HarmClassifier | None = None
        self._lock = threading.Lock()

    @property
    def classifier(self) -> Classifier:
        """The input classifier, loaded on first use when none was given."""
        return self.classifier_for("input")

    def classifier_for(self, direction: Direction) -> Classifier:
        """The harm classifier of ``direction``, loaded on first use when none was given."""
        if self._classifiers[direction] is None:
            with self._lock:
                if self._classifiers[direction] is None:
                    head = HEAD_PATH if direction == "input" else INT8_HEAD_PATH
                    if self._multilingual is None:
                        self._multilingual = HarmClassifier.load(MULTILINGUAL_HEAD_PATH)
                    self._classifiers[direction] = RoutedHarmClassifier.load(
                        head, self._multilingual
                    )
        return self._classifiers[direction]  # type: ignore[return-value]

    def check(self, text: str, direction: Direction, redactor: Redactor | None = None) -> Verdict:
        return self.judge(text, direction, redactor, self.classify(text, direction))

    def judge(
        self,
        text: str,
        direction: Direction,
        redactor: Redactor | None,
        classification: Classification | None,
        findings: list[Finding] | None = None,
    ) -> Verdict:
        """``check`` with the harm classification already made (None: not needed), for callers
        that classify many texts in one batch. An output is a whole answer: a fragment at its
        end that may be the start of a PII value is hidden too (``safety/partial.py``)."""
        rules = self.policy.direction(direction)
        redactor = redactor or Redactor(self.policy.operator)
        findings = detect(text) if findings is None else findings
        blocked = (
            blocked_pii(findings, rules)
            + blocked_harm(classification, rules)
            + blocked_terms(text, rules)
        )
        hidden = [f for f in findings if rules.pii[f.type] != "allow"]
        if direction == "output":
            partial = hidden_partial(text, findings, rules)
            hidden += [partial] if partial else []
        else:
            partial = None
        safe_text = redactor.redact(text, hidden) if hidden else text
        if blocked:
            action = "block"
        elif partial or any(rules.pii[f.type] == "redact" for f in findings):
            action = "redact"
        else:
            action = "allow"
        redactions = [Redaction(f.start, f.end, redactor.replacement(f)) for f in hidden]
        return Verdict(action, safe_text, findings, blocked, classification, redactions)

    def judge_messages(
        self,
        texts: list[str],
        direction: Direction,
        redactor: Redactor | None,
        classifications: list[Classification | None],
    ) -> list[Verdict]:
        """``judge`` for each message of one conversation (or each text of one prompt),
        with a PII value split across adjacent messages found in each (``detect_messages``)."""
        redactor = redactor or Redactor(self.policy.operator)
        return [
            self.judge(text, direction, redactor, classification, findings)
            for text, classification, findings in zip(
                texts, classifications, detect_messages(texts), strict=True
            )
        ]

    def classify(self, text: str, direction: Direction) -> Classification | None:
        if not needs_classification(text, self.policy.direction(direction)):
            return None
        return self.classifier_for(direction).classify([text])[0]

    def redact(self, text: str, redactor: Redactor | None = None) -> str:
        """``text`` with every PII span redacted, whatever the policy: for logs."""
        return (redactor or Redactor(self.policy.operator)).redact(text, detect(text))

    def stream(
        self, direction: Direction = "output", redactor: Redactor | None = None
    ) -> "StreamGuard":
        return StreamGuard(self, direction, redactor or Redactor(self.policy.operator))


def needs_classification(text: str, rules: DirectionPolicy) -> bool:
    """Whether ``text`` must be classified: the policy blocks some harm category, and there is
    text."""
    return rules.needs_classifier and bool(text.strip())


def hidden_partial(text: str, findings: list[Finding], rules: DirectionPolicy) -> Finding | None:
    """The unfinished PII value that ends ``text`` (after its last whole one), unless the policy
    allows every type it may be the start of."""
    partial: Partial | None = trailing_partial(text, findings[-1].end if findings else 0)
    if partial is None or all(rules.pii[t] == "allow" for t in partial.types):
        return None
    return partial.finding


def blocked_pii(findings: list[Finding], rules: DirectionPolicy) -> list[str]:
    return sorted({f.type for f in findings if rules.pii[f.type] == "block"})


def blocked_terms(text: str, rules: DirectionPolicy) -> list[str]:
    """``["blocklist"]`` when the direction's block list finds a term or regex in ``text``."""
    return [BLOCKLIST] if rules.blocklist and rules.blocklist.find(text) else []


def blocked_harm(classification: Classification | None, rules: DirectionPolicy) -> list[str]:
    if classification is None:
        return []
    return [c for c in classification.flagged_categories if rules.harm[c] == "block"]


# Characters a PII span may continue with after a space: the digit groups of phone and card
# numbers and SSNs, the capitals and digits of IBAN groups, PEM headers.
JOINABLE = frozenset("0123456789+-().# ABCDEFGHIJKLMNOPQRSTUVWXYZ")
MAX_JOINABLE_HOLD = 64  # chars; longer than any spaced PII (an IBAN is at most 34 + 8 spaces)
MAX_WORD_HOLD = 4096  # chars; one "word" (no whitespace) is held whole up to this size
# A hold that outgrows its cap (twice MAX_JOINABLE_HOLD for a joinable run) is released down
# to half of it: the held text is then checked again once per half cap of new text, not at
# every delta.
MAX_KEY_HOLD = MAX_PII_CHARS  # chars; an unterminated private key block is held up to this
CONTEXT_CHARS = 32  # already-released text the detectors see before the pending text
HARM_FIRST_CHARS = 48  # the first check, at the first sentence end past this length ...
HARM_CHECK_CHARS = 240  # ... then after this many new chars at a sentence end ...
HARM_FORCE_CHARS = 400  # ... or after this many whatever the punctuation
HARM_CONTEXT_CHARS = 160  # already-classified text a check sees before the new text
SENTENCE_ENDS = frozenset(".!?\n")
BLOCKLIST = "blocklist"  # what blocked_categories says when the policy's block list matched
PRIVATE_KEY_BEGIN = "-----BEGIN"


@dataclass
class StreamGuard:
    """Guards one streamed answer. ``feed`` each delta, send what it returns, then send
    ``finish()``; stop early (finish_reason ``content_filter``) once ``blocked`` is set.

    Harm checks classify each stretch of new text once, with the ``HARM_CONTEXT_CHARS`` before
    it, not the whole answer again and again. ``feed``/``finish`` classify inline; a server that
    batches classifications across streams drives the steps itself: ``push``, classify
    ``harm_window()`` if it is not None, ``apply`` the result, ``release``.
    """

    guard: Guard
    direction: Direction
    redactor: Redactor
    blocked: bool = field(default=False, init=False)
    """Set once the output is harmful (or holds PII) under a ``block`` rule; stop streaming."""
    blocked_categories: list[str] = field(default_factory=list, init=False)
    """The harm categories (or PII types) that set ``blocked``."""
    findings: list[Finding] = field(default_factory=list, init=False)
    """Every PII span released so far (offsets into the whole streamed text)."""
    redactions: list[Redaction] = field(default_factory=list, init=False)
    """The spans of ``text`` replaced in what was released, in order."""
    _pieces: list[str] = field(default_factory=list, init=False, repr=False)  # every delta
    _length: int = field(default=0, init=False, repr=False)  # len(text)
    # text[_base:]: what later steps still read. Appending to it copies it, so it is kept
    # short; appending to the whole text would copy it all for every delta (quadratic).
    _tail: str = field(default="", init=False, repr=False)
    _base: int = field(default=0, init=False, repr=False)
    _released: int = field(default=0, init=False, repr=False)  # chars of ``text`` released
    _classified: int = field(default=0, init=False, repr=False)  # len(text) at the last check
    _at_sentence_end: bool = field(default=False, init=False, repr=False)  # the last delta's

    def __post_init__(self) -> None:
        self.rules = self.guard.policy.direction(self.direction)

    @property
    def text(self) -> str:
        """Everything fed so far, unredacted (never send this)."""
        return "".join(self._pieces)

    def _since(self, start: int) -> str:
        """``text[start:]``, for a ``start`` no earlier than what ``_trim`` keeps."""
        return self._tail[start - self._base :]

    def _trim(self) -> None:
        """Drop from the tail what no later step reads."""
        keep = self._released - CONTEXT_CHARS
        if self.rules.needs_classifier:
            keep = min(keep, self._classified - HARM_CONTEXT_CHARS)
        if keep > self._base:
            self._tail = self._tail[keep - self._base :]
            self._base = keep

    def feed(self, delta: str) -> str:
        """The text that is safe to emit now, already redacted ("" while holding back)."""
        self.push(delta)
        self._classify_inline(self.harm_window())
        return self.release()

    def finish(self) -> str:
        """The held-back rest, redacted ("" when blocked)."""
        self._classify_inline(self.harm_window(final=True))
        return self.release(final=True)

    def push(self, delta: str) -> None:
        if not self.blocked:
            self._pieces.append(delta)
            self._tail += delta
            self._length += len(delta)
            self._at_sentence_end = not SENTENCE_ENDS.isdisjoint(delta)

    def harm_window(self, final: bool = False) -> str | None:
        """The text to classify now (the new text and its context), or None when no check is
        due; ``final``: whatever was not classified yet. Counts as classified once returned."""
        new = self._length - self._classified
        if self.blocked or not new or not self.rules.needs_classifier:
            return None
        if not final:
            if self._classified == 0:
                due = self._length >= HARM_FIRST_CHARS and self._at_sentence_end
            else:
                due = new >= HARM_FORCE_CHARS or (new >= HARM_CHECK_CHARS and self._at_sentence_end)
            if not due:
                return None
        window = self._since(max(0, self._classified - HARM_CONTEXT_CHARS))
        self._classified = self._length
        return window if needs_classification(window, self.rules) else None

    def apply(self, classification: Classification | None) -> None:
        """Record the classification of a ``harm_window``: blocks on a blocked category."""
        if categories := blocked_harm(classification, self.rules):
            self.blocked, self.blocked_categories = True, categories

    @property
    def released(self) -> int:
        """How many characters of ``text`` were released so far."""
        return self._released

    def release(self, final: bool = False) -> str:
        """The text that can be sent now, redacted; ``final``: all the rest ("" when blocked),
        with an unfinished PII value at the end hidden as in ``Guard.judge``."""
        if self.blocked:
            return ""
        return self._release(self._length if final else self._hold_start(), final)

    def _classify_inline(self, window: str | None) -> None:
        if window is not None:
            self.apply(self.guard.classify(window, self.direction))

    def _hold_start(self) -> int:
        """Where the suffix starts that could still become (part of) a PII span. Linear in the
        held text, at C speed but for the joinable run (at most 128 chars)."""
        held = self._since(self._released)  # offsets below are into held
        key = held.rfind(PRIVATE_KEY_BEGIN)
        if key >= 0 and "-----END" not in held[key + len(PRIVATE_KEY_BEGIN) :]:
            if len(held) - key > MAX_KEY_HOLD:
                key = len(held) - MAX_KEY_HOLD // 2
            return self._released + key
        # the last word may still grow
        word = "" if not held or held[-1].isspace() else held.rsplit(None, 1)[-1]
        if len(word) > MAX_WORD_HOLD:
            word = word[-(MAX_WORD_HOLD // 2) :]
        start = word_start = len(held) - len(word)
        joinable_floor = max(0, start - 2 * MAX_JOINABLE_HOLD)
        while start > joinable_floor and held[start - 1] in JOINABLE:
            start -= 1
        if word_start - start == 2 * MAX_JOINABLE_HOLD:  # a long run: keep its last stretch
            start = joinable_floor = word_start - MAX_JOINABLE_HOLD
        if held[start:word_start].strip():
            # the run may begin inside a word ("iban:de89 3704", "Tel:555 123"): hold it all
            while start > joinable_floor and not held[start - 1].isspace():
                start -= 1
        # a Korean address or labelled name spans words: "서울특별시 강남구 " waits for its number
        pending = pending_start(held)
        if pending is not None:
            start = min(start, pending)
        return self._released + start

    def _release(self, cut: int, final: bool = False) -> str:
        """Redact and release ``text[_released:cut]``, moving ``cut`` back so that no PII span
        crosses it; ``final``: ``cut`` is the end of the answer."""
        if cut <= self._released:
            return ""
        window_start = max(0, self._released - CONTEXT_CHARS)
        window = self._since(window_start)
        # the held text too, and CONTEXT_CHARS of released text: a term cut by the previous
        # release is found whole, unless it is longer than that (docs/safety.md)
        if blocked := blocked_terms(window, self.rules):
            self.blocked, self.blocked_categories = True, blocked
            return ""
        pending = []
        for f in detect(window):
            start, end = f.start + window_start, f.end + window_start
            if start < self._released:
                continue  # context only; it was handled when released
            if start < cut < end:
                cut = start
            pending.append(Finding(f.type, start, end, f.text, f.score))
        released = [f for f in pending if f.end <= cut]
        if blocked := blocked_pii(released, self.rules):
            self.blocked, self.blocked_categories = True, blocked
            return ""
        hidden = [f for f in released if self.rules.pii[f.type] != "allow"]
        if final:
            partial = hidden_partial(self.text, self.findings + released, self.rules)
            if partial and partial.start >= self._released:
                hidden.append(partial)
            elif partial:  # it began in text already released: hide the rest of it
                start = self._released
                hidden.append(Finding(partial.type, start, partial.end, self.text[start:], 0.5))
        chunk = self._since(self._released)[: cut - self._released]
        shifted = [
            Finding(f.type, f.start - self._released, f.end - self._released, f.text, f.score)
            for f in hidden
        ]
        self.findings.extend(released)
        self.redactions += [Redaction(f.start, f.end, self.redactor.replacement(f)) for f in hidden]
        self._released = cut
        self._trim()
        return self.redactor.redact(chunk, shifted) if shifted else chunk
