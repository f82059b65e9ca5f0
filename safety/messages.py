"""A PII value split across the messages of one conversation: ``detect_messages(texts)``.

"4111 1111" at the end of one message and "1111 1111" at the start of the next reach the model,
the request log and an export as one card number, yet ``detect`` sees neither half as one.
So the messages are also joined, and every value found across a join is split back into its
part in each message. Only the text within ``SCAN_OVERLAP_CHARS`` of a join is scanned again
(a value is shorter than that), so this costs little more than ``detect`` on each message.
"""

import bisect
from collections.abc import Iterator, Sequence

from llmloop.safety.pii import SCAN_OVERLAP_CHARS, Finding, detect

MESSAGE_JOINERS: tuple[str, ...] = ("", " ")
"""How adjacent messages are joined: as written ("john.doe@exa" + "mple.com"), and with a
space ("536-22" + "1234" reads "536-22 1234", an SSN)."""


def detect_messages(texts: Sequence[str]) -> list[list[Finding]]:
    """``detect`` for each text of one conversation, plus every value split across adjacent
    texts ("4111 1111" in one message, "1111 1111" in the next): its part in each text is a
    finding of that text, merged with any finding it overlaps there."""
    found = [detect(text) for text in texts]
    if len(texts) < 2:
        return found
    for joiner in MESSAGE_JOINERS:
        joined = joiner.join(texts)
        starts, position = [], 0  # where each text starts in joined
        for text in texts:
            starts.append(position)
            position += len(text) + len(joiner)
        for lo, hi in _around(starts[1:], len(joined)):
            for f in detect(joined[lo:hi]):
                first = bisect.bisect_right(starts, f.start + lo) - 1
                last = bisect.bisect_right(starts, f.end + lo - 1) - 1
                if first != last:  # else inside one message: found above
                    _add_split(found, texts, starts, first, last, f, lo)
    return found


def _around(boundaries: list[int], length: int) -> Iterator[tuple[int, int]]:
    """The stretches of the joined text within ``SCAN_OVERLAP_CHARS`` of a boundary, merged:
    a value across a boundary lies whole inside one, with its context."""
    lo = hi = None
    for b in boundaries:
        if hi is not None and b - SCAN_OVERLAP_CHARS <= hi:
            hi = min(b + SCAN_OVERLAP_CHARS, length)
            continue
        if hi is not None:
            yield lo, hi
        lo, hi = max(b - SCAN_OVERLAP_CHARS, 0), min(b + SCAN_OVERLAP_CHARS, length)
    if hi is not None:
        yield lo, hi


def _add_split(
    found: list[list[Finding]], texts: Sequence[str], starts: list[int], first: int, last: int,
    f: Finding, offset: int,
) -> None:  # fmt: skip
    """Add the parts of ``f`` (offsets into the joined text less ``offset``) to each text's
    findings, unless it is a value whole in one text run on into the next ("a@b.co" +
    "thanks" reads "a@b.cothanks"): then its type already covers its part there."""
    parts = {}  # text index -> the value's part in it
    for i in range(first, last + 1):
        start = max(f.start + offset - starts[i], 0)
        end = min(f.end + offset - starts[i], len(texts[i]))
        if start < end:
            parts[i] = Finding(f.type, start, end, texts[i][start:end], f.score)
    if not any(_covers(found[i], part) for i, part in parts.items()):
        for i, part in parts.items():
            found[i] = _merged(found[i], part, texts[i])


def _covers(findings: list[Finding], part: Finding) -> bool:
    return any(
        f.type == part.type and f.start <= part.start and part.end <= f.end for f in findings
    )


def _merged(findings: list[Finding], part: Finding, text: str) -> list[Finding]:
    """``findings`` (sorted, non-overlapping) with ``part`` added: a finding it overlaps is
    absorbed into one span of ``part``'s type, so that everything either covered stays covered."""
    keys = [f.start for f in findings]
    lo = max(bisect.bisect_right(keys, part.start) - 1, 0)
    hi = bisect.bisect_left(keys, part.end)
    overlapping = [f for f in findings[lo:hi] if f.start < part.end and part.start < f.end]
    if any(f.start <= part.start and part.end <= f.end for f in overlapping):
        return findings
    start = min([part.start, *(f.start for f in overlapping)])
    end = max([part.end, *(f.end for f in overlapping)])
    merged = Finding(part.type, start, end, text[start:end], part.score)
    rest = [f for f in findings if f not in overlapping]
    return sorted([*rest, merged], key=lambda f: f.start)
