"""PII detection: patterns find candidates, validators decide, offsets point into the caller's text.

``detect(text)`` normalizes unicode tricks away (see ``normalize``), runs every detector on the
normalized text, keeps the validated candidates, resolves overlaps (the more specific type wins:
a card number is not also reported as a phone number) and maps spans back to the original text.
"""

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import phonenumbers

from llmloop.safety import validators
from llmloop.safety.normalize import normalize

PII_TYPES: tuple[str, ...] = (
    "EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "KR_RRN", "IP_ADDRESS", "SECRET",
)  # fmt: skip
"""Every type ``detect`` reports, in the order policies and reports list them."""


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
    normalized = normalize(text)
    candidates = [c for detector in DETECTORS for c in detector(normalized.text)]
    findings = []
    for candidate in _without_overlaps(candidates):
        start, end = normalized.span(candidate.start, candidate.end)
        findings.append(Finding(candidate.type, start, end, text[start:end], candidate.score))
    return findings


@dataclass(frozen=True)
class _Candidate:
    type: str
    start: int
    end: int
    score: float
    priority: int  # higher wins an overlap (a dotted IP beats a phone), then the longer span


def _without_overlaps(candidates: list[_Candidate]) -> list[_Candidate]:
    kept: list[_Candidate] = []
    for c in sorted(candidates, key=lambda c: (-c.priority, -(c.end - c.start), c.start)):
        if all(c.end <= k.start or c.start >= k.end for k in kept):
            kept.append(c)
    return sorted(kept, key=lambda c: c.start)


# --- detectors: each yields validated candidates over the normalized text -------------------

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)


def _emails(text: str) -> Iterator[_Candidate]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        if ".." not in m.group():
            yield _Candidate("EMAIL", m.start(), m.end(), 1.0, 6)


# 13-19 digits in groups separated by a space, two spaces, a dash or a dot (mixed allowed)
_CARD = re.compile(r"(?<![\w.-])\d(?:(?:[ .-]| {2})?\d){12,18}(?![\w-]|[ .-]\d)")


def _cards(text: str) -> Iterator[_Candidate]:
    for m in _CARD.finditer(text):
        if validators.is_credit_card(m.group()):
            yield _Candidate("CREDIT_CARD", m.start(), m.end(), 1.0, 5)


_IBAN = re.compile(r"(?<![\w-])[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){11,30}")


def _ibans(text: str) -> Iterator[_Candidate]:
    # not finditer: a greedy match may run into the next IBAN, so resume right after each hit
    position = 0
    while m := _IBAN.search(text, position):
        position = m.start() + 1
        length = validators.IBAN_LENGTHS.get(m.group()[:2].upper())
        if length is None:
            continue
        end, count = m.start(), 0  # walk to the country's IBAN length, skipping separators
        while count < length and end < m.end():
            count += text[end] not in " -"
            end += 1
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


_MIN_PHONE_DIGITS = re.compile(r"(?:\d\D{0,3}){7}")
_DATE_LIKE = re.compile(r"(?:19|20)\d\d[-./](?:0?[1-9]|1[0-2])[-./]")  # 2023-11-0042: a lot number
PHONE_REGIONS: tuple[str, ...] = ("US", "KR")
"""Regions whose national formats are recognised; ``+CC`` international numbers always are."""


def _phones(text: str) -> Iterator[_Candidate]:
    if not _MIN_PHONE_DIGITS.search(text):
        return  # phonenumbers is slow; most texts have no 7-digit run at all
    for region in PHONE_REGIONS:
        for m in phonenumbers.PhoneNumberMatcher(text, region, phonenumbers.Leniency.VALID):
            if _DATE_LIKE.match(m.raw_string):
                continue
            yield _Candidate("PHONE", m.start, m.end, 0.9, 3)


_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?=[0-9A-Fa-f:]*\d)(?:[0-9A-Fa-f]{0,4}:){2,7}"
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
_SECRET_SHAPES = re.compile(
    r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY(?: BLOCK)?-----.*?-----END (?:[A-Z]+ )*PRIVATE KEY(?: BLOCK)?-----"
    r"|(?<![\w])(?:"
    r"(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}"  # GitHub
    r"|sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI / Anthropic
    r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|glpat-[A-Za-z0-9_-]{20}"  # GitLab
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWT
    r")(?![\w-])",
    re.DOTALL,
)
_ASSIGNED_SECRET = re.compile(
    r"(?i:\b(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|password|passwd|token)"
    r"[\"']?\s*[:=]\s*[\"']?)([^\s\"',;]{8,})"
)
_TOKEN = re.compile(r"(?<![\w+/=-])[A-Za-z0-9+/_=-]{24,}(?![\w+/=-])")


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


DETECTORS: tuple[Callable[[str], Iterator[_Candidate]], ...] = (
    _secrets, _emails, _cards, _ibans, _kr_rrns, _us_ssns, _phones, _ip_addresses,
)  # fmt: skip
