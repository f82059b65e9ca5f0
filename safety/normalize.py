"""Undo the unicode tricks that hide PII from patterns, keeping a map back to the original text.

Invisible characters disappear: every Default_Ignorable code point and format character
(zero-width spaces and joiners, direction marks, the soft hyphen, the combining grapheme
joiner, variation selectors, tag characters, Hangul fillers), and so do combining marks on an
ASCII character (``4̶1̶1̶1̶``). Full-width and other non-ASCII digits become ASCII digits,
compatibility forms (full-width ``＠``, ``．``, ``①``, mathematical letters) fold under NFKC,
dashes become ``-``, ideographic and middle dots ``.``, unusual spaces `` ``. Detectors run on
the normalized text; every span is mapped back, so offsets always point into the text the
caller passed, and a span covers the invisible characters inside the value too.

Linear time: ASCII text is returned as it is; each distinct character is folded once; a text
whose characters all fold one for one goes through ``str.translate``; otherwise ASCII stretches
are copied as slices, the rest is folded character by character, and the offset map gets one
entry per character that folds to nothing or to several characters.
"""

import bisect
import functools
import re
import unicodedata
from dataclasses import dataclass

# Default_Ignorable_Code_Point (Unicode 14, DerivedCoreProperties.txt) and the format
# characters (category Cf) outside it; the tag characters are U+E0000-U+E007F.
_INVISIBLE_CLASS = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb"
    "\u0600-\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd\U00013430-\U00013438"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
)
INVISIBLE = re.compile(f"[{_INVISIBLE_CLASS}]")
TAG_CHARACTERS = re.compile("[\U000e0020-\U000e007e]")
"""Tag characters that mirror printable ASCII: invisible, yet a model reads them as text."""
DASHES = frozenset(
    "\u058a\u05be\u1400\u1806\u2010\u2011\u2012\u2013\u2014\u2015\u2e17\u2e1a\u2e3a\u2e3b"
    "\u2e40\u2e5d\u301c\u3030\u30a0\ufe31\ufe32\ufe58\ufe63\uff0d\U00010ead"  # category Pd
    "\u2212\u2043\u02d7"  # minus sign, hyphen bullet, modifier minus
)
DOTS = frozenset(
    "\u3002\uff61"  # ideographic full stops: IDNA reads them as the dot between labels
    "\u00b7\u2027\u30fb\uff65\u2219\u22c5"  # middle dots, used between digit groups
)
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_MARKS = frozenset(("Mn", "Me"))


@dataclass(frozen=True)
class NormalizedText:
    text: str
    """The normalized text the detectors see."""
    pieces: "OffsetMap | None" = None
    """Where each character of ``text`` came from; None when the text was plain ASCII."""

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Map a ``[start, end)`` span of ``text`` to a span of the original text."""
        if self.pieces is None:
            return start, end
        # the span ends right after the original character its last character came from
        return self.pieces.original(start), self.pieces.original(end - 1) + 1


class OffsetMap:
    """Pieces of the normalized text: an unchanged stretch (character k of it came from
    ``origin + k``) or the folding of one original character into several (all came from
    ``origin``). One-for-one folds (full-width to ASCII) stay inside a stretch."""

    def __init__(self) -> None:
        self._starts, self._origins, self._stretches = [0], [0], [True]

    def fold(self, start: int, origin: int, length: int) -> None:
        """The original character at ``origin`` became ``length`` characters at ``start``
        (not one: those need no entry)."""
        if length > 1:
            self._add(start, origin, False)
        self._add(start + length, origin + 1, True)

    def original(self, index: int) -> int:
        i = bisect.bisect_right(self._starts, index) - 1
        offset = index - self._starts[i] if self._stretches[i] else 0
        return self._origins[i] + offset

    def _add(self, start: int, origin: int, stretch: bool) -> None:
        if self._starts[-1] == start:  # the last piece came out empty: replace it
            del self._starts[-1], self._origins[-1], self._stretches[-1]
        self._starts.append(start)
        self._origins.append(origin)
        self._stretches.append(stretch)


def normalize(text: str, decode_tags: bool = False) -> NormalizedText:
    """The normalized form of ``text`` and its offset map (cheap for plain ASCII).

    ``decode_tags``: read tag characters as the ASCII they mirror instead of dropping them, to
    find a value written in them (``detect`` scans both ways when a text holds any)."""
    if text.isascii():
        return NormalizedText(text)
    folds = {ch: _fold(ch, decode_tags) for ch in set(text) if not ch.isascii()}
    marks = frozenset(ch for ch in folds if unicodedata.category(ch) in _MARKS)
    if not marks and all(len(folded) == 1 for folded in folds.values()):
        # one character for one (full-width forms, digits, dashes, or nothing to fold): the
        # offsets stay as they are, and str.translate folds at C speed
        return NormalizedText(text.translate({ord(c): f for c, f in folds.items() if f != c}))
    out: list[str] = []
    pieces = OffsetMap()
    length = copied = 0  # length == len("".join(out)); text[:copied] is in out
    for run in _NON_ASCII.finditer(text):
        out.append(text[copied : run.start()])
        length += run.start() - copied
        after_ascii = run.start() > 0  # the character before a non-ASCII run is ASCII
        for i in range(run.start(), run.end()):
            ch = text[i]
            # a mark on an ASCII character only hides it from the patterns
            folded = "" if after_ascii and ch in marks else folds[ch]
            out.append(folded)
            if len(folded) != 1:
                pieces.fold(length, i, len(folded))
            length += len(folded)
            if folded:
                after_ascii = folded[-1].isascii()
        copied = run.end()
    out.append(text[copied:])
    return NormalizedText("".join(out), pieces)


@functools.lru_cache(maxsize=8192)  # Korean text folds thousands of distinct syllables, each often
def _fold(ch: str, decode_tags: bool) -> str:
    if decode_tags and TAG_CHARACTERS.match(ch):
        return chr(ord(ch) - 0xE0000)
    if INVISIBLE.match(ch):
        return ""
    simple = _fold_simple(ch)
    if simple != ch:
        return simple
    # NFKC may give a dash or dot of another kind (U+FE58 is an em dash): fold those too
    return "".join(map(_fold_simple, unicodedata.normalize("NFKC", ch)))


def _fold_simple(ch: str) -> str:
    if ch in DASHES:
        return "-"
    if ch in DOTS:
        return "."
    if ch.isspace():
        return " "
    if ch.isdigit() and not ch.isascii():
        digit = unicodedata.digit(ch, None)
        if digit is not None:
            return str(digit)
    return ch
