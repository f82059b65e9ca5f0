"""PII detection: patterns find candidates, validators decide, offsets point into the caller's text.

``detect(text)`` normalizes unicode tricks away (see ``normalize``), runs every detector on the
normalized text, keeps the validated candidates, resolves overlaps (the more specific type wins:
a card number is not also reported as a phone number) and maps spans back to the original text.
``llmloop.safety.messages.detect_messages`` also finds a value split across two messages.

Linear time, whatever the input: every pattern is bounded or anchored so that each position of
the text starts at most one bounded attempt (``tests/safety/test_redos.py`` times every pattern
on adversarial megabytes), and a detector never sees more than ``MAX_SCAN_CHARS`` at once.
"""

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from llmloop.safety import validators
from llmloop.safety.korean import kr_address_spans, kr_name_spans
from llmloop.safety.normalize import TAG_CHARACTERS, NormalizedText, normalize
from llmloop.safety.phones import phone_spans

PII_TYPES: tuple[str, ...] = (
    "EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "KR_RRN", "IP_ADDRESS", "SECRET",
    "KR_ADDRESS", "KR_NAME",
)  # fmt: skip
"""Every type ``detect`` reports, in the order policies and reports list them."""

MAX_PII_CHARS = 16_384
"""The longest value a detector reports: a private-key block (an RSA-16384 key in PEM is 12.7
KB). Every pattern is bounded below it; a longer "value" is not one."""
SCAN_OVERLAP_CHARS = MAX_PII_CHARS + 256  # a value plus what detectors look at around it
MAX_SCAN_CHARS = 1 << 18
"""The most text (256 Ki characters) one detector call sees. The server takes request bodies
of up to 8 MiB (``max_request_body_bytes``), so a message may hold 8 Mi characters: a longer
text is scanned in windows of this size that overlap by ``SCAN_OVERLAP_CHARS`` on each side,
so that every value, one across a window edge included, lies whole inside some window with its
context, and the total work stays linear (each character is scanned about 1.15 times). A window
also bounds how long one regex call holds the GIL: under 40 ms on any adversarial input."""


@dataclass(frozen=True)
class Finding:
    type: str
    """One of ``PII_TYPES``."""
    start: int
    """Offset of the first character in the original text."""
    end: int
    """Offset just past the last character in the original text."""
    text: str
    """The original characters ``text[start:end]``."""
    score: float
    """Confidence in [0, 1]: 1.0 for checksum-validated values, lower for shape-only matches."""


def detect(text: str) -> list[Finding]:
    """Every PII span in ``text``, sorted by start offset, non-overlapping."""
    candidates = [
        _Candidate(c.type, start, end, c.score, c.priority)
        for normalized in _normalizations(text)
        for c in _scan(normalized.text)
        for start, end in [normalized.span(c.start, c.end)]
    ]
    return [
        Finding(c.type, c.start, c.end, text[c.start : c.end], c.score)
        for c in _without_overlaps(candidates, len(text))
    ]


def _normalizations(text: str) -> Iterator[NormalizedText]:
    yield normalize(text)
    if TAG_CHARACTERS.search(text):
        # tags are dropped as noise inside a value, and read as the text a value may hide in
        yield normalize(text, decode_tags=True)


class _Candidate(NamedTuple):  # a tuple: a megabyte of emails makes 150,000 of them
    type: str
    start: int
    end: int
    score: float
    priority: int  # higher wins an overlap (a dotted IP beats a phone), then the longer span


def _scan(text: str) -> list[_Candidate]:
    """Every detector's candidates in ``text``, in windows of at most ``MAX_SCAN_CHARS``: a
    window reports the candidates that start in its middle part (the rest is context)."""
    if len(text) <= MAX_SCAN_CHARS:
        return list(_candidates(text))
    step = MAX_SCAN_CHARS - 2 * SCAN_OVERLAP_CHARS
    candidates = []
    for owned in range(0, len(text), step):
        start = max(owned - SCAN_OVERLAP_CHARS, 0)
        for c in _candidates(text[start : owned + step + SCAN_OVERLAP_CHARS]):
            if owned <= c.start + start < owned + step:
                shifted = _Candidate(c.type, c.start + start, c.end + start, c.score, c.priority)
                candidates.append(shifted)
    return candidates


