"""Undo the unicode tricks that hide PII from patterns, keeping a map back to the original text.

Full-width and other non-ASCII digits become ASCII digits, compatibility forms (full-width ``＠``,
``．``) fold under NFKC, unicode dashes become ``-``, unusual spaces become `` `` and zero-width
characters disappear. Detectors run on the normalized text; every span is mapped back so
offsets always point into the text the caller passed.
"""

import unicodedata
from dataclasses import dataclass

ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e")
DASHES = frozenset("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d")


@dataclass(frozen=True)
class NormalizedText:
    text: str
    """The normalized text the detectors see."""
    starts: list[int] | None
    """For each character of ``text``, the index of the original character it came from;
    None when the text was already plain ASCII (the identity map)."""

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Map a ``[start, end)`` span of ``text`` to a span of the original text."""
        if self.starts is None:
            return start, end
        # the span ends right after the original character its last character came from
        return self.starts[start], self.starts[end - 1] + 1


def normalize(text: str) -> NormalizedText:
    """The normalized form of ``text`` and its offset map (cheap for plain ASCII)."""
    if text.isascii():
        return NormalizedText(text, None)
    chars: list[str] = []
    starts: list[int] = []
    for i, ch in enumerate(text):
        folded = _fold(ch)
        chars.append(folded)
        starts.extend([i] * len(folded))
    return NormalizedText("".join(chars), starts)


def _fold(ch: str) -> str:
    if ch.isascii():
        return ch
    if ch in ZERO_WIDTH:
        return ""
    if ch in DASHES:
        return "-"
    if ch.isspace():
        return " "
    if ch.isdigit():
        digit = unicodedata.digit(ch, None)
        if digit is not None:
            return str(digit)
    return unicodedata.normalize("NFKC", ch)
