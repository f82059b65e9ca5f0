"""The start of a PII value cut off at the end of an answer: ``trailing_partial(text)``.

An answer stopped by ``max_tokens`` or a stop string can end inside a value (``4111 1111 1111 ``,
``john.smith@``) that ``detect`` cannot report, since it is not whole yet; stepping ``max_tokens``
would then reveal a card number digit by digit. So at the end of an answer (and only there) the
guard also hides a trailing fragment shaped like the beginning of a value:

- a run of digits and separators (`` .-()+/``) holding 4 or more digits, unless it is a year or
  an ISO date (``2024``, ``2024-05-01``): card, phone, SSN, KR RRN and IP address prefixes;
- a local part and ``@`` with at most an unfinished domain: ``john.smith@``, ``john@exam``;
- the country code and check digits of a known IBAN country, and any groups after them;
- a key prefix (``sk-``, ``AKIA``, ``ghp_``, ``hf_``, ``xoxb-``, ``AIza``, ``eyJ``, ...), or an
  unterminated private-key block.

Bounds: 1 to 3 trailing digits stay (``step 3``, ``Room 12 of 40``: a card leaks at most its
first 3 digits), and so do years and dates; an answer ending in a plain number of 4 or more
digits (``it costs 12500``) loses that number, the false positive accepted for this. Only the last
``TAIL_CHARS`` characters are searched (and one ``rfind`` for a key block): linear time.
"""

import re
from dataclasses import dataclass

from llmloop.safety.normalize import normalize
from llmloop.safety.pii import Finding
from llmloop.safety.validators import IBAN_LENGTHS

PARTIAL_TYPE = "PARTIAL_PII"
"""The ``Finding.type`` of a fragment: its placeholder reads ``<PARTIAL_PII_1>``."""
TAIL_CHARS = 128  # longer than any PII value's prefix worth hiding (an email is at most 254)
MIN_DIGITS = 4


@dataclass(frozen=True)
class Partial:
    finding: Finding
    """The fragment, typed ``PARTIAL_PII``, with offsets into the caller's text."""
    types: tuple[str, ...]
    """The PII types it may be the start of: hidden unless the policy allows all of them."""


def trailing_partial(text: str, after: int = 0) -> Partial | None:
    """The fragment at the very end of ``text`` that may be the start of a PII value, if any;
    it begins at or after ``after`` (the end of the last whole value found)."""
    key = text.rfind("-----BEGIN", after)  # a key block may be longer than the tail
    if key >= 0 and "-----END" not in text[key:] and _PRIVATE_KEY_START.match(text, key):
        return Partial(Finding(PARTIAL_TYPE, key, len(text), text[key:], 0.5), ("SECRET",))
    start = max(after, len(text) - TAIL_CHARS)
    tail = normalize(text[start:])
    best = None
    for types, match in _candidates(tail.text):
        if best is None or match.start() < best[1].start():
            best = (types, match)
    if best is None:
        return None
    types, match = best
    begin, end = tail.span(match.start(), match.end())
    begin, end = begin + start, end + start
    return Partial(Finding(PARTIAL_TYPE, begin, end, text[begin:end], 0.5), types)


_DIGITS = re.compile(r"(?<![\w.])[+(]?\d[\d .()/+-]*\Z")
_YEAR_OR_DATE = re.compile(
    r"(?:19|20)\d\d(?:[-./](?:0?[1-9]|1[0-2])(?:[-./](?:0?[1-9]|[12]\d|3[01]))?)?"
)
_EMAIL_START = re.compile(r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9.-]*\Z")
_IBAN_START = re.compile(r"(?<![\w-])([A-Za-z]{2})\d{2}(?:[ -]?[A-Za-z0-9]){0,30}[ -]?\Z")
_KEY_START = re.compile(
    r"(?<![\w-])(?:sk-|(?:sk|pk|rk)_|AKIA|(?:ASIA|AGPA|AIDA|AROA)(?=[0-9A-Z]*\d)"
    r"|gh[pousr]_|github_pat_|xox[abprs]-|AIza|glpat-|hf_|eyJ)[\w-]*\Z"
)
_PRIVATE_KEY_START = re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY")
_DIGIT_TYPES = ("CREDIT_CARD", "PHONE", "US_SSN", "KR_RRN", "IP_ADDRESS")


def _candidates(tail: str):
    """(possible types, match) of every fragment shape that ends ``tail``."""
    if (m := _DIGITS.search(tail)) and _is_digit_prefix(m.group()):
        yield _DIGIT_TYPES, m
    if "@" in tail and (m := _EMAIL_START.search(tail)):
        yield ("EMAIL",), m
    if (m := _IBAN_START.search(tail)) and m.group(1).upper() in IBAN_LENGTHS:
        yield ("IBAN",), m
    if m := _KEY_START.search(tail):
        yield ("SECRET",), m


def _is_digit_prefix(run: str) -> bool:
    if sum(ch.isdigit() for ch in run) < MIN_DIGITS:
        return False
    return not _YEAR_OR_DATE.fullmatch(run.rstrip(" ./-"))