def _candidates(text: str) -> Iterator[_Candidate]:
    # most streamed windows have no digit: skip the detectors that need one
    has_digits = _DIGIT.search(text) is not None
    for detector in DETECTORS:
        if has_digits or detector not in DIGIT_DETECTORS:
            yield from detector(text)


def _without_overlaps(candidates: list[_Candidate], length: int) -> list[_Candidate]:
    # linear: a candidate is kept when none of its characters is taken yet (each detector's
    # candidates do not overlap one another, so all of them span a few times the text)
    taken = bytearray(length)
    kept = []
    for c in sorted(candidates, key=lambda c: (-c.priority, -(c.end - c.start), c.start)):
        if taken.find(1, c.start, c.end) < 0:
            taken[c.start : c.end] = b"\x01" * (c.end - c.start)
            kept.append(c)
    return sorted(kept, key=lambda c: c.start)


# --- detectors: each yields validated candidates over the normalized text -------------------
# Each pattern starts a match only where a run of the characters it matches begins (its
# lookbehind excludes them) or at a literal, and bounds what one attempt scans: a position costs
# O(1), a run start at most one pass over its run.

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,126}[A-Za-z]{2,24}(?![\w-])"
)


def _emails(text: str) -> Iterator[_Candidate]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        if ".." not in m.group():
            yield _Candidate("EMAIL", m.start(), m.end(), 1.0, 6)


# 13-19 digits in groups separated by a space, two spaces, a dash or a dot (mixed allowed),
# starting where a run of digit groups starts
_CARD = re.compile(r"(?<![\w.-])(?<!\d )(?<!\d  )\d(?:(?:[ .-]| {2})?\d){12,18}(?![\w-]|[ .-]\d)")


def _cards(text: str) -> Iterator[_Candidate]:
    for m in _CARD.finditer(text):
        if validators.is_credit_card(m.group()):
            yield _Candidate("CREDIT_CARD", m.start(), m.end(), 1.0, 5)


_IBAN = re.compile(r"(?<![\w-])[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){11,30}")
# the rest of an IBAN of each length after its first four characters, separators skipped
_IBAN_REST = {
    n: re.compile(rf"(?:[ -]?[A-Za-z0-9]){{{n - 4}}}")
    for n in set(validators.IBAN_LENGTHS.values())
}


def _ibans(text: str) -> Iterator[_Candidate]:
    # not finditer: a greedy match may run into the next IBAN, so resume right after each hit
    position = 0
    while m := _IBAN.search(text, position):
        position = m.start() + 1
        length = validators.IBAN_LENGTHS.get(m.group()[:2].upper())
        rest = length and _IBAN_REST[length].match(text, m.start() + 4, m.end())
        if not rest:
            continue
        end = rest.end()
        compact = text[m.start() : end].replace(" ", "").replace("-", "").upper()
        followed_by_word = end < len(text) and (text[end].isalnum() or text[end] == "_")
        if not followed_by_word and validators.is_iban(compact):
            position = end
            yield _Candidate("IBAN", m.start(), end, 1.0, 5)


_KR_RRN = re.compile(r"(?<![\w-])\d{6}[ -]?[1-8]\d{6}(?![\w-])")


def _kr_rrns(text: str) -> Iterator[_Candidate]:
    for m in _KR_RRN.finditer(text):
        if validators.is_kr_rrn(m.group()):
            yield _Candidate("KR_RRN", m.start(), m.end(), 1.0, 5)


# separators required: bare 9-digit runs are order numbers far more often
_US_SSN = re.compile(r"(?<![\w.-])\d{3}[- .]\d{2}[- .]\d{4}(?![\w-]|[- .]\d)")


def _us_ssns(text: str) -> Iterator[_Candidate]:
    for m in _US_SSN.finditer(text):
        if validators.is_us_ssn(m.group()):
            yield _Candidate("US_SSN", m.start(), m.end(), 0.85, 4)


def _phones(text: str) -> Iterator[_Candidate]:
    for start, end in phone_spans(text):
        yield _Candidate("PHONE", start, end, 0.9, 3)


