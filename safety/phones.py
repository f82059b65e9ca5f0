"""Phone numbers: ``phonenumbers``' matcher, run only on the stretches where a number can be.

The matcher parses every candidate it finds, and every part of a candidate that does not parse
whole: about 10 µs per character of digit-heavy text, and it gives up after 65,535 failed
candidates, so a long enough prefix of junk hid every number after it. So it is not run over
whole texts. A linear regex finds the runs of digits and phone punctuation that hold at least
``MIN_DIGITS`` digits; a stretch of a run goes to the matcher (with the few characters around
it that the matcher looks at) only when its digits could hold a valid number: the shape of a
national number of the region, an international dialling prefix, or a ``+``. ``"1 1 1 ..."``,
``"+82+82..."``, IPv4-like runs or a digit block longer than any number never reach it, and the
answers for the last 1024 stretches are kept (``"888 888 8888 " * N`` asks the same few
questions). Random digits that could hold a number anywhere still cost the matcher's time:
linear, about 9 s of CPU per MB.
"""

import functools
import re
from collections.abc import Iterator

import phonenumbers

PHONE_REGIONS: tuple[str, ...] = ("US", "KR")
"""Regions whose national formats are recognised; ``+CC`` international numbers always are."""
MIN_DIGITS = 7  # the fewest a number has with its country code (+683 4002, Niue)
_PUNCTUATION = r"[ \-x./~()\[\]]"  # the matcher's, as normalize() leaves it (ASCII)
# A digit block has at most 20 digits (a national number and its country code); a longer one
# is no phone number and ends the run. Possessive: a run is maximal, and a giant one is not
# backtracked through.
_RUN = re.compile(
    rf"(?:(?:[+(\[]{_PUNCTUATION}{{0,4}}){{1,2}}|(?<!\d))(?=\d(?:{_PUNCTUATION}{{0,4}}\d){{6}})"
    rf"\d{{1,20}}(?!\d)(?:{_PUNCTUATION}{{0,4}}\d{{1,20}}(?!\d))*+"
)
_NON_DIGITS = re.compile(r"\D+")
_DATE_LIKE = re.compile(r"(?:19|20)\d\d[-./](?:0?[1-9]|1[0-2])[-./]")  # 2023-11-0042: a lot number
GATE_CHARS = 64  # a long run is gated in stretches of this many chars, half overlapping
MATCH_CHARS = 1024  # the most the matcher sees at once: its candidate budget stays unused
CONTEXT_CHARS = 16  # after a stretch: an extension ("ext. 12"), a time stamp's ":30"


def phone_spans(text: str) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of every valid phone number in ``text`` (normalized), possibly
    repeated or overlapping (one per region and stretch that finds it)."""
    for run in _RUN.finditer(text):
        for start, end, regions in _plausible_stretches(run.group()):
            start, end = run.start() + start, run.start() + end
            offset = max(0, start - 1)  # the character before: a letter there means no number
            window = text[offset : end + CONTEXT_CHARS]
            for region in regions:
                for m_start, m_end in _matches(window, start - offset, end - offset, region):
                    yield m_start + offset, m_end + offset


def _plausible_stretches(run: str) -> Iterator[tuple[int, int, tuple[str, ...]]]:
    """Stretches ``(start, end, regions)`` of ``run`` that could hold a number of ``regions``:
    the whole run when it is short, else the merged 64-char windows that could."""
    if len(run) <= GATE_CHARS:
        if regions := _plausible_regions(run):
            yield 0, len(run), regions
        return
    stretch: list = []  # [start, end, regions] being merged
    for start in range(0, len(run) - GATE_CHARS // 2, GATE_CHARS // 2):
        end = min(start + GATE_CHARS, len(run))
        regions = _plausible_regions(run[start:end])
        if stretch and regions and start < stretch[1] and end - stretch[0] <= MATCH_CHARS:
            stretch[1] = end
            stretch[2] = tuple(dict.fromkeys(stretch[2] + regions))
            continue
        if stretch:
            yield tuple(stretch)
        stretch = [start, end, regions] if regions else []
    if stretch:
        yield tuple(stretch)


def _plausible_regions(stretch: str) -> tuple[str, ...]:
    digits = _NON_DIGITS.sub("", stretch)
    if len(digits) < MIN_DIGITS:
        return ()
    if "+" in stretch:  # an international number: any region's matcher parses it
        return PHONE_REGIONS
    return tuple(r for r in PHONE_REGIONS if r not in NATIONAL or NATIONAL[r].search(digits))


NATIONAL: dict[str, re.Pattern] = {
    # a NANP number (area code and exchange start with 2-9), a 7-digit 310 number, or the
    # international prefix 011
    "US": re.compile(r"[2-9]\d\d[2-9]\d{6}|310\d{4}|011"),
    # the trunk prefix 0 (or the international prefix 00x) before a national number, the
    # country code 82 without its +, or a 15xx/16xx/18xx number (the only ones written
    # without the 0: every other format requires it, and the matcher checks that)
    "KR": re.compile(r"0[1-9]\d{6}|82[1-9]\d{6}|1[5-8]\d{6}"),
}
"""Per region, what the digits of a stretch (separators removed) must contain somewhere for
the matcher to find a valid national number there: a necessary condition, cheap to test. A
region without an entry sends every stretch of ``MIN_DIGITS`` digits to the matcher (slower,
never wrong). ``tests/safety/test_phones.py`` checks the conditions against the matcher."""


@functools.lru_cache(maxsize=1024)
def _matches(window: str, start: int, end: int, region: str) -> tuple[tuple[int, int], ...]:
    """The matcher's numbers in ``window`` that overlap its stretch ``[start, end)`` (the rest
    is context: an extension, a time stamp's ":30"). Cached: ``"888 888 8888 " * N``, or a
    stream of it, asks the same few questions again and again."""
    return tuple(
        (m.start, m.end)
        for m in phonenumbers.PhoneNumberMatcher(window, region, phonenumbers.Leniency.VALID)
        if m.start < end and m.end > start and not _DATE_LIKE.match(m.raw_string)
    )
