"""Redaction operators: mask, typed placeholder (stable within a conversation), hash.

One ``Redactor`` per conversation: the same value gets the same placeholder every time it
appears (``<EMAIL_1>`` in the prompt and in the answer), so a model can still refer to it.
"""

import hashlib
import re
from typing import Literal

from llmloop.safety.normalize import normalize
from llmloop.safety.pii import Finding

Operator = Literal["mask", "placeholder", "hash"]
OPERATORS: tuple[str, ...] = ("mask", "placeholder", "hash")
MASK_CHAR = "*"


class Redactor:
    """Replaces findings in text; remembers the placeholders it handed out."""

    def __init__(self, operator: Operator = "placeholder", salt: str = ""):
        """``salt`` is mixed into ``hash`` digests: without one, a short value such as a phone
        number can be recovered from its digest by trying every number."""
        if operator not in OPERATORS:
            raise ValueError(f"operator must be one of {', '.join(OPERATORS)}, not {operator!r}")
        self.operator = operator
        self.salt = salt
        self._placeholders: dict[tuple[str, str], str] = {}  # (type, value) -> "<TYPE_n>"
        self._counts: dict[str, int] = {}

    def redact(self, text: str, findings: list[Finding]) -> str:
        """``text`` with every finding's span replaced; findings must not overlap."""
        pieces, last = [], 0
        for finding in sorted(findings, key=lambda f: f.start):
            pieces.append(text[last : finding.start])
            pieces.append(self.replacement(finding))
            last = finding.end
        pieces.append(text[last:])
        return "".join(pieces)

    def replacement(self, finding: Finding) -> str:
        if self.operator == "mask":
            # keep separators so the shape stays readable (***-**-****), but not the invisible
            # or tag characters inside the value: tag characters can spell it out
            value = normalize(finding.text, decode_tags=True).text
            return "".join(MASK_CHAR if ch.isalnum() else ch for ch in value)
        if self.operator == "hash":
            digest = hashlib.sha256((self.salt + _canonical(finding.text)).encode()).hexdigest()[
                :12
            ]
            return f"<{finding.type}:{digest}>"
        key = (finding.type, _canonical(finding.text))
        if key not in self._placeholders:
            self._counts[finding.type] = self._counts.get(finding.type, 0) + 1
            self._placeholders[key] = f"<{finding.type}_{self._counts[finding.type]}>"
        return self._placeholders[key]


def _canonical(value: str) -> str:
    """The same value written differently (spacing, case, full-width digits, invisible
    characters inside) is one value; one written in tag characters only is read from them."""
    canonical = _NOT_CANONICAL.sub("", normalize(value).text.lower())
    return canonical or _NOT_CANONICAL.sub("", normalize(value, decode_tags=True).text.lower())


_NOT_CANONICAL = re.compile(r"[^\w@.+:]|_")  # what a value may be written with or without