_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?=[0-9A-Fa-f:]{0,44}\d)(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})(?![\w:]|\.\d)"  # may end in a dotted IPv4
)
_VERSION_CONTEXT = re.compile(r"\b(?:v|version|ver\.?|release|build)\s*$", re.IGNORECASE)


def _ip_addresses(text: str) -> Iterator[_Candidate]:
    for m in _IPV4.finditer(text):
        before = text[max(0, m.start() - 12) : m.start()]
        if validators.is_ip_address(m.group()) and not _VERSION_CONTEXT.search(before):
            yield _Candidate("IP_ADDRESS", m.start(), m.end(), 0.9, 4)
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6.finditer(text):
            if validators.is_ip_address(m.group()):
                yield _Candidate("IP_ADDRESS", m.start(), m.end(), 0.9, 4)


# Known credential shapes (gitleaks / detect-secrets rules), then generic high-entropy tokens.
# A key block's body stops at the first "-----": a run of headers without footers costs one
# pass, not one pass per header (the ".*?" this replaces was quadratic).
_SECRET_SHAPES = re.compile(
    r"-----BEGIN (?:[A-Z]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----"
    rf"(?:[^-]|-(?!----)){{0,{MAX_PII_CHARS - 256}}}+"
    r"-----END (?:[A-Z]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----"
    r"|(?<![\w-])(?:"
    r"(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}"  # GitHub
    r"|sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,4096}"  # OpenAI / Anthropic
    r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,4096}"  # Stripe
    r"|xox[abprs]-[A-Za-z0-9-]{10,4096}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|glpat-[A-Za-z0-9_-]{20}"  # GitLab
    r"|hf_[A-Za-z0-9]{30,4096}"  # Hugging Face
    r"|eyJ[A-Za-z0-9_-]{8,4096}\.eyJ[A-Za-z0-9_-]{8,4096}\.[A-Za-z0-9_-]{8,4096}"  # JWT
    r")(?![\w-])"
)
_ASSIGNED_SECRET = re.compile(
    r"(?i:\b(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|password|passwd|token)"
    r"[\"']?\s{0,64}[:=]\s{0,64}[\"']?)([^\s\"',;]{8,4096})"
)
_TOKEN = re.compile(r"(?<![\w+/=-])[A-Za-z0-9+/_=-]{24,4096}(?![\w+/=-])")


def _secrets(text: str) -> Iterator[_Candidate]:
    for m in _SECRET_SHAPES.finditer(text):
        yield _Candidate("SECRET", m.start(), m.end(), 0.95, 7)
    for m in _ASSIGNED_SECRET.finditer(text):
        yield _Candidate("SECRET", m.start(1), m.end(1), 0.8, 1)
    for m in _TOKEN.finditer(text):
        if _looks_random(m.group()):
            yield _Candidate("SECRET", m.start(), m.end(), 0.7, 1)


def _looks_random(token: str) -> bool:
    """A token of mixed letters and digits with the entropy of a random key. Hex digests
    (git SHAs, checksums) and words_joined_by_underscores are not reported."""
    has_upper = any(c.isupper() for c in token)
    has_lower = any(c.islower() for c in token)
    digits = sum(c.isdigit() for c in token)
    if not (has_upper and has_lower and digits >= 2):
        return False
    return validators.shannon_entropy(token) >= 4.0


def _kr_addresses(text: str) -> Iterator[_Candidate]:
    for start, end, score in kr_address_spans(text):
        yield _Candidate("KR_ADDRESS", start, end, score, 2)


def _kr_names(text: str) -> Iterator[_Candidate]:
    for start, end, score in kr_name_spans(text):
        yield _Candidate("KR_NAME", start, end, score, 1)


DETECTORS: tuple[Callable[[str], Iterator[_Candidate]], ...] = (
    _secrets, _emails, _cards, _ibans, _kr_rrns, _us_ssns, _phones, _ip_addresses,
    _kr_addresses, _kr_names,
)  # fmt: skip
DIGIT_DETECTORS = frozenset(
    (_cards, _ibans, _kr_rrns, _us_ssns, _phones, _ip_addresses, _kr_addresses)
)
"""The detectors that find nothing in a text without a digit."""
_DIGIT = re.compile(r"\d")
